"""Workflow and template lists: fold, store, queries, scopes."""
