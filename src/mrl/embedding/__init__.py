"""Embeddings of your own images or texts from a trained run, at the size you choose (``make embed``).

INPUT for an image model: a folder (every image below it, in sorted path order) or a ``.txt`` file that
lists image paths, one per line (relative ones are read from the list's folder). The images go through
the run's own evaluation preprocessing, rebuilt from its data config, so the training data need not be on
this machine. An unreadable image is left out, and its path is named in the output's ``meta``.

INPUT for a text model: a ``.txt`` file (one text per line) or a table (``.csv``, ``.tsv``, ``.jsonl``,
``.json``, ``.parquet``) whose ``column`` (default ``text``) holds the texts, tokenized as in training.

``reference``: RUN_OR_CKPT is an official RAIVNLab/MRL ResNet-50 file, and the images are prepared as the
reference evaluates ImageNet (``conf/data/imagenet.yaml``: resize to 256, center 224, bilinear).

The ``.npz`` it writes holds ``embeddings [N, dim]`` (the first ``dim`` coordinates; re-normalised with
``normalize``), ``ids [N]`` (image paths relative to INPUT, or the texts), ``labels [N]`` (-1: the
inputs carry no label) and ``meta`` (JSON: checkpoint, input, sizes, dim, normalised, skipped), so
:func:`mrl.load_embeddings` reads it and :class:`mrl.AdaptiveRetriever` searches it as it is.

Modules: :mod:`~mrl.embedding.inputs` (what is read), :mod:`~mrl.embedding.preprocessing` (how images are
prepared), :mod:`~mrl.embedding.encode` (the model over them), :mod:`~mrl.embedding.job` (``make embed``'s steps).
"""

from mrl.embedding.encode import embed_image_files, embed_texts
from mrl.embedding.inputs import list_images, read_texts
from mrl.embedding.job import embed_inputs
from mrl.embedding.preprocessing import image_transform, reference_transform

__all__ = [
    "embed_image_files",
    "embed_inputs",
    "embed_texts",
    "image_transform",
    "list_images",
    "read_texts",
    "reference_transform",
]
