"""The read models' folds and storage (moving to readside.readmodels)."""
