"""params.yaml: its typed schema, loading and profiles."""
