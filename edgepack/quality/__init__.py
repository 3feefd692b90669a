"""The quality gate: prompt sets, the source model's reference outputs, metrics, thresholds per
precision class and the verdict. It judges answers; it knows nothing of benches or reports."""
