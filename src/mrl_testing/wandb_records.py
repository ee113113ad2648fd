"""Read back an offline W&B run file (``run-*.wandb``) to check what a run logged, with no server.

The file is a LevelDB-style log (a 7-byte header, then 32 KiB blocks of records, each with a 7-byte
header: crc32, length, type; records may span blocks) whose payloads are W&B ``Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_payloads(path: str | Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file (header {data[:7]!r})"
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


def read_run(path: str | Path) -> dict:
    """Summary values, history keys and the config of an offline run, decoded from JSON."""
    from wandb.proto import wandb_internal_pb2 as pb

    summary, history_keys, config, run_id = {}, set(), {}, None
    for payload in iter_payloads(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                history_keys.add(item.key or "/".join(item.nested_key))
        elif kind == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"summary": summary, "history_keys": history_keys, "config": config, "run_id": run_id}


def read_finished_run(path: str | Path, timeout: float = 20.0) -> dict:
    """``read_run`` once the summary is there: the W&B service may still be writing its last records."""
    import time

    deadline = time.monotonic() + timeout
    run = read_run(path)
    while not run["summary"] and time.monotonic() < deadline:
        time.sleep(0.5)
        run = read_run(path)
    return run
