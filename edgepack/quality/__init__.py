"""The quality gate: prompt sets, the source model's reference outputs, absolute checks that fail
degenerate text on its own, metrics against the reference, thresholds per precision class, the
verdict, and the artifact checks every backend judges its exported or quantized networks with. It
judges answers and figures; it knows nothing of benches or reports."""
