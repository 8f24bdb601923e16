"""Benchmarks: each prints its figures and, in the same run, the baseline it beats."""
