"""Payments per thread: what a thread's participants were paid, per currency (docs/adding-a-read-model.md)."""
