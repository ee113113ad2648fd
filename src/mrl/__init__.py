"""Matryoshka Representation Learning: nested embeddings whose every prefix is a usable representation."""

__version__ = "0.1.0"
