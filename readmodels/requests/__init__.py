"""Support-desk requests (technician views): fold, views, store, queries, scopes."""
