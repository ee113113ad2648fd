"""Loading a trained module back: the class is the one the checkpoint saved (``mrl.runs.MODULE_CLASS_KEY``), older
checkpoints without it fall back to the class their hyper-parameters imply, and ``mrl.runs`` does not import
``mrl.training`` (which imports it: no cycle)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from mrl.runs import CLASSIFIER_PATH, CONTRASTIVE_PATH, MODULE_CLASS_KEY, load_module
from mrl.training.classifier import MatryoshkaClassifier
from mrl.training.contrastive import MatryoshkaContrastiveModule

SRC = Path(__file__).resolve().parents[1] / "src" / "mrl"
ENCODER = {"_target_": "mrl_testing.distributed.LinearEncoder", "in_features": 12, "out_features": 32}


class WiderLoggingClassifier(MatryoshkaClassifier):
    """A user's subclass, defined outside the mrl package."""


def _fit(module: L.LightningModule, batches: list, path: Path) -> Path:
    """A few real optimizer steps on CPU, then the checkpoint Lightning writes."""
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    trainer.save_checkpoint(path)
    return path


def _classifier_batches():
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(6, 12, generator=generator), torch.randint(0, 3, (6,), generator=generator)) for _ in range(3)]


def _pair_batches():
    generator = torch.Generator().manual_seed(1)
    return [tuple(torch.randn(6, 12, generator=generator) for _ in range(2)) for _ in range(3)]


def _same_weights(got: L.LightningModule, trained: L.LightningModule) -> None:
    expected = trained.state_dict()
    assert got.state_dict().keys() == expected.keys()
    for name, value in got.state_dict().items():
        torch.testing.assert_close(value, expected[name])


def _without_class(path: Path, **extra_hparams) -> Path:
    """The checkpoint as earlier releases wrote it: no class path (and, with ``extra_hparams``, what they saved)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    del checkpoint[MODULE_CLASS_KEY]
    checkpoint["hyper_parameters"].update(extra_hparams)
    old = path.with_name(f"old_{path.name}")
    torch.save(checkpoint, old)
    return old


def test_a_trained_classifier_loads_as_the_class_it_saved_and_without_the_class_path(tmp_path):
    torch.manual_seed(0)
    module = MatryoshkaClassifier(ENCODER, num_classes=3, nesting=[8, 16, 32], optimizer={"name": "adamw"})
    path = _fit(module, _classifier_batches(), tmp_path / "classifier.ckpt")
    assert torch.load(path, weights_only=True)[MODULE_CLASS_KEY] == CLASSIFIER_PATH
    x = torch.randn(4, 12)
    for ckpt in (path, _without_class(path)):
        loaded = load_module(ckpt)
        assert type(loaded) is MatryoshkaClassifier
        _same_weights(loaded, module)
        torch.testing.assert_close(loaded(x), module.eval()(x))


def test_a_trained_contrastive_model_loads_as_the_class_it_saved_and_without_the_class_path(tmp_path):
    torch.manual_seed(0)
    module = MatryoshkaContrastiveModule(ENCODER, nesting=[8, 16, 32], optimizer={"name": "adamw"})
    path = _fit(module, _pair_batches(), tmp_path / "pairs.ckpt")
    assert torch.load(path, weights_only=True)[MODULE_CLASS_KEY] == CONTRASTIVE_PATH
    # earlier releases saved an unused num_classes with the contrastive model; it is dropped
    for ckpt in (path, _without_class(path, num_classes=None)):
        loaded = load_module(ckpt)
        assert type(loaded) is MatryoshkaContrastiveModule
        _same_weights(loaded, module)


def test_a_subclass_outside_the_package_is_imported_only_from_a_trusted_file(tmp_path, caplog):
    torch.manual_seed(0)
    module = WiderLoggingClassifier(ENCODER, num_classes=3, nesting=[8, 32], optimizer={"name": "adamw"})
    path = _fit(module, _classifier_batches(), tmp_path / "sub.ckpt")
    saved = torch.load(path, weights_only=True)[MODULE_CLASS_KEY]
    assert saved.endswith("test_load_module.WiderLoggingClassifier")
    assert type(load_module(path, weights_only=False)) is WiderLoggingClassifier
    with caplog.at_level(logging.WARNING, logger="mrl.runs"):
        loaded = load_module(path)  # weights_only: the file does not choose code to import
    assert type(loaded) is MatryoshkaClassifier
    assert f"saved by {saved}, outside the mrl package; rebuilt as {CLASSIFIER_PATH}" in caplog.text
    _same_weights(loaded, module)


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        ("mrl.no_such_module.Model", r"cannot be imported"),
        ("mrl.training.classifier.NoSuchModel", r"cannot be imported"),
        ("mrl.common.io.write_json", r"is not a LightningModule class"),
    ],
)
def test_a_saved_class_that_is_not_a_module_is_a_one_line_error(tmp_path, saved, message):
    module = MatryoshkaClassifier(ENCODER, num_classes=3, nesting=[8, 32])
    path = tmp_path / "bad.ckpt"
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), MODULE_CLASS_KEY: saved}, path
    )
    with pytest.raises(ValueError, match=rf"^ckpt='{path}': its {MODULE_CLASS_KEY}='{saved}' {message}"):
        load_module(path)


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_runs_does_not_import_training():
    imported = _imported_modules(SRC / "runs.py")
    assert not [name for name in imported if name == "mrl.training" or name.startswith("mrl.training.")]
    assert "mrl.runs" in _imported_modules(SRC / "training" / "procedure.py")  # the direction that stays
