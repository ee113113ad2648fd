"""Faults injected into a real training process, for the fault-injection tests.

``python -m mrl_testing.faults kill-during-save N -- <mrl-train arguments>`` runs ``mrl.cli.train`` with the
checkpoint writer changed so that its N-th save writes half of its bytes to the temporary file, flushes them to
disk, and then the process SIGKILLs itself: the state a pre-emption or an OOM kill in the middle of a
checkpoint write leaves behind.
"""

from __future__ import annotations

import io
import os
import signal
import sys


def kill_during_save(n: int) -> None:
    import torch

    import mrl.training.checkpoint_io as checkpoint_io

    real_save, calls = torch.save, [0]

    def save(obj, handle, *args, **kwargs):
        calls[0] += 1
        if calls[0] < n:
            return real_save(obj, handle, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint_io.torch = type(sys)("torch_with_a_fault")
    checkpoint_io.torch.save = save


def main(argv: list[str]) -> None:
    fault, count, sep, *train_args = argv
    if fault != "kill-during-save" or sep != "--":
        raise SystemExit("usage: python -m mrl_testing.faults kill-during-save N -- <mrl-train arguments>")
    kill_during_save(int(count))
    from mrl.cli.train import main as train

    sys.argv = ["mrl-train", *train_args]
    train()


if __name__ == "__main__":
    main(sys.argv[1:])
