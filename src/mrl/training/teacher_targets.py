"""Distillation targets (``model.loss.distill``): the teacher's embedding of every training text, computed once at
the start of training (or read from its cache file) and looked up by the student's token ids at each step."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mrl.backbones.hf_text import HFTextEncoder
from mrl.training.contrastive_configs import DistillConfig

__all__ = ["TeacherTargets"]

TEACHER_BATCH = 64


class TeacherTargets:
    """The teacher's embedding of every training text, looked up by the student's token ids (the text as the
    student's collate tokenized it), computed once (or read from ``cache``)."""

    def __init__(self, config: DistillConfig, datamodule: Any, device: torch.device) -> None:
        tokenizer, max_length = datamodule.tokenizer, int(datamodule.max_length)
        texts = sorted({t for item in datamodule.split_items("train") for t in item if isinstance(t, str)})
        name = str(config.teacher)
        cached = self.read_cache(config.cache, texts, name)
        if cached is None:
            cached = self.embed_with_teacher(config, texts, max_length, device)
            if config.cache:
                Path(config.cache).parent.mkdir(parents=True, exist_ok=True)
                torch.save({"teacher": name, "texts": texts, "embeddings": cached}, config.cache)
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        self.index = {tuple(row): i for i, row in enumerate(ids)}
        self.embeddings = cached.to(device)

    @staticmethod
    def embed_with_teacher(config: DistillConfig, texts: list[str], max_length: int, device: torch.device):
        """The teacher's embeddings ``[N, D]`` (float32, on the CPU) of ``texts``."""
        teacher = HFTextEncoder(config.teacher, pooling=config.pooling, max_length=max_length).to(device).eval()
        with torch.no_grad():
            rows = [
                teacher(teacher.tokenize(texts[i : i + TEACHER_BATCH])).float().cpu()
                for i in range(0, len(texts), TEACHER_BATCH)
            ]
        return torch.cat(rows)

    @staticmethod
    def read_cache(path: str | None, texts: list[str], name: str) -> torch.Tensor | None:
        """The cached embeddings, or None when there is no cache file or it holds another teacher's or other
        texts' (they are computed again, and the file replaced)."""
        if not path or not os.path.exists(path):
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("teacher") != name or saved.get("texts") != texts:
            return None
        return saved["embeddings"]

    def __call__(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = features["input_ids"].tolist(), features["attention_mask"].bool().tolist()
        rows = []
        for row, keep in zip(ids, mask):
            key = tuple(t for t, k in zip(row, keep) if k)
            if key not in self.index:
                raise KeyError(
                    "model.loss.distill: a training text has no teacher embedding (the teacher's targets cover the "
                    "data module's train split)"
                )
            rows.append(self.index[key])
        return self.embeddings[torch.tensor(rows, device=self.embeddings.device)]
