"""Pairs read from memory-mapped Arrow files (``data.memory_map: true``): the same items as a file read into memory,
from every source kind, in the same resumable, sharded, seeded training order, resumed mid-epoch on the right rows."""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path

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


def _mapped_pairs_run(tiny_bert: str, source) -> list[str]:
    """Overrides of a small `text_pairs_mrl` run on the memory-mapped pairs of `source` (tiny BERT, batches of 4)."""
    return [
        "experiment=text_pairs_mrl",
        f"model.backbone.name_or_path={tiny_bert}",
        "model.nesting=[8,16,32]",
        f"data.source={source}",
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
    ]


@pytest.mark.parametrize("workers", [0, 2])
def test_memory_mapped_run_stopped_mid_epoch_resumes_on_the_right_rows(tmp_path, make_cfg, tiny_bert, workers):
    """Also with two loader workers (``data.num_workers=2``): Lightning's fit gets the rows of one process."""
    jsonl = _jsonl(tmp_path / "pairs.jsonl", _rows(30))
    cfg = make_cfg(
        f"data.num_workers={workers}", *_mapped_pairs_run(tiny_bert, jsonl), fast=False
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


# ------------------------------------------------------------------------------------ DataLoader worker processes
def _record_worker_table(record_dir, worker_id: int) -> None:
    """In a worker: what its copy of the data set reads from (a memory map, or rows loaded into memory)."""
    from torch.utils.data import get_worker_info

    table = get_worker_info().dataset.data.data
    seen = {"table": type(table).__name__, "file": Path(getattr(table, "path", "")).name}
    (Path(record_dir) / f"worker{worker_id}.json").write_text(json.dumps(seen))


def _token_ids(loader) -> list[list[tuple]]:
    """Each batch's texts (anchors, then positives, then negatives) as token ids, padding dropped."""
    out = []
    for batch in loader:
        parts = [zip(part["input_ids"], part["attention_mask"], strict=True) for part in batch]
        out.append([tuple(ids[mask.bool()].tolist()) for part in parts for ids, mask in part])
    return out


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])  # spawn: 40 s
def test_two_workers_read_the_memory_map_in_the_order_of_one_process(tmp_path, context):
    """Two DataLoader workers over memory-mapped triplets yield the rows and batches of ``num_workers=0``, in the same
    order; each worker gets the data set by pickle (spawn) or by fork and reads the Arrow file through a map."""
    from datasets.table import MemoryMappedTable
    from torch.utils.data import DataLoader

    jsonl = _jsonl(tmp_path / "pairs.jsonl", _rows(4000))
    columns = {"anchor_column": "query", "positive_column": "passage", "negative_column": "hard"}

    def module(workers: int) -> TextPairsDataModule:
        return TextPairsDataModule(
            jsonl, **columns, memory_map=True, max_pairs=None, batch_size=64, seed=5, num_workers=workers
        )

    one = module(0)
    dataset = one.split_items("train")
    assert isinstance(dataset.data.data, MemoryMappedTable)
    arrow_bytes = sum(Path(f["filename"]).stat().st_size for f in dataset.data.cache_files)
    assert len(pickle.dumps(dataset.data)) < arrow_bytes / 20  # the map's path and replays, not the rows
    again = pickle.loads(pickle.dumps(dataset))
    assert isinstance(again.data.data, MemoryMappedTable) and again.data.data.path == dataset.data.data.path
    assert _items(again) == _items(dataset)

    expected = _token_ids(one.train_dataloader())
    two = module(2)
    if context == "fork":  # what Lightning does on Linux: the data module's own training loader
        loader = two.train_dataloader()
        assert loader.num_workers == 2
    else:  # macOS' and Windows' start method: the data set travels by pickle
        train = two.split_dataset("train", train=True)
        loader = DataLoader(
            train,
            batch_size=64,
            sampler=two.training_sampler(train),
            collate_fn=two.collate_fn("train"),
            num_workers=2,
            multiprocessing_context=context,
            worker_init_fn=functools.partial(_record_worker_table, str(tmp_path)),
        )
    assert _token_ids(loader) == expected
    assert sum(len(batch) for batch in expected) == 3 * len(dataset)
    if context == "spawn":
        seen = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
        assert seen == [{"table": "MemoryMappedTable", "file": Path(dataset.data.data.path).name}] * 2


