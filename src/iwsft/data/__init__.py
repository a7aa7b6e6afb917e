"""Records as users bring them, and what curation keeps of them.

  records        the raw schema: per-record checks, normalisation; the pipeline's JSON / JSONL files
  raw_files      reading a user's raw samples file (.jsonl / .parquet) against that schema
  conversation   plain text or TRL's message lists: the keys and texts the rules compare
  eval_prompts   the held-out prompts file
  curation       the curate stage's rules in order, with counts (rules, dedup, decontaminate)
  quality        percentile thresholds and multiplicities for the (Q) methods
"""
