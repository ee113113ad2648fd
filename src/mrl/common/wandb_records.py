"""What an offline W&B run logged, read back from its ``run-*.wandb`` files with no server: the run's id, project,
entity, group and tags, its config, summary, history keys, the tables it logged and the metrics it defined
(``define_metric``), so a dashboard can be built from what runs actually logged.

The file is a LevelDB-style log (a 7-byte header, then 32 KiB blocks of records, each with a 7-byte header:
crc32, length, type; records may span blocks) whose payloads are W&B ``Record`` protobufs, decoded by W&B's
own protobuf classes. wandb 0.31 ships no Python reader of these files (its Go service writes and syncs them).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_payloads(path: str | Path) -> Iterator[bytes]:
    """The serialised ``Record`` protobufs of a ``run-*.wandb`` file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file (header {data[:7]!r})")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def iter_records(path: str | Path):
    """The W&B ``Record`` protobufs of a ``run-*.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    for payload in iter_payloads(path):
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """One W&B run as its offline files hold it (a resumed run, e.g. by ``make eval``, adds a file: merged)."""

    run_id: str = ""
    project: str = ""
    entity: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history_keys: set[str] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)  # history keys whose values are W&B tables
    step_metrics: dict[str, str] = field(default_factory=dict)  # defined metric -> its step metric ("" = none)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the history rows, decoded

    def add_file(self, path: str | Path) -> OfflineRun:
        defined: list[str] = []  # a metric's step_metric_index counts W&B's defined metrics from 1
        for record in iter_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                self.run_id, self.project = run.run_id or self.run_id, run.project or self.project
                self.entity, self.group = run.entity or self.entity, run.run_group or self.group
                self.tags = list(dict.fromkeys([*self.tags, *run.tags]))
                for item in run.config.update:
                    self.config[_key(item)] = json.loads(item.value_json)
            elif kind == "config":
                for item in record.config.update:
                    self.config[_key(item)] = json.loads(item.value_json)
            elif kind == "summary":
                for item in record.summary.update:
                    self.summary[_key(item)] = json.loads(item.value_json)
            elif kind == "history":
                row = {_key(item): json.loads(item.value_json) for item in record.history.item}
                self.rows.append(row)
                self.history_keys.update(row)
                # a logged table arrives as nested items ("eval/per_size", "_type") = "table-file", ...
                for item in record.history.item:
                    if item.nested_key:
                        self.history_keys.add(item.nested_key[0])
                        if item.nested_key[-1] == "_type" and json.loads(item.value_json) == "table-file":
                            self.tables.add("/".join(item.nested_key[:-1]))
            elif kind == "metric":
                metric = record.metric
                name = metric.name or metric.glob_name
                step = metric.step_metric
                if not step and metric.step_metric_index > 0 and metric.step_metric_index <= len(defined):
                    step = defined[metric.step_metric_index - 1]
                defined.append(name)
                self.step_metrics[name] = step
        return self

    def merge(self, later: OfflineRun) -> None:
        """Add what a later file of the same run logged."""
        for name in ("project", "entity", "group"):
            setattr(self, name, getattr(later, name) or getattr(self, name))
        self.tags = list(dict.fromkeys([*self.tags, *later.tags]))
        for name in ("config", "summary", "step_metrics"):
            getattr(self, name).update(getattr(later, name))
        self.history_keys |= later.history_keys
        self.tables |= later.tables
        self.rows += later.rows


def run_files(root: str | Path) -> list[Path]:
    """Every W&B run file below ``root`` (a run or sweep directory): offline runs, and the local copy online runs
    keep."""
    return sorted(Path(root).rglob("wandb/*run-*/run-*.wandb"))


def _started(path: Path) -> str:
    """When the run file's process started: its folder is ``[offline-]run-<YYYYmmdd_HHMMSS>-<id>``."""
    found = re.search(r"\d{8}_\d{6}", path.parent.name)
    return found.group(0) if found else ""


def read_runs(root: str | Path) -> list[OfflineRun]:
    """The offline W&B runs below ``root``, one per run id (its files merged in time order)."""
    runs: dict[str, OfflineRun] = {}
    for path in sorted(run_files(root), key=_started):
        run = OfflineRun().add_file(path)
        if run.run_id in runs:
            runs[run.run_id].merge(run)
        else:
            runs[run.run_id] = run
    return list(runs.values())