# ------------------------------------------------------------------------------------- saved DatasetDicts by split
@pytest.fixture
def saved_dict(tmp_path) -> tuple[str, dict[str, list[dict]]]:
    """A real ``DatasetDict.save_to_disk`` directory: train, validation and test from one table of rows."""
    rows = _rows(50)
    parts = {"train": rows[:30], "validation": rows[30:42], "test": rows[42:]}
    datasets.DatasetDict({name: datasets.Dataset.from_list(part) for name, part in parts.items()}).save_to_disk(
        str(tmp_path / "saved")
    )
    return str(tmp_path / "saved"), parts


def _pairs(rows: list[dict]) -> list[tuple]:
    return [(r["query"], r["passage"]) for r in rows if r["passage"] is not None]


@pytest.mark.parametrize("memory_map", [False, True])
def test_a_saved_dataset_dict_trains_and_validates_on_its_own_splits(saved_dict, memory_map):
    source, parts = saved_dict
    columns = {"anchor_column": "query", "positive_column": "passage", "memory_map": memory_map, "max_pairs": None}
    dm = TextPairsDataModule(source, **columns)
    assert list(_items(dm.split_items("train"))) == _pairs(parts["train"])  # row 3 (no passage) left out
    assert list(_items(dm.split_items("val"))) == _pairs(parts["validation"])
    assert "test" not in dm._splits

    # the split keys a user passes (+data.train_split=... on the command line) choose other splits
    swapped = TextPairsDataModule(source, **columns, train_split="validation", val_split="train", test_split="test")
    assert list(_items(swapped.split_items("train"))) == _pairs(parts["validation"])
    assert list(_items(swapped.split_items("val"))) == _pairs(parts["train"])
    assert list(_items(swapped.split_items("test"))) == _pairs(parts["test"])

    # no validation split of that name: val_fraction of the training split is held out, as for one file
    held = TextPairsDataModule(source, **columns, val_split="dev", val_fraction=0.2)
    train, val = _items(held.split_items("train")), _items(held.split_items("val"))
    assert len(val) == round(0.2 * 29) and sorted(train + val) == sorted(_pairs(parts["train"]))

    # one split's own directory is a saved Dataset: one table, split by val_fraction
    single = TextPairsDataModule(str(Path(source) / "test"), **columns, val_fraction=0.25)
    assert sorted(_items(single.split_items("train")) + _items(single.split_items("val"))) == sorted(
        _pairs(parts["test"])
    )


def test_a_saved_dataset_dict_with_a_bad_split_name_fails_in_one_line_listing_its_splits(saved_dict):
    source, _ = saved_dict
    for key, value in (("train_split", "trian"), ("test_split", "tset")):
        for memory_map in (False, True):
            with pytest.raises(InputError) as error:
                TextPairsDataModule(source, "query", "passage", memory_map=memory_map, **{key: value})
            assert str(error.value) == (
                f"data.{key}={value!r}: not a split of the DatasetDict saved in {source}; "
                "its splits: train, validation, test"
            )
    # a reader without split keys (mrl-mine's pairs, make embed's input) points at one split's folder
    from mrl.data.text import read_table

    with pytest.raises(InputError) as error:
        read_table(source, key="pairs")
    assert str(error.value) == (
        f"pairs={source!r}: a saved DatasetDict of several splits (train, validation, test); give one split's folder, "
        f"e.g. {Path(source) / 'train'}"
    )
    assert len(read_table(str(Path(source) / "test"), key="pairs")) == 8


def test_a_saved_dataset_dict_trains_through_the_config(saved_dict, make_cfg, tiny_bert):
    """``data.source=<the directory>`` and the split keys, composed as ``make train`` composes them."""
    from mrl.training.procedure import build_datamodule

    source, parts = saved_dict
    overrides = _mapped_pairs_run(tiny_bert, source)
    dm = build_datamodule(make_cfg(*overrides, "+data.test_split=test", fast=False))
    assert [len(dm.split_items(s)) for s in ("train", "val", "test")] == [29, 12, 8]
    trainer = fit_config(make_cfg(*overrides, fast=False), [], max_steps=3)
    assert trainer.global_step == 3 and len(trainer.datamodule.split_items("val")) == len(_pairs(parts["validation"]))
    with pytest.raises(InputError, match=r"^data.train_split='trian': .*its splits: train, validation, test$"):
        build_datamodule(make_cfg(*overrides, "+data.train_split=trian", fast=False))
