"""Memory-tiered serving: the rerank stage reads the full vectors from a memmap on disk, its shortlist's rows only,
and returns what the in-memory funnel returns (which prunes its rerank; the memmap stage does not)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from mrl.retrieval import Funnel  # noqa: E402
from mrl.retrieval.funnel import write_rerank_memmap  # noqa: E402
from mrl_testing.synthetic import make_mrl_split  # noqa: E402


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_a_memmap_rerank_returns_the_in_memory_funnels_results(tmp_path, metric):
    db, _, q, _ = make_mrl_split(3000, 50, 256, n_classes=30, seed=0)
    funnel = Funnel(((16, 60), (256, 10)), "float", metric, "ivf", {"nprobe": 8})
    in_memory = funnel.build(db)
    on_disk = write_rerank_memmap(db, tmp_path / "full.npy", metric)
    assert isinstance(on_disk, np.memmap) and not on_disk.flags.writeable
    tiered = funnel.build(db, rerank_arrays={256: on_disk})
    s_mem, i_mem = in_memory.search(q, 10)
    s_disk, i_disk = tiered.search(q, 10)
    np.testing.assert_array_equal(i_disk, i_mem)
    np.testing.assert_allclose(s_disk, s_mem, rtol=1e-6, atol=1e-6)
    # the full vectors and the pruning head are out of memory: the first stage's codes and lists remain
    assert tiered.resident_bytes() == in_memory.resident_bytes() - len(db) * (4 * 256 + 4 * 32 + 4)
    assert tiered.resident_bytes() < len(db) * 4 * 256 / 4


def test_a_rerank_array_of_the_wrong_shape_is_a_one_line_error():
    db, _, _, _ = make_mrl_split(500, 5, 64, n_classes=5, seed=0)
    with pytest.raises(ValueError, match=r"rerank_arrays\[64\]: expected a C-contiguous float32 \[500, 64\] array"):
        Funnel(((16, 50), (64, 10))).build(db, rerank_arrays={64: db[:, :32].copy()})
