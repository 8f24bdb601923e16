"""Avatars given as ``data:`` URLs, kept for the threads and providers read models: decode, pick, store."""
