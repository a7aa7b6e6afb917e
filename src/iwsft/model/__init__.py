"""Model files: loading, adapters, devices, hashing, GGUF import, the demo's tiny model."""
