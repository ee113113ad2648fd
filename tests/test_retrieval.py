"""Funnel retrieval: exactness against FAISS, recall on MRL-like data, approximate first stages, errors."""

import numpy as np
import pytest
import torch

from mrl.retrieval import AdaptiveRetriever, FlatIndex, exact_search, prefix, validate_funnel
from mrl_testing.synthetic import coordinate_profiles, make_mrl_like, make_mrl_split

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def data():
    return make_mrl_split(6000, 100, 128, n_classes=50, seed=3)


def _recall(ids, ref):
    return float(np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(ids, ref)]))


def _np_funnel(db, q, funnel, k):
    """Brute-force numpy funnel with cosine prefixes, to check the FAISS implementation."""

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    m1, c1 = funnel[0]
    s = unit(q[:, :m1]) @ unit(db[:, :m1]).T
    ids = np.argsort(-s, axis=1)[:, :c1]
    for m, c in funnel[1:]:
        d, qq = unit(db[:, :m]), unit(q[:, :m])
        s = np.einsum("qd,qcd->qc", qq, d[ids])
        ids = np.take_along_axis(ids, np.argsort(-s, axis=1)[:, :c], axis=1)
    return ids[:, :k]


def test_single_full_stage_equals_faiss_flat_ip(data):
    db, _, q, _ = data
    r = AdaptiveRetriever(db, [(db.shape[1], 50)], metric="cosine")
    scores, ids = r.search(q, 10)
    a, b = db.copy(), q.copy()
    faiss.normalize_L2(a)
    faiss.normalize_L2(b)
    ref = faiss.IndexFlatIP(db.shape[1])
    ref.add(a)
    ref_s, ref_i = ref.search(b, 10)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_array_equal(scores, ref_s)
    assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_single_full_stage_equals_faiss_flat_l2(data):
    db, _, q, _ = data
    scores, ids = AdaptiveRetriever(db, [(db.shape[1], 5)], metric="l2").search(q, 5)
    ref = faiss.IndexFlatL2(db.shape[1])
    ref.add(db)
    ref_s, ref_i = ref.search(q, 5)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_array_equal(scores, ref_s)


def test_wide_flat_stage_equals_default_faiss_beyond_one_tile():
    # more rows than one enlarged BLAS tile (32768), compared with FAISS at its default tiling
    x = np.random.default_rng(0).standard_normal((70_000, 96)).astype(np.float32)
    q = np.random.default_rng(1).standard_normal((50, 96)).astype(np.float32)
    defaults = (faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs)
    scores, ids = AdaptiveRetriever(x, [(96, 20)], metric="ip").search(q, 20)
    assert (
        faiss.cvar.distance_compute_blas_query_bs,
        faiss.cvar.distance_compute_blas_database_bs,
    ) == defaults
    ref = faiss.IndexFlatIP(96)
    ref.add(x)
    ref_s, ref_i = ref.search(q, 20)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_array_equal(scores, ref_s)


@pytest.mark.parametrize("l2", [False, True])
def test_narrow_flat_scan_matches_faiss(l2):
    # 16 dims: torch product tiles + FAISS heaps; several query and row tiles, a ragged last tile
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40_000, 16)).astype(np.float32)
    q = rng.standard_normal((300, 16)).astype(np.float32)
    index = FlatIndex(x, l2=l2)
    assert index.faiss_index is None
    threads = torch.get_num_threads()
    scores, ids = index.search(q, 25, q_block=128, db_block=7000)
    assert torch.get_num_threads() == threads
    ref = faiss.IndexFlatL2(16) if l2 else faiss.IndexFlatIP(16)
    ref.add(x)
    ref_s, ref_i = ref.search(q, 25)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-4)
    # fewer rows than k: FAISS's sentinels (-1 ids) fill the tail, as IndexFlat does
    small = FlatIndex(x[:5], l2=l2)
    s_small, i_small = small.search(q[:3], 8)
    ref_small = faiss.IndexFlatL2(16) if l2 else faiss.IndexFlatIP(16)
    ref_small.add(x[:5])
    r_s, r_i = ref_small.search(q[:3], 8)
    np.testing.assert_array_equal(i_small, r_i)
    np.testing.assert_allclose(s_small, r_s, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=r"queries must be \[Q, 16\]"):
        index.search(q[:, :8], 5)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(q, 0)


