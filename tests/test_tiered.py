"""`open_rerank_memmap`: the on-disk full vectors of a memory-tiered funnel, mapped read-only with the kernel told to
read no more than the faulted page (MADV_RANDOM); the funnel reading them returns what the in-memory funnel and a
funnel computed by hand return; bad files are one-line errors. And benchmarks/tiered_1m.py serves from it."""

from __future__ import annotations

import importlib.util
import mmap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from mrl.common.errors import InputError  # noqa: E402
from mrl.retrieval import AdaptiveRetriever  # noqa: E402
from mrl.retrieval.funnel import write_rerank_memmap  # noqa: E402
from mrl.retrieval.tiered import advise_random_access, open_rerank_memmap  # noqa: E402
from mrl_testing.synthetic import make_mrl_split  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def vm_flags(path: Path) -> list[str]:
    """The kernel's VmFlags of this process's mappings of ``path`` (``rr``: the random-read hint, MADV_RANDOM)."""
    flags, inside = [], False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split()[0] and ":" not in line.split()[0]:
            inside = line.endswith(str(path))
        elif inside and line.startswith("VmFlags:"):
            flags.append(line)
    return flags


@pytest.mark.parametrize("random_access", [True, False])
def test_the_mapped_rerank_returns_the_in_memory_and_the_hand_computed_funnel(tmp_path, random_access):
    db, _, q, _ = make_mrl_split(2000, 40, 128, n_classes=20, seed=3)
    write_rerank_memmap(db, tmp_path / "full.npy", "cosine")
    mapped = open_rerank_memmap(tmp_path / "full.npy", (2000, 128), random_access=random_access)
    assert isinstance(mapped.base, mmap.mmap)  # a view of the file, not a copy in memory
    assert mapped.dtype == np.float32 and mapped.flags.c_contiguous and not mapped.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        mapped[0, 0] = 1.0
    np.testing.assert_array_equal(mapped, np.load(tmp_path / "full.npy"))
    np.testing.assert_allclose(mapped, unit(db), atol=1e-6)

    funnel = [(16, 50), (128, 10)]
    tiered = AdaptiveRetriever(db, funnel, metric="cosine", rerank_arrays={128: mapped})
    s_tier, i_tier = tiered.search(q, 10)
    s_mem, i_mem = AdaptiveRetriever(db, funnel, metric="cosine").search(q, 10)
    np.testing.assert_array_equal(i_tier, i_mem)
    np.testing.assert_allclose(s_tier, s_mem, rtol=1e-5, atol=1e-5)
    # by hand: the 50 best by the re-normalised 16-d prefix, reranked by the full re-normalised vectors
    short = np.argsort(-(unit(q[:, :16]) @ unit(db[:, :16]).T), axis=1)[:, :50]
    full = np.einsum("qcd,qd->qc", unit(db)[short], unit(q))
    order = np.argsort(-full, axis=1)[:, :10]
    np.testing.assert_array_equal(i_tier, np.take_along_axis(short, order, axis=1))
    np.testing.assert_allclose(s_tier, np.take_along_axis(full, order, axis=1), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="the kernel's mapping flags are Linux's")
def test_the_advice_is_on_the_mapping_only_when_asked(tmp_path):
    db, _, _, _ = make_mrl_split(300, 1, 64, n_classes=3, seed=0)
    for random_access, name in ((True, "advised.npy"), (False, "plain.npy")):
        write_rerank_memmap(db, tmp_path / name, "cosine")
        mapped = open_rerank_memmap(tmp_path / name, random_access=random_access)
        flags = vm_flags(tmp_path / name)
        assert len(flags) == 1, flags  # one mapping of the file: the array's own (the writer's is closed)
        assert (" rr" in flags[0]) == random_access, flags[0]
        assert " wr" not in flags[0]  # read-only
        del mapped


def test_bad_files_are_one_line_errors(tmp_path):
    db, _, _, _ = make_mrl_split(100, 1, 32, n_classes=3, seed=0)
    write_rerank_memmap(db, tmp_path / "full.npy", "cosine")
    missing = tmp_path / "nowhere.npy"
    with pytest.raises(InputError, match=rf"^path='{missing}': no such file \(write it with "):
        open_rerank_memmap(missing)
    with pytest.raises(InputError, match=r"^path='.*full.npy': holds shape \(100, 32\): expected \(100, 64\)$"):
        open_rerank_memmap(tmp_path / "full.npy", (100, 64))
    np.save(tmp_path / "double.npy", db.astype(np.float64))
    with pytest.raises(InputError, match=r"holds a float64 array of shape \(100, 32\): expected a C-ordered float32"):
        open_rerank_memmap(tmp_path / "double.npy")
    np.save(tmp_path / "flat.npy", db[0])
    with pytest.raises(InputError, match=r"holds a float32 array of shape \(32,\): expected a C-ordered float32"):
        open_rerank_memmap(tmp_path / "flat.npy")
    (tmp_path / "text.npy").write_text("not an array\n")
    with pytest.raises(InputError, match=r"^path='.*text.npy': not a .npy file"):
        open_rerank_memmap(tmp_path / "text.npy")
    whole = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(whole[:-4])
    with pytest.raises(InputError, match=r"^path='.*short.npy': is \d+ bytes, short of its shape \(100, 32\)"):
        open_rerank_memmap(tmp_path / "short.npy")
    for error in (InputError("path", missing, "x"),):
        assert "\n" not in str(error)


def test_the_tiered_benchmark_serves_from_the_advised_memmap(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "bench_tiered_1m", Path(__file__).resolve().parents[1] / "benchmarks" / "tiered_1m.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    shape = ["--out", str(tmp_path), "--n", "3000", "--dim", "64", "--queries", "60", "--classes", "30"]
    bench.main(["generate", *shape])
    for flag in ("--random-access", "--no-random-access"):
        row = bench.main(["serve", "tiered", *shape, "--repeats", "1", flag])
        assert row["random_access"] == (flag == "--random-access")
        assert row["holdout_recall"] >= 0.97 and row["recall"] >= 0.99  # tuned to the default target
    # the cold path, its page-cache drop left out (a test does not empty the machine's cache): every phase timed
    bench.drop_page_cache = lambda: None
    row = bench.main(["serve", "tiered", *shape, "--cold", "--nprobe", "8", "--shortlist", "30", "--random-access"])
    assert row["random_access"] and row["holdout_recall"] >= 0.9
    assert all(row[key] > 0 for key in ("ms_cold_single", "ms_cold_batch", "ms_warm", "ms_cached_batch"))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="the kernel's mapping flags are Linux's")
def test_the_written_rerank_memmap_is_advised_by_default(tmp_path):
    """`write_rerank_memmap`'s own return, the documented way to serve a tiered funnel, carries the advice too."""
    db, _, _, _ = make_mrl_split(300, 1, 64, n_classes=3, seed=0)
    for random_access, name in ((True, "advised.npy"), (False, "plain.npy")):
        mapped = write_rerank_memmap(db, tmp_path / name, "cosine", random_access=random_access)
        assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
        flags = vm_flags(tmp_path / name)
        assert len(flags) == 1 and (" rr" in flags[0]) == random_access, flags
        del mapped
    with pytest.raises(ValueError, match=r"^array.base=NoneType: not a memory map"):
        advise_random_access(np.zeros((2, 2), np.float32))
