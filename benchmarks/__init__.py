"""Ratio benchmarks (not run in CI by default): python -m benchmarks.<name>."""
