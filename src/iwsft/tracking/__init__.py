"""MLflow: the store, runs, retries, the registry and promotion."""
