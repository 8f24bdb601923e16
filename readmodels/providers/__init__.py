"""Provider listings: fold, store, queries, scopes."""
