"""Evaluation of trained runs: per-size metrics computed into a result object, then rendered (Markdown, CSV,
plots, W&B); also the embedding of new inputs and the comparison of many runs."""
