"""The benchmark scripts run end to end (tiny shapes; their timings are not checked here)."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_heads_benchmark_times_every_variant(capsys):
    ratios = load("heads").main(["--batch", "8", "--width", "64", "--classes", "100", "--repeats", "4"])
    assert set(ratios) == {
        "plain Linear + CE",
        "reference MRL",
        "reference MRL-E",
        "ours MRL",
        "ours MRL-E",
        "MRL products only",
        "MRL products + loss",
    }
    assert ratios["plain Linear + CE"] == pytest.approx(1.0)
    assert all(r > 0 for r in ratios.values())
    assert "nesting 8..64 (4 sizes)" in capsys.readouterr().out


def test_heads_benchmark_floor_with_loss_does_the_training_arithmetic():
    """The 'products + loss' row computes what the MRL head and loss compute: the same input gradient."""
    import torch

    from mrl.core.heads import MatryoshkaHead
    from mrl.core.losses import MatryoshkaCrossEntropy

    torch.manual_seed(0)
    bench = load("heads")
    x = torch.randn(16, 64, requires_grad=True)
    target = torch.randint(0, 30, (16,))
    head = MatryoshkaHead(64, 30, [8, 16, 32, 64])
    MatryoshkaCrossEntropy()(head(x), target).backward()
    floor = bench.make_products_step(head, x, 30, target)()
    torch.testing.assert_close(floor, x.grad)
    assert not torch.allclose(bench.make_products_step(head, x, 30)(), x.grad)  # no loss: another gradient


def test_retrieval_benchmark_funnel_finds_the_exact_neighbours():
    pytest.importorskip("faiss")
    # no Milvus Lite here (its rows are tested in test_vector_db): its gRPC threads outlive the test, and a later
    # fork in this process (litdata's prepare in test_device_decode) then lost its worker's items
    results = load("retrieval").main(
        ["--n", "3000", "--dim", "128", "--queries", "40", "--classes", "100", "--repeats", "1",
         "--shortlist", "100", "--binary-size", "64", "--no-hnsw-full", "--db-engines", "lancedb"]
    )  # fmt: skip
    assert {"exact flat", "funnel flat", "funnel hnsw", "funnel bits"} <= set(results)
    # 64 sign bits are 8 bytes per item; on these clustered vectors they keep the class of the neighbour
    assert results["funnel bits"]["acc"] >= results["exact flat"]["acc"] - 0.05
    assert results["funnel bits"]["mflops"] == pytest.approx((3000 * 64 / 64 + 100 * 128) / 1e6)
    # a 100-candidate shortlist from 16-d prefixes of MRL-like vectors keeps the exact neighbour
    assert results["funnel flat"]["same_as_exact"] >= 0.95
    assert results["funnel flat"]["mflops"] < results["exact flat"]["mflops"] / 2


def test_step_logging_benchmark_trains_both_ways():
    results = load("step_logging").main(["--tiny", "--steps", "6", "--rounds", "1", "--log-every", "3"])
    assert results["every step"]["calls"] == 22  # loss, 7 per-size losses, 14 accuracies
    assert results["written steps"]["calls"] < 22 / 2 and results["ratio"]["step"] > 0
