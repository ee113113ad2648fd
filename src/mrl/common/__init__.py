"""Small jobs every layer needs, written once: atomic writes and the console, reading embeddings files, one-line
config errors, the packaged configs, W&B set-up and logging."""
