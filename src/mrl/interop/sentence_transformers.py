"""A trained text model as a sentence-transformers model directory plus plain Hugging Face weights (an image
model goes to :mod:`mrl.interop.torch_export` instead: a ``torch.export`` program and its preprocessing).

Layout of the output directory::

    out/                 a SentenceTransformer directory: load with SentenceTransformer(out)
      modules.json, config_sentence_transformers.json, ...   Transformer (weights at the root), Pooling
      1_Pooling/, then Dense (only with a projection) and Normalize (only if the model normalised)
      hf/                the encoder alone (``save_pretrained``) and its tokenizer: AutoModel.from_pretrained
      mrl_export.json    sizes, width, pooling and how to truncate

``SentenceTransformer(out).encode(texts)`` gives the same vectors as ``module.embed`` (float tolerance);
``SentenceTransformer(out, truncate_dim=m)`` (or ``--truncate-dim m`` at export, stored as the default)
gives their first m coordinates.

Truncation and normalisation. Matryoshka training scores each prefix after re-normalising it to unit
length, so the similarity a size-m user should compute is the cosine of the m-prefixes. A truncated
prefix is not unit-length, even when the full vector is. Either compute cosine similarity
(``model.similarity``, the exported default, which is scale-invariant) or, for dot-product search (FAISS
inner product and the like), re-normalise the prefix: ``model.encode(texts, normalize_embeddings=True)``
does it, because sentence-transformers truncates first and normalises afterwards. The export adds a
``Normalize`` module only when the trained backbone itself normalised (``normalize: true``), so the export
reproduces the trained embedding exactly; a Normalize module would act on the full vector before
truncation and would not make the prefixes unit-length anyway.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from torch import nn

from mrl.backbones.hf_text import HFTextEncoder

__all__ = ["cut_layers", "export_sentence_transformer"]


def _st_modules():
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    return Transformer, Pooling, Dense, Normalize


def cut_layers(model: nn.Module, layers: int) -> nn.Module:
    """``model`` (a Hugging Face encoder) keeping its first ``layers`` transformer layers, in place: the layer
    list (the ``nn.ModuleList`` as long as ``config.num_hidden_layers``) is cut and the config says so."""
    total = int(model.config.num_hidden_layers)
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == total:
                setattr(parent, name, nn.ModuleList(list(child)[:layers]))
                model.config.num_hidden_layers = int(layers)
                return model
    raise ValueError(f"--layers={layers}: found no list of {total} transformer layers in {type(model).__name__}")


def export_sentence_transformer(
    module: nn.Module, out_dir: str | Path, truncate_dim: int | None = None, layers: int | None = None
) -> Path:
    """Write ``module``'s text encoder (an :class:`mrl.backbones.HFTextEncoder`) as a sentence-transformers
    directory at ``out_dir`` and its transformer as Hugging Face weights under ``out_dir/hf``.

    ``truncate_dim`` becomes the saved model's default truncation (it should be one of the trained sizes).
    ``layers`` keeps only the first k transformer layers (2D Matryoshka, ``model.loss.layers``): the export then
    gives the embedding after layer k (``HFTextEncoder.forward_layers(x)[k - 1]``), at about k / L of the cost.
    Classification heads are not exported: the result is the embedding model.
    """
    from sentence_transformers import SentenceTransformer

    backbone = getattr(module, "backbone", module)
    if not isinstance(backbone, HFTextEncoder):
        raise TypeError(
            f"export: the backbone is {type(backbone).__name__}; only HFTextEncoder text models export "
            "to sentence-transformers"
        )
    sizes = [int(m) for m in (getattr(module, "sizes", None) or [backbone.embed_dim])]
    if truncate_dim is not None and not 0 < int(truncate_dim) <= backbone.embed_dim:
        raise ValueError(f"--truncate-dim={truncate_dim}: must lie in 1..{backbone.embed_dim} (trained sizes: {sizes})")
    if layers is not None and (isinstance(layers, bool) or not 1 <= int(layers) <= backbone.num_layers):
        raise ValueError(f"--layers={layers}: must lie in 1..{backbone.num_layers} (the model's transformer layers)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_dir = out / "hf"
    encoder = backbone.model
    if layers is not None and int(layers) < backbone.num_layers:
        encoder = cut_layers(copy.deepcopy(encoder), int(layers))
    encoder.save_pretrained(hf_dir)
    backbone.tokenizer.save_pretrained(hf_dir)

    Transformer, Pooling, Dense, Normalize = _st_modules()
    modules: list[nn.Module] = [
        Transformer(str(hf_dir), max_seq_length=backbone.max_length),
        Pooling(backbone.num_features, pooling_mode=backbone.pooling),
    ]
    if isinstance(backbone.projection, nn.Linear):
        linear = backbone.projection
        dense = Dense(
            linear.in_features, linear.out_features, bias=linear.bias is not None, activation_function=nn.Identity()
        )
        dense.linear.load_state_dict(linear.state_dict())
        modules.append(dense)
    if backbone.normalize:
        modules.append(Normalize())
    model = SentenceTransformer(
        modules=modules,
        device="cpu",
        similarity_fn_name="cosine",
        truncate_dim=None if truncate_dim is None else int(truncate_dim),
    )
    model.save(str(out))
    info = {
        "format": "sentence-transformers",
        "base_model": backbone.name,
        "embed_dim": backbone.embed_dim,
        "sizes": sizes,
        "pooling": backbone.pooling,
        "max_length": backbone.max_length,
        "projection": isinstance(backbone.projection, nn.Linear),
        "normalize_module": backbone.normalize,
        "truncate_dim": truncate_dim,
        "layers": int(layers) if layers is not None else backbone.num_layers,
        "usage": "SentenceTransformer(out, truncate_dim=m).encode(texts, normalize_embeddings=True) gives unit "
        "m-prefixes (truncated first, then normalised); cosine similarity needs no normalisation",
        "hf_weights": "hf/",
    }
    (out / "mrl_export.json").write_text(json.dumps(info, indent=2) + "\n")
    return out
