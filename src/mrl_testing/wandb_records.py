"""Read back an offline W&B run file (``run-*.wandb``) to check what a run logged, with no server (the records are
read by :mod:`mrl.common.wandb_records`)."""

from __future__ import annotations

import json
from pathlib import Path

from mrl.common.wandb_records import iter_payloads

__all__ = ["iter_payloads", "read_finished_run", "read_run"]


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
