"""Other formats: RAIVNLab/MRL checkpoints in; sentence-transformers models and ``torch.export`` programs out."""
