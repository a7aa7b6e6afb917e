"""Records as users bring them: the raw schema, conversations, eval prompts, curation rules, quality."""
