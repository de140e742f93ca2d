"""Metric families, one per module; see bench.metrics.base for the interface."""
