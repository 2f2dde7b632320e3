"""Benchmarks: `python -m jaxood.bench.<name>`."""
