"""Negatives from every process (``model.loss.gather``): two CPU processes (gloo) on halves of a batch give the
loss and every weight's gradient of one process on the whole batch (float64), with the plain and the cached step;
without gather each process scores only its own half, as before. And a real Lightning DDP run (two processes) of
the cached step trains the same weights as the plain step."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from mrl_testing.distributed import contrastive_module, gather_worker, training_step_grads, worker

ROWS = 8


def _batch(with_negative: bool) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    count = 3 if with_negative else 2
    return [torch.randn(ROWS, 12, dtype=torch.float64, generator=generator) for _ in range(count)]


def _two_processes(tmp_path, loss: dict, parts: list[torch.Tensor]):
    halves = [slice(0, ROWS // 2), slice(ROWS // 2, ROWS)]
    out = tmp_path / "result.pt"
    mp.start_processes(
        worker, args=(2, str(tmp_path / "init"), loss, parts, halves, str(out)), nprocs=2, start_method="spawn"
    )
    return torch.load(out)


def _assert_same(got, expected):
    (loss, grads), (expected_loss, expected_grads) = got, expected
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-9)
    assert grads.keys() == expected_grads.keys() and len(grads) == 2  # the encoder's weight and bias
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("with_negative", "mini_batch_size"),
    [
        pytest.param(False, None, marks=pytest.mark.slow),
        pytest.param(True, None, marks=pytest.mark.slow),
        (True, 3),  # the cached step: gathered negatives, each process replaying its own mini-batches
    ],
)
def test_gathered_negatives_equal_one_process_on_the_whole_batch(tmp_path, with_negative, mini_batch_size):
    parts = _batch(with_negative)
    loss = {"weights": [1.0, 0.5, 2.0], "gather": True, "mini_batch_size": mini_batch_size}
    whole = training_step_grads(contrastive_module({**loss, "mini_batch_size": None}), parts)
    _assert_same(_two_processes(tmp_path, loss, parts), whole)


@pytest.mark.slow  # each of these starts two processes (about 10 s quiet); make test keeps one such test
def test_without_gather_each_process_scores_its_own_half(tmp_path):
    parts = _batch(with_negative=True)
    loss = {"weights": [1.0, 0.5, 2.0], "gather": False}
    halves = [training_step_grads(contrastive_module(loss), [p[s] for p in parts]) for s in (slice(0, 4), slice(4, 8))]
    mean = (
        (halves[0][0] + halves[1][0]) / 2,
        {name: (halves[0][1][name] + halves[1][1][name]) / 2 for name in halves[0][1]},
    )
    got = _two_processes(tmp_path, loss, parts)
    _assert_same(got, mean)
    whole = training_step_grads(contrastive_module(loss), parts)
    assert not torch.allclose(got[0], whole[0])  # fewer candidates per anchor: a different (lower) loss


@pytest.mark.slow
def test_gather_rows_of_uneven_shares_in_rank_order_with_gradients_back(tmp_path):
    mp.start_processes(
        gather_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2, start_method="spawn"
    )
    results = [torch.load(f"{tmp_path / 'out'}.{rank}") for rank in (0, 1)]
    expected_rows = torch.tensor([[0.0] * 3] * 2 + [[1.0] * 3] * 3, dtype=torch.float64)
    for rank, (rows, offset, grad) in enumerate(results):
        torch.testing.assert_close(rows, expected_rows)
        assert offset == [0, 2][rank]
        # d/d(row j) of sum over processes r of (r + 1) * (j + 1) * row_j: 3 * (j + 1), for this process's rows
        positions = torch.arange(offset, offset + rank + 2, dtype=torch.float64)
        torch.testing.assert_close(grad, (3 * (positions + 1))[:, None].expand(-1, 3))


def test_gather_must_be_a_boolean():
    with pytest.raises(ValueError, match=r"model.loss.gather='yes': expected true or false"):
        contrastive_module({"gather": "yes"})


def _ddp_text_run(run_dir, *overrides: str) -> dict[str, torch.Tensor]:
    """Two ``ddp_cpu`` processes train all-MiniLM-L6-v2 for one epoch of 26 offline pairs (two steps of 8 + 5
    pairs per process: the short last batch too); the final weights."""
    import os
    import subprocess
    import sys

    from mrl_testing.configs import ROOT

    args = [
        sys.executable,
        "-m",
        "mrl.cli.train",
        "experiment=text_pairs_mrl",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "data.max_pairs=32",
        "data.batch_size=8",
        "data.max_length=32",
        "callbacks=default",
        "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null",
        "logger=none",
        "test=false",
        "print_config=false",
        "seed=0",
        # no dropout: the cached step embeds other groupings of the texts, so its masks would differ
        "+model.backbone.hidden_dropout_prob=0.0",
        "+model.backbone.attention_probs_dropout_prob=0.0",
        # plain SGD: the weights move by lr x gradient (Adam would blow float32 noise of near-zero gradients up)
        "model.optimizer.name=sgd",
        "model.optimizer.lr=0.5",
        "+model.optimizer.momentum=0.0",
        "model.optimizer.weight_decay=0.0",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    checkpoint = next(run_dir.rglob("last.ckpt"))
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow  # two runs of two processes each (about a minute quiet)
def test_cached_step_under_lightning_ddp_trains_the_weights_of_the_plain_step(tmp_path):
    """The cached step under a real DistributedDataParallel (its gradient hooks fire once per weight) with gathered
    negatives: after two steps (the second one short), the same weights as the plain step (float32; only the
    summation order differs)."""
    plain = _ddp_text_run(tmp_path / "plain")
    cached = _ddp_text_run(tmp_path / "cached", "model.loss.mini_batch_size=4")
    from transformers import AutoModel

    from mrl.backbones import default_minilm_path

    assert plain.keys() == cached.keys() and len(plain) > 50
    for name, weight in plain.items():
        torch.testing.assert_close(cached[name], weight, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    start = AutoModel.from_pretrained(default_minilm_path()).state_dict()
    moved = [
        n
        for n, w in start.items()
        if f"backbone.model.{n}" in plain and not torch.equal(plain[f"backbone.model.{n}"], w)
    ]
    assert len(moved) > 50  # both runs trained: most weights left the pretrained values
