"""Pure torch, no Lightning or Hydra: nesting lists, nested heads (MRL, MRL-E, FF, standard), Matryoshka losses
and per-size retrieval metrics."""
