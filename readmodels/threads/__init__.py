"""Thread previews (inbox, summaries, history): fold, rules, store, bulk loader, queries, scopes."""