def test_rerank_stages_match_bruteforce_funnel(data):
    db, _, q, _ = data
    funnel = [(8, 300), (32, 60), (128, 10)]
    scores, ids = AdaptiveRetriever(db, funnel).search(q, 10)
    np.testing.assert_array_equal(ids, _np_funnel(db, q, funnel, 10))
    # last-stage scores are full cosine similarities of the returned items, sorted best first
    unit = db / np.linalg.norm(db, axis=1, keepdims=True)
    qu = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", qu, unit[ids]), rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("kind", ["mrl", "gaussian"])
def test_bound_pruning_changes_nothing(data, metric, kind):
    db, _, q, _ = data
    if kind == "gaussian":  # no energy decay along the coordinates: the bound prunes (almost) nothing
        rng = np.random.default_rng(0)
        db = rng.standard_normal(db.shape).astype(np.float32)
        q = rng.standard_normal(q.shape).astype(np.float32)
    for funnel, k in (([(16, 200), (128, 1)], 1), ([(8, 300), (128, 10)], 10), ([(8, 300), (128, 40)], 5)):
        s_on, i_on = AdaptiveRetriever(db, funnel, metric=metric).search(q, k)
        s_off, i_off = AdaptiveRetriever(db, funnel, metric=metric, prune=False).search(q, k)
        np.testing.assert_array_equal(i_on, i_off)
        np.testing.assert_array_equal(s_on, s_off)
    if kind == "mrl":  # ... and on front-loaded data it skips most candidates
        r = AdaptiveRetriever(db, [(16, 200), (128, 1)], metric=metric)
        q_head, q_full = q[:, :16].copy(), q.copy()
        if metric == "cosine":
            faiss.normalize_L2(q_head)
            faiss.normalize_L2(q_full)
        _, shortlist = r.index.search(q_head, 200)
        kept = r._prune(q_full, r._stage_bounds[0], shortlist, 1, metric == "l2") >= 0
        assert kept.mean() < 0.6  # measured 0.42 (cosine), 0.07 (ip), 0.40 (l2) at 128 dims, head 16


def test_funnel_recall_on_mrl_like_data(data):
    db, db_y, q, q_y = data
    _, exact = exact_search(db, q, 10)
    _, ids = AdaptiveRetriever(db, [(16, 200), (128, 10)]).search(q, 10)
    # Measured 1.0 on this data; 16 coordinates carry most of the class signal.
    assert _recall(ids, exact) >= 0.95
    # A much thinner shortlist at 8 dims still finds most true neighbours (measured 0.988).
    _, thin = AdaptiveRetriever(db, [(8, 50), (128, 10)]).search(q, 10)
    assert _recall(thin, exact) >= 0.8
    acc_exact = np.mean(db_y[exact[:, 0]] == q_y)
    acc_funnel = np.mean(db_y[ids[:, 0]] == q_y)
    assert acc_funnel >= acc_exact - 0.02


def test_hnsw_and_ivf_first_stage_close_to_exact(data):
    db, _, q, _ = data
    funnel = [(16, 100), (128, 10)]
    _, flat = AdaptiveRetriever(db, funnel).search(q, 10)
    hnsw = AdaptiveRetriever(db, funnel, index="hnsw", hnsw_m=16)
    _, h_ids = hnsw.search(q, 10)
    assert _recall(h_ids, flat) >= 0.95
    assert np.isfinite(hnsw.mflops_per_query())
    # a beam narrower than the shortlist is widened, so no -1 padding reaches the rerank
    narrow = AdaptiveRetriever(db, funnel, index="hnsw", hnsw_m=16, ef_search=8)
    assert narrow.index.hnsw.efSearch == 100
    assert (narrow.search(q, 10)[1] >= 0).all()
    # IVF probing every list is exhaustive, so it must equal the flat funnel
    ivf = AdaptiveRetriever(db, funnel, index="ivf", nlist=16, nprobe=16)
    _, i_ids = ivf.search(q, 10)
    np.testing.assert_array_equal(i_ids, flat)


def _bits(x, db, m):
    """Bit j: coordinate j of the re-normalised m-prefix above the database's mean of it (float32)."""
    center = prefix(db, m, True).astype(np.float64).mean(0).astype(np.float32)
    return prefix(x, m, True) > center


