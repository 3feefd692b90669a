"""Benchmarks: runners per backend, statistics, machine facts, and the run result."""
