"""Negatives from every process (``model.loss.gather``): two CPU processes (gloo) on halves of a batch give the
loss and every weight's gradient of one process on the whole batch (float64); without gather each process scores
only its own half, as before."""

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


@pytest.mark.parametrize("with_negative", [pytest.param(False, marks=pytest.mark.slow), True])
def test_gathered_negatives_equal_one_process_on_the_whole_batch(tmp_path, with_negative):
    parts = _batch(with_negative)
    loss = {"weights": [1.0, 0.5, 2.0], "gather": True}
    whole = training_step_grads(contrastive_module(loss), parts)
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
