"""Generation, scoring, metrics and statistics."""
