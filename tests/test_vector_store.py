"""The `VectorStore` contract, one suite for every store (LanceDB, Milvus Lite): a load is described as it was made,
its exact first stage serves the in-process funnel's neighbours, an interrupted load resumes without duplicates,
and a mismatched load is a one-line error. A store whose client is not installed is skipped (as in test_lancedb.py
and test_vector_db.py: Milvus needs pymilvus and milvus_lite)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from mrl.common.errors import is_config_error  # noqa: E402
from mrl.retrieval import AdaptiveRetriever, Funnel  # noqa: E402
from mrl.retrieval.backends import DATABASES, default_uri, store_class  # noqa: E402
from mrl.retrieval.database import LoadSpec  # noqa: E402
from mrl.retrieval.store import VectorStore  # noqa: E402
from mrl_testing.synthetic import make_mrl_split  # noqa: E402

CLIENTS = {"lancedb": ("lancedb",), "milvus": ("pymilvus", "milvus_lite")}


@pytest.fixture(scope="module")
def data():
    return make_mrl_split(900, 30, 32, n_classes=10, seed=7)


@pytest.fixture(params=DATABASES)
def store(request, tmp_path) -> VectorStore:
    for client in CLIENTS[request.param]:
        pytest.importorskip(client)
    return store_class(request.param)(default_uri(request.param, tmp_path))


def test_every_backend_is_a_vector_store():
    assert set(DATABASES) == set(CLIENTS)
    for name in DATABASES:
        cls = store_class(name)
        assert issubclass(cls, VectorStore) and cls.name == name
        assert ("float", "flat") in cls.supported and issubclass(cls.funnel_class, object)


def test_a_load_is_described_and_serves_the_in_process_funnel(store, data):
    db, db_y, q, _ = data
    spec = LoadSpec(collection="items", first_size=8, labels=db_y, batch_size=400)
    summary = store.load(db, spec, progress=False)
    assert (summary["count"], summary["dim"], summary["inserted"], summary["skipped"]) == (900, 32, 900, 0)
    assert summary["collection"] == "items" and not summary["resumed"]
    assert summary["funnel"] == Funnel(((8, 200), (32, 10)))
    meta = store.describe()  # the only mrl collection there
    assert (meta.dim, meta.count, meta.first_size, meta.format, meta.index, meta.metric) == (
        32, 900, 8, "float", "flat", "cosine"
    )  # fmt: skip
    assert meta.complete and Funnel.from_dict(meta.funnel) == summary["funnel"]
    served = store.funnel()
    scores, ids = served.search(q, 10)
    ref_scores, ref_ids = AdaptiveRetriever(db, [(8, 200), (32, 10)]).search(q, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)
    _, labels = served.items(ids[:2])
    np.testing.assert_array_equal(labels, db_y[ids[:2]])
    shorter = store.funnel("items", funnel=[(8, 50), (32, 5)])
    np.testing.assert_array_equal(shorter.search(q, 5)[1], AdaptiveRetriever(db, [(8, 50), (32, 5)]).search(q, 5)[1])


def test_an_interrupted_load_resumes_without_duplicates(store, data, monkeypatch):
    db, db_y, q, _ = data
    spec = LoadSpec(collection="items", first_size=8, labels=db_y, batch_size=200)
    real_insert, calls = store.insert, []

    def failing_insert(load, rows, resuming):
        calls.append(len(rows))
        if len(calls) == 3:
            raise KeyboardInterrupt  # stopped before the third batch went in
        return real_insert(load, rows, resuming)

    monkeypatch.setattr(store, "insert", failing_insert)
    with pytest.raises(KeyboardInterrupt):
        store.load(db, spec, progress=False)
    monkeypatch.setattr(store, "insert", real_insert)
    assert not store.describe("items").complete  # the record says the load did not finish
    resumed = store.load(db, spec, progress=False)
    assert resumed["resumed"] and (resumed["skipped"], resumed["inserted"]) == (400, 500)
    assert store.describe("items").complete
    again = store.load(db, spec, progress=False)  # a finished load: nothing to do
    assert (again["skipped"], again["inserted"]) == (900, 0)
    np.testing.assert_array_equal(
        store.funnel().search(q, 10)[1], AdaptiveRetriever(db, [(8, 200), (32, 10)]).search(q, 10)[1]
    )
    replaced = store.load(db, spec, drop=True, progress=False)
    assert not replaced["resumed"] and replaced["inserted"] == 900


def test_a_mismatched_load_is_a_one_line_error(store, data):
    db, db_y, _, _ = data
    store.load(db, LoadSpec(collection="c", first_size=8), progress=False)
    cases = [
        (db[:, :16], LoadSpec(collection="c", first_size=8), r"^collection='c': holds 900 32-wide embeddings"),
        (db, LoadSpec(collection="c", first_size=16), r"^first_size=16: collection='c' was built with first_size=8"),
        (db, LoadSpec(collection="d", format="bits", index="hnsw"), rf"^(index='hnsw': {store.engine} has no hnsw "
         r"index over bits|format='bits': Milvus Lite .* has no binary vector fields)"),
        (db, LoadSpec(collection="d", batch_size=0), r"^batch_size=0: rows per insert, a positive integer"),
    ]  # fmt: skip
    for x, spec, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            store.load(x, spec, progress=False)
        assert is_config_error(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"^collection='nope': not in "):
        store.describe("nope")


def test_load_settings_are_one_value_with_keywords_for_each_field():
    spec = LoadSpec(first_size=8)
    assert spec.with_options({"format": "int8"}) == LoadSpec(first_size=8, format="int8")
    assert spec.with_options({}) is spec
    with pytest.raises(TypeError, match=r"^first=8: not a load setting; expected some of collection, first_size"):
        spec.with_options({"first": 8})
