"""Pairs read from memory-mapped Arrow files (``data.memory_map: true``): the same items as a file read into memory,
from every source kind, in the same resumable, sharded, seeded training order, resumed mid-epoch on the right rows."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest

from mrl.common.errors import ConfigError, InputError
from mrl.data.sampling import ResumableSampler
from mrl.data.text import TextPairsDataModule
from mrl.data.text.arrow_pairs import ArrowPairs, split_rows
from mrl_testing.training import fit_config

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def own_datasets_cache(tmp_path, monkeypatch):
    """The Arrow files converted from the test's files go to its own folder, not the user's cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def _rows(count: int) -> list[dict]:
    rows = [
        {"query": f"query {i}", "passage": f"passage {i} " + "word " * (i % 7), "hard": f"other {i}"}
        for i in range(count)
    ]
    rows[3]["passage"] = None  # skipped, as the in-memory reader skips it
    rows[5]["hard"] = None  # skipped only when the negative is asked for
    return rows


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _items(dataset) -> list[tuple]:
    return [dataset[i] for i in range(len(dataset))]


def test_memory_mapped_items_match_the_in_memory_reader_for_every_source_kind(tmp_path):
    rows = _rows(60)
    jsonl = _jsonl(tmp_path / "pairs.jsonl", rows)
    columns = {"anchor_column": "query", "positive_column": "passage"}
    in_memory = TextPairsDataModule(jsonl, **columns, max_pairs=None)
    everything = sorted(in_memory.split_items("train") + in_memory.split_items("val"))
    assert len(everything) == 59  # row 3 has no passage

    mapped = TextPairsDataModule(jsonl, **columns, memory_map=True, seed=4)
    train, val = mapped.split_items("train"), mapped.split_items("val")
    assert isinstance(train, ArrowPairs) and len(val) == round(0.2 * 59)
    assert sorted(_items(train) + _items(val)) == everything  # the same pairs, split once
    assert mapped.split_dataset("train", train=True) is train
    valid = np.array([i for i in range(60) if i != 3])
    expected_train, expected_val = split_rows(valid, 0.2, 4)
    assert _items(train) == [(rows[i]["query"], rows[i]["passage"]) for i in expected_train]
    assert _items(val) == [(rows[i]["query"], rows[i]["passage"]) for i in expected_val]

    # parquet and a save_to_disk directory hold the same rows: the same splits
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "pairs.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "pairs.parquet", tmp_path / "saved"):
        other = TextPairsDataModule(str(source), **columns, memory_map=True, seed=4)
        assert _items(other.split_items("train")) == _items(train) and _items(other.split_items("val")) == _items(val)
    # a saved directory also reads into memory, as a file does
    assert sorted(sum((TextPairsDataModule(str(tmp_path / "saved"), **columns)._splits.values()), [])) == everything

    # triplets skip rows with any of their columns missing; max_pairs is a seeded choice of the training rows
    triplets = TextPairsDataModule(jsonl, **columns, negative_column="hard", memory_map=True, max_pairs=10)
    items = _items(triplets.split_items("train"))
    assert len(items) == 10 and all(len(item) == 3 for item in items)
    assert not {"query 3", "query 5"} & {item[0] for item in items + _items(triplets.split_items("val"))}


def test_memory_mapped_batches_follow_the_seeded_resumable_order(tmp_path):
    jsonl = _jsonl(tmp_path / "pairs.jsonl", _rows(40))
    dm = TextPairsDataModule(
        jsonl, anchor_column="query", positive_column="passage", memory_map=True, batch_size=4, seed=2
    )
    train = _items(dm.split_items("train"))
    tokenizer = dm.tokenizer
    order = list(ResumableSampler(train, seed=2))
    loader = dm.train_dataloader()
    anchors = [t for batch in loader for t in tokenizer.batch_decode(batch[0]["input_ids"], skip_special_tokens=True)]
    assert anchors == [train[i][0] for i in order]


def test_memory_map_bad_settings_fail_fast(tmp_path):
    with pytest.raises(ConfigError, match="data.memory_map=True: the built-in pairs"):
        TextPairsDataModule(memory_map=True)
    with pytest.raises(ConfigError, match="data.memory_map='yes'"):
        TextPairsDataModule(_jsonl(tmp_path / "p.jsonl", _rows(10)), "query", "passage", memory_map="yes")
    with pytest.raises(KeyError, match="data.anchor_column='anchor': no such column.*available: hard, passage"):
        TextPairsDataModule(str(tmp_path / "p.jsonl"), memory_map=True)
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="save_to_disk did not write"):
        TextPairsDataModule(str(tmp_path / "folder"), memory_map=True)
    (tmp_path / "broken.jsonl").write_text('{"query": "a", "passage": "b"}\nnot json\n')
    with pytest.raises(InputError, match="could not convert to Arrow"):
        TextPairsDataModule(str(tmp_path / "broken.jsonl"), "query", "passage", memory_map=True)


class RecordAnchors(L.Callback):
    """The anchors each epoch trained on, in order (their token ids, padding dropped)."""

    def __init__(self) -> None:
        self.seen: dict[int, list[tuple]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        ids, mask = batch[0]["input_ids"], batch[0]["attention_mask"]
        rows = [tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask)]
        self.seen.setdefault(trainer.current_epoch, []).extend(rows)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with random weights and the MiniLM tokenizer: Trainer runs in seconds."""
    import torch
    from transformers import BertConfig, BertModel

    from mrl.backbones.hf_text import load_tokenizer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(path)
    load_tokenizer(None).save_pretrained(path)
    return str(path)


def test_memory_mapped_run_stopped_mid_epoch_resumes_on_the_right_rows(tmp_path, make_cfg, tiny_bert):
    jsonl = _jsonl(tmp_path / "pairs.jsonl", _rows(30))
    cfg = make_cfg(
        "experiment=text_pairs_mrl",
        f"model.backbone.name_or_path={tiny_bert}",
        "model.nesting=[8,16,32]",
        f"data.source={jsonl}",
        "data.anchor_column=query",
        "data.positive_column=passage",
        "data.memory_map=true",
        "data.batch_size=4",
        "data.max_pairs=null",
        "model.backbone.max_length=8",
        "logger=none",
        "callbacks=none",
        "print_config=false",
        "test=false",
        fast=False,
    )  # 23 training pairs: 6 batches an epoch
    whole = RecordAnchors()
    fit_config(cfg, [whole], max_epochs=2)
    assert len(whole.seen[0]) == len(whole.seen[1]) == 23 and whole.seen[0] != whole.seen[1]

    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    first, second = RecordAnchors(), RecordAnchors()
    fit_config(cfg, [first, ckpt], max_steps=8)  # epoch 1 stopped after 2 of its 6 batches
    fit_config(cfg, [second], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), max_epochs=2)
    assert len(first.seen[1]) == 8 and 0 not in second.seen
    assert first.seen[1] + second.seen[1] == whole.seen[1]