def _hamming(q, db, m):
    """Hamming distances of the bit patterns of the first m coordinates, counted coordinate by coordinate."""
    return (_bits(q, db, m)[:, None, :] != _bits(db, db, m)[None, :, :]).sum(-1)


def test_binary_first_stage_shortlists_by_hamming_then_reranks_exactly(data):
    db, db_y, q, q_y = data
    m1, c1, k = 32, 150, 5
    r = AdaptiveRetriever(db, [(m1, c1), (128, k)], index="binary")
    scores, ids = r.search(q, k)
    ham = _hamming(q, db, m1)
    cut = np.sort(ham, axis=1)[:, c1 - 1 : c1]  # the shortlist's worst Hamming distance
    # every result was shortlisted: nothing beyond the c1-th smallest distance comes back
    assert (np.take_along_axis(ham, ids, axis=1) <= cut).all()
    # items strictly inside the cut are surely shortlisted, so none of them may beat the results at 128 dims
    unit = db / np.linalg.norm(db, axis=1, keepdims=True)
    qu = q / np.linalg.norm(q, axis=1, keepdims=True)
    cos = qu @ unit.T
    np.testing.assert_allclose(scores, np.take_along_axis(cos, ids, axis=1), rtol=1e-5, atol=1e-6)
    inside_best = np.sort(np.where(ham < cut, cos, -np.inf), axis=1)[:, -k:][:, ::-1]
    assert (scores >= inside_best - 1e-5).all()
    # the sign bits of 32 coordinates keep most of the class signal on MRL-like data
    _, exact = exact_search(db, q, 1)
    assert np.mean(db_y[ids[:, 0]] == q_y) >= np.mean(db_y[exact[:, 0]] == q_y) - 0.05
    # 4 bytes per item scanned with 64-bit popcounts, plus the rerank
    assert r.mflops_per_query() == pytest.approx((len(db) * m1 / 64 + c1 * 128) / 1e6)


def test_binary_first_stage_of_part_of_a_byte_and_its_error(data):
    db, _, q, _ = data
    m1, c1 = 12, 60  # 12 bits in 2 bytes: the 4 padding bits are 0 on both sides and add no distance
    _, ids = AdaptiveRetriever(db, [(m1, c1), (128, 3)], index="binary").search(q, 3)
    ham = _hamming(q, db, m1)
    assert (np.take_along_axis(ham, ids, axis=1) <= np.sort(ham, axis=1)[:, c1 - 1 : c1]).all()
    with pytest.raises(ValueError, match=r"index='binary' shortlists by Hamming distance and needs a float stage"):
        AdaptiveRetriever(db, [(32, 5)], index="binary")


def test_l2_funnel_and_single_query(data):
    db, _, q, _ = data
    r = AdaptiveRetriever(db, [(16, 100), (128, 5)], metric="l2")
    s, i = r.search(q[0], 5)  # a single 1-D query is accepted
    assert s.shape == (1, 5) and np.all(np.diff(s, axis=1) >= 0)  # distances ascend
    np.testing.assert_allclose(s[0], ((db[i[0]] - q[0]) ** 2).sum(1), rtol=1e-4)


@pytest.mark.parametrize(
    "funnel, match",
    [
        ([], "funnel must be a non-empty"),
        ([(16, 10), (8, 5)], r"funnel sizes must strictly increase: funnel\[1\] size 8"),
        ([(16, 10), (16, 5)], r"funnel sizes must strictly increase"),
        ([(16, 10), (200, 5)], r"funnel\[1\] size 200 must be in \[1, 128\]"),
        ([(16, 10), (64, 20)], r"funnel candidates must not increase: funnel\[1\] candidates 20"),
        ([(16, 0)], r"funnel\[0\] candidates 0 must be positive"),
        ([(16,)], r"funnel\[0\] must be a \(size, candidates\) pair"),
        ([(16.0, 10)], r"funnel\[0\] must hold two integers"),
    ],
)
def test_bad_funnel_errors(funnel, match):
    with pytest.raises(ValueError, match=match):
        validate_funnel(funnel, 128)


