"""Training: the shared LightningModule base with the classifier and the contrastive model, optimizers and
schedules, callbacks, atomic checkpoint writing, the training procedure and crash-safe sweeps."""
