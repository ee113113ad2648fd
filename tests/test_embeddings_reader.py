"""The one reader of embeddings files: its two views (``read_embeddings`` for search, the public
``mrl.load_embeddings``) agree with the arrays that were written, and a file without labels is a typed error."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mrl
from mrl.common.embeddings import load_embeddings, open_embeddings, read_embeddings
from mrl.common.errors import InputError


def _write(path, embeddings, labels=None, ids=None, meta=None):
    arrays = {"embeddings": embeddings}
    if labels is not None:
        arrays["labels"] = labels
    if ids is not None:
        arrays["ids"] = ids
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


def test_both_views_read_what_was_written(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((5, 8)).astype(np.float16)
    labels = np.array([3, -1, 0, 2, 2])
    path = _write(tmp_path / "e.npz", embeddings, labels, ids=np.array(list("abcde")), meta={"dim": 8})

    stored, got_labels, meta = load_embeddings(path)
    assert stored.dtype == np.float16  # as stored
    np.testing.assert_array_equal(stored, embeddings)
    np.testing.assert_array_equal(got_labels, labels)
    assert meta == {"dim": 8}

    as_float, ids, read_labels, read_meta = read_embeddings(path)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, embeddings.astype(np.float32))
    assert ids.tolist() == list("abcde")
    np.testing.assert_array_equal(read_labels, labels)
    assert read_meta == {"dim": 8}


def test_unlabelled_rows_and_missing_arrays(tmp_path):
    embeddings = np.eye(4, dtype=np.float32)
    unlabelled = _write(tmp_path / "u.npz", embeddings, labels=np.full(4, -1))
    _, ids, labels, meta = read_embeddings(unlabelled)
    assert labels is None and ids.tolist() == [0, 1, 2, 3] and meta == {}
    np.testing.assert_array_equal(load_embeddings(unlabelled)[1], np.full(4, -1))  # as stored

    bare = _write(tmp_path / "bare.npz", embeddings)
    assert read_embeddings(bare)[2] is None
    with pytest.raises(InputError, match=rf"^embeddings='{bare}': no 'labels' array in it") as caught:
        load_embeddings(bare)
    assert caught.value.path == bare


def test_public_name_is_the_one_reader(tmp_path):
    from mrl.evaluation import embeddings as evaluation_embeddings
    from mrl.evaluation import runner

    assert mrl.load_embeddings is load_embeddings
    assert evaluation_embeddings.load_embeddings is load_embeddings is runner.load_embeddings
    assert evaluation_embeddings.read_embeddings is read_embeddings


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"vectors": np.ones((2, 2))}, r"no 'embeddings' array in it \(keys: vectors\)"),
        ({"embeddings": np.ones(3)}, r"embeddings of shape \(3,\); expected \(items, dims\)"),
        ({"embeddings": np.array([["a", "b"]])}, r"embeddings of dtype <U1; expected numbers"),
        ({"embeddings": np.array([[1.0, np.nan]]), "labels": np.zeros(1)}, r"1 row\(s\) hold NaN or inf"),
    ],
)
def test_bad_files_are_one_line_input_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    for read in (open_embeddings, read_embeddings, load_embeddings):
        with pytest.raises(InputError, match=rf"^embeddings='{path}': {message}"):
            read(path)