def test_bad_search_arguments(data):
    db, _, q, _ = data
    r = AdaptiveRetriever(db[:500], [(16, 50), (128, 10)])
    with pytest.raises(ValueError, match="last funnel stage"):
        r.search(q, 11)
    with pytest.raises(ValueError, match=r"queries must be \[Q, 128\]"):
        r.search(q[:, :64], 5)
    with pytest.raises(ValueError, match="metric"):
        AdaptiveRetriever(db[:500], [(16, 5)], metric="dot")
    with pytest.raises(ValueError, match="index"):
        AdaptiveRetriever(db[:500], [(16, 5)], index="lsh")


def test_mflops_per_query():
    db = np.zeros((1000, 64), dtype=np.float32)
    r = AdaptiveRetriever(db, [(16, 200), (32, 50), (64, 10)], metric="ip")
    # N*m1 + c1*m2 + c2*m3 = 16000 + 6400 + 3200
    assert r.mflops_per_query() == pytest.approx(25_600 / 1e6)
    assert r.mflops_per_query(count_multiply_add_as=2) == pytest.approx(51_200 / 1e6)
    x = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    h = AdaptiveRetriever(x, [(16, 20)], index="hnsw", metric="ip")
    assert np.isnan(h.mflops_per_query())  # HNSW cost is measured during search
    h.search(x[:10], 5)
    assert 0 < h.mflops_per_query() <= 300 * 16 / 1e6 * 1.5


def test_synthetic_generator_is_front_loaded():
    signal, noise = coordinate_profiles(64)
    assert np.all(np.diff(signal / noise) < 0)  # SNR falls along the coordinates
    x, y = make_mrl_like(2000, 64, n_classes=10, seed=0)
    x2, y2 = make_mrl_like(2000, 64, n_classes=10, seed=0)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.dtype == np.float32 and x.shape == (2000, 64)
    var = x.var(axis=0)
    assert var[:8].mean() > 5 * var[-8:].mean()


# ------------------------------------------------------------------ ties: the lowest id first, whatever k


def _lexsort_top(scores: np.ndarray, k: int, descending: bool = True) -> np.ndarray:
    """Reference top-k in numpy: best score first, the lowest id first among equal scores."""
    ids = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.lexsort((ids, -scores if descending else scores), axis=1)[:, :k]


@pytest.fixture(scope="module")
def tied():
    """A database where most items score alike: 1000 rows of 8 distinct vectors of -127, 0 and 127 (each repeated;
    integer arithmetic, so equal vectors score exactly alike in any summation order, and int8 codes are exact),
    three queries near them and a zero query (every inner product 0)."""
    rng = np.random.default_rng(5)
    base = rng.choice(np.array([-127, 0, 127], np.float32), (8, 96))
    db = base[rng.integers(0, 8, 1000)]
    q = np.concatenate([base[:3], np.zeros((1, 96), np.float32)])
    q[:3, :4] = 127.0  # near, not equal, to their base vector
    return db, q


@pytest.mark.parametrize("width", [16, 96])  # torch tiles + FAISS heaps, and FAISS IndexFlatIP
@pytest.mark.parametrize("l2", [False, True])
def test_flat_search_keeps_and_lists_the_lowest_ids_among_equals(tied, width, l2):
    db, q = tied
    x, qq = db[:, :width].astype(np.float64), q[:, :width].astype(np.float64)
    ref = ((qq[:, None] - x[None]) ** 2).sum(-1) if l2 else qq @ x.T
    index = FlatIndex(db[:, :width], l2=l2)
    top = {}
    for k in (1, 5, 150, 400):
        _, ids = index.search(q[:, :width], k)
        np.testing.assert_array_equal(ids, _lexsort_top(ref, k, descending=not l2))
        top[k] = ids
    for k in (1, 5, 150):  # the first j of a top-k search are the top-j search: a top-1 never depends on k
        np.testing.assert_array_equal(top[400][:, :k], top[k])


