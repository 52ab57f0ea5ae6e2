"""Benchmarks of the pipeline (`svoe bench ...`)."""
