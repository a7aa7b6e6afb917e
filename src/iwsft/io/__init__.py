"""Durable writes: every atomic text, JSON, JSONL and directory write."""
