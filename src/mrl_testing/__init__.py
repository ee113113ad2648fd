"""Helpers shared by the tests and the benchmarks (not shipped in the wheel): configs composed as the entry points
compose them, synthetic Matryoshka-like embeddings, straightforward reference implementations to compare against,
and W&B run records read back from disk."""