@pytest.mark.parametrize("index", ["flat", "int8", "binary", "hnsw"])
def test_funnels_break_ties_by_lowest_id_in_every_stage(tied, index):
    db, q = tied
    ref = q.astype(np.float64) @ db.T.astype(np.float64)  # exact: integers
    retriever = AdaptiveRetriever(db, [(16, 300), (96, 50)], metric="ip", index=index)
    scores, ids = retriever.search(q, 50)
    for k in (1, 7):
        np.testing.assert_array_equal(retriever.search(q, k)[1], ids[:, :k])
    _, shortlist = retriever.shortlist(q)
    if index in ("flat", "int8"):  # exact first stages keep the lowest ids among equals too
        np.testing.assert_array_equal(shortlist, _lexsort_top(q[:, :16].astype(np.float64) @ db[:, :16].T, 300))
    for row in range(len(q)):  # the rerank: the best of the shortlist, the lowest ids among equal scores
        cand = shortlist[row][shortlist[row] >= 0]
        expected = cand[np.lexsort((cand, -ref[row, cand]))[:50]]
        np.testing.assert_array_equal(ids[row], expected)
    assert (scores[3] == 0).all()  # the zero query ties everything: the shortlist's lowest ids, in order


# ------------------------------------------------------------------ the int8 first stage


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_int8_first_stage_scores_the_decoded_codes(data, metric):
    """Against the decoded vectors of a symmetric per-dimension int8 codec written out here in numpy (scale
    max |x| / 127, codes rounded and clipped), searched by brute force."""
    db, _, q, _ = data
    m, k = 24, 20
    x, qq = prefix(db, m, metric == "cosine"), prefix(q, m, metric == "cosine")
    scale = (np.abs(x).max(axis=0) / 127.0).astype(np.float32)
    codes = np.clip(np.rint(x / scale), -127, 127)
    decoded = codes.astype(np.float64) * scale
    if metric == "l2":
        ref = ((qq.astype(np.float64)[:, None] - decoded[None]) ** 2).sum(-1)
    else:
        ref = qq.astype(np.float64) @ decoded.T
    retriever = AdaptiveRetriever(db, [(m, k)], metric=metric, index="int8")
    scores, ids = retriever.search(q, k)
    expected = _lexsort_top(ref, k, descending=metric != "l2")
    np.testing.assert_allclose(scores, np.take_along_axis(ref, expected, axis=1), rtol=1e-4, atol=1e-4)
    assert (ids == expected).mean() > 0.99  # float32 against float64 may swap scores equal to 1e-6
    assert retriever.first_stage_bytes() == m + (4 if metric == "l2" else 0)
    # a full-width rerank after it: the exact neighbours, from a quarter of the first stage's bytes
    funnel = AdaptiveRetriever(db, [(m, 200), (128, 10)], metric=metric, index="int8")
    _, exact = exact_search(db, q, 10, metric=metric)
    assert _recall(funnel.search(q, 10)[1], exact) >= 0.98
    assert funnel.mflops_per_query() == pytest.approx((len(db) * m + 200 * 128) / 1e6)


def test_one_int8_codec_serves_the_search_and_the_storage_evaluation(data):
    import mrl.evaluation.storage as storage
    from mrl.retrieval import dequantize_int8, quantize_int8

    assert storage.quantize_int8 is quantize_int8 and storage.dequantize_int8 is dequantize_int8
    db = prefix(data[0], 32, True)
    db[:, 5] = 0  # a dimension that is all zeros gets scale 1
    codes, scale = quantize_int8(db)
    assert codes.dtype == np.int8 and scale.dtype == np.float32 and scale[5] == 1.0
    np.testing.assert_allclose(scale[:5], np.abs(db[:, :5]).max(axis=0) / 127, rtol=1e-6)
    assert np.abs(codes).max(axis=0)[:5].tolist() == [127] * 5  # each dimension's largest value is +-127
    assert np.all(np.abs(dequantize_int8(codes, scale) - db) <= scale / 2 + 1e-6)
    clipped, _ = quantize_int8(3 * db, scale)  # queries quantised with the database's scales clip at 127
    assert np.abs(clipped.astype(int)).max() == 127


def test_shortlist_and_bytes_per_item(data):
    db, _, q, _ = data
    retriever = AdaptiveRetriever(db, [(16, 100), (128, 10)])
    scores, ids = retriever.shortlist(q)
    ref_s, ref_i = exact_search(db, q, 100, size=16)
    np.testing.assert_array_equal(ids, ref_i)
    assert retriever.first_stage_bytes() == 64 and retriever.bytes_per_item() == 64 + 512 + 64 + 4
    assert AdaptiveRetriever(db, [(64, 100), (128, 10)], index="binary").first_stage_bytes() == 8
    assert AdaptiveRetriever(db, [(16, 100), (128, 10)], prune=False).bytes_per_item() == 64 + 512
