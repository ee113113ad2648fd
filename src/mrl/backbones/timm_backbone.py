"""Image backbones from timm, with an optional projection to a chosen embedding width."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from torch import nn

from mrl.backbones.blurpool import apply_blurpool
from mrl.common.errors import rejected_keyword


def check_timm_name(name: str, key: str = "model.backbone.name") -> None:
    """Fail fast on a backbone name timm does not know, suggesting close matches."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models() for valid names"
    raise ValueError(f"{key}={name!r}: not a timm model; {hint}")


class TimmBackbone(nn.Module):
    """A timm feature extractor (``num_classes=0``) followed by an optional linear projection.

    ``weights_path`` loads pretrained weights from a local file (offline use) through timm's own
    pretrained-config mechanism, so the usual key filtering and input adaptation (``in_chans``) apply.
    ``freeze=True`` keeps the trunk fixed (and its norm statistics in eval mode), so an existing model
    can be made Matryoshka by training only the projection and the heads. ``blurpool=True`` blurs the
    input of the strided convolutions (:mod:`mrl.backbones.blurpool`), as the reference MRL recipe does.
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        weights_path: str | None = None,
        in_chans: int = 3,
        embed_dim: int | None = None,
        freeze: bool = False,
        drop_path_rate: float = 0.0,
        blurpool: bool = False,
        **model_kwargs,
    ) -> None:
        super().__init__()
        check_timm_name(name)
        kwargs = dict(model_kwargs)
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        if weights_path is not None:
            if not Path(weights_path).is_file():
                raise FileNotFoundError(f"model.backbone.weights_path={weights_path!r}: no such file")
            pretrained = True
            kwargs["pretrained_cfg_overlay"] = dict(file=str(weights_path))
        self.name = name
        try:
            self.model = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs)
        except TypeError as error:
            rejected = rejected_keyword(error, model_kwargs, "model.backbone", f"timm's {name}")
            if rejected is None:
                raise
            raise rejected from error
        self.num_features = int(self.model.num_features)
        self.blurred = apply_blurpool(self.model) if blurpool else []
        if blurpool and not self.blurred:
            raise ValueError(
                f"model.backbone.blurpool=true: {name} has no convolution with a stride above 1 that reads "
                f">= 16 channels, so there is nothing to blur; set it to false for this backbone"
            )
        if embed_dim is not None and int(embed_dim) <= 0:
            raise ValueError(f"model.backbone.embed_dim={embed_dim!r}: must be a positive integer or null")
        self.projection = nn.Linear(self.num_features, int(embed_dim)) if embed_dim else nn.Identity()
        self.embed_dim = int(embed_dim) if embed_dim else self.num_features
        self.frozen = bool(freeze)
        if self.frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    @property
    def data_config(self) -> dict:
        """Input size, mean, std, interpolation and crop resolved from the model (timm's data config)."""
        return timm.data.resolve_model_data_config(self.model)

    def train(self, mode: bool = True) -> TimmBackbone:
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                features = self.model(x)
        else:
            features = self.model(x)
        return self.projection(features)
