"""The read models: one folder each, everything about one read model side by side (docs/architecture.md)."""
