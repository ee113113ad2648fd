"""Post-hoc methods over frozen embeddings: CSR, the Matryoshka-Adaptor, truncation and PCA, trained on the
embeddings of a run or a stock model (computed once and cached) and evaluated like an MRL run."""
