"""AdANNS-IVF with two prefixes (`mrl.retrieval.prefix_ivf.PrefixIVF`): the lists a query probes are chosen on the
coarse prefix, what they hold is ranked on the scan prefix; checked against the same search done in numpy from the
index's own centroids."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from mrl.retrieval import AdaptiveRetriever, Funnel  # noqa: E402
from mrl.retrieval.flat import faiss, prefix  # noqa: E402
from mrl.retrieval.prefix_ivf import PrefixIVF  # noqa: E402
from mrl_testing.synthetic import make_mrl_split  # noqa: E402


def data(n=4000, nq=40, dim=64):
    db, _, q, _ = make_mrl_split(n, nq, dim, n_classes=30, seed=4)
    return db, q


@pytest.mark.parametrize(("scan", "coarse", "l2"), [(16, 32, False), (32, 8, False), (16, 32, True)])
def test_probed_lists_come_from_the_coarse_prefix_and_are_ranked_on_the_scan_prefix(scan, coarse, l2):
    db, q = data()
    normalize = not l2
    x_scan, x_coarse = prefix(db, scan, normalize), prefix(db, coarse, normalize)
    q_scan, q_coarse = prefix(q, scan, normalize), prefix(q, coarse, normalize)
    index = PrefixIVF(x_scan, x_coarse, nlist=40, l2=l2)
    index.nprobe = 3
    scores, ids = index.search(q_scan, q_coarse, 15)
    centroids = faiss.rev_swig_ptr(index.quantizer.get_xb(), 40 * coarse).reshape(40, coarse).astype(np.float64)

    def closeness(a, b):  # higher is nearer
        return -((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) if l2 else a @ b.T

    home = np.argmax(closeness(x_coarse.astype(np.float64), centroids), axis=1)  # each item's list
    probed = np.argsort(-closeness(q_coarse.astype(np.float64), centroids), axis=1, kind="stable")[:, :3]
    for row in range(len(q)):
        members = np.flatnonzero(np.isin(home, probed[row]))
        s = closeness(q_scan[row : row + 1].astype(np.float64), x_scan[members].astype(np.float64))[0]
        want = members[np.argsort(-s, kind="stable")[:15]]
        assert set(ids[row][ids[row] >= 0]) == set(want), row
        got = -scores[row][: len(want)] if l2 else scores[row][: len(want)]
        np.testing.assert_allclose(got, np.sort(s)[::-1][: len(want)], rtol=1e-4, atol=1e-4)


def test_a_coarse_size_equal_to_the_scan_size_is_the_plain_ivf():
    db, q = data()
    plain = AdaptiveRetriever(db, [(16, 50), (64, 10)], index="ivf", nprobe=4)
    same = Funnel(((16, 50), (64, 10)), index="ivf", options={"nprobe": 4, "coarse_size": 16}).build(db)
    for a, b in zip(plain.search(q, 10), same.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    wider = AdaptiveRetriever(db, [(16, 50), (64, 10)], index="ivf", nprobe=4, coarse_size=32)
    assert isinstance(wider.index, PrefixIVF) and wider.index.coarse_size == 32
    nlist = wider.index.nlist
    assert wider.mflops_per_query() == pytest.approx((nlist * 32 + 4 * 4000 / nlist * 16 + 50 * 64) / 1e6)
    assert wider.resident_bytes() == 4000 * wider.bytes_per_item() + 4000 * 8 + nlist * 32 * 4
    with pytest.raises(ValueError, match=r"^coarse_size must be in \[1, 64\]"):
        AdaptiveRetriever(db, [(16, 50), (64, 10)], index="ivf", coarse_size=65)


def _search_in_child(index, q_scan, q_coarse, out):
    out.put(index.search(q_scan, q_coarse, 5)[1])


def test_a_forked_child_searches_with_threads_of_its_own():
    """The worker threads are the parent's: a child forked after a search (a data loader worker) makes its own."""
    import multiprocessing

    db, q = data(n=2000, nq=64)
    index = PrefixIVF(prefix(db, 16, True), prefix(db, 32, True), nlist=20, l2=False)
    index.nprobe = 2
    q_scan, q_coarse = prefix(q, 16, True), prefix(q, 32, True)
    _, ids = index.search(q_scan, q_coarse, 5)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_search_in_child, args=(index, q_scan, q_coarse, out))
    child.start()
    np.testing.assert_array_equal(out.get(timeout=60), ids)
    child.join(timeout=60)
    assert child.exitcode == 0
