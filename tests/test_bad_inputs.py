"""A user's mistakes across the eight commands, each ending in one line: a non-zero exit, no traceback, a last
stderr line that names the key or the file, and nothing left that looks like a finished run.

The commands run in this process (``main(argv)``, or the Hydra entry points with ``sys.argv`` set) so the suite
stays fast; ``tests/test_bad_input.py`` drives the training-time checks (nesting lists, data roots, NaN losses).
Add a case here whenever a user finds a new mistake."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrl_testing.configs import FAST, compose_train

FINISHED = {"results.json", "report.md", "summary.md", "embedder.pt2", "index.json", ".done.json"}
FINISHED_SUFFIXES = {".ckpt", ".npz", ".csv", ".lance", ".db"}


def _png(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(path)


def _npz(path: Path, embeddings, **extra) -> str:
    np.savez(path, embeddings=np.asarray(embeddings, dtype=np.float32), **extra)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """A trained digits run, embeddings files good and bad, image folders, tables, and a file where a folder
    would have to be created (``blocked/...`` cannot be written, whoever runs the tests)."""
    from mrl.training.procedure import run_training

    root = tmp_path_factory.mktemp("bad_inputs")
    run = root / "run"
    run_training(compose_train([*FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=2"], run), run)
    rng = np.random.default_rng(0)
    db = rng.normal(size=(30, 64))
    nan_q = db[:5].copy()
    nan_q[2, 3] = np.nan
    inf_db = db.copy()
    inf_db[7, 0] = np.inf
    good = _npz(root / "db.npz", db)
    truncated = root / "truncated.npz"
    truncated.write_bytes(Path(good).read_bytes()[:300])
    text = root / "text.npz"
    text.write_text("not an archive\n")
    np.savez(root / "pickled.npz", embeddings=np.array([{"a": 1}], dtype=object))
    np.savez(root / "no_embeddings.npz", vectors=db)
    images = root / "images"
    for i in range(3):
        _png(images / f"{i}.png", 40 * i)
    (root / "broken_images").mkdir()
    for i in range(2):
        (root / "broken_images" / f"{i}.png").write_bytes(b"\x89PNG not really")
    (root / "empty").mkdir()
    blocked = root / "blocked"
    blocked.write_text("a file, not a folder\n")
    src = root / "src"  # an ImageNet-layout folder whose train images are all unreadable
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (src / split / name).mkdir(parents=True)
            (src / split / name / "0.jpg").write_bytes(b"not a jpeg")
    odd = root / "odd_classes"  # val holds other classes than train
    _png(odd / "train" / "cat" / "0.png")
    _png(odd / "val" / "dog" / "0.png")
    (root / "bare" / "train").mkdir(parents=True)
    pairs = root / "two_pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": f"a {i}", "positive": f"p {i}"}) + "\n" for i in range(2)))
    broken = root / "broken.jsonl"
    broken.write_text('{"anchor": "a", "positive": "p"}\n{"anchor": "b", "positive": \n')
    garbage = root / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    return {
        "root": str(root),
        "run": str(run),
        "db": good,
        "q": _npz(root / "q.npz", db[:5]),
        "narrow": _npz(root / "narrow.npz", db[:5, :32]),
        "nan_q": _npz(root / "nan_q.npz", nan_q),
        "inf_db": _npz(root / "inf_db.npz", inf_db),
        "truncated": str(truncated),
        "text": str(text),
        "pickled": str(root / "pickled.npz"),
        "no_embeddings": str(root / "no_embeddings.npz"),
        "images": str(images),
        "broken_images": str(root / "broken_images"),
        "empty": str(root / "empty"),
        "blocked": str(blocked),
        "src": str(src),
        "odd": str(odd),
        "bare": str(root / "bare"),
        "pairs": str(pairs),
        "broken": str(broken),
        "garbage": str(garbage),
        "missing": str(root / "missing"),
    }


def _finished(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.name in FINISHED or p.suffix in FINISHED_SUFFIXES}


def _invoke(command: str, argv: list[str], capfd) -> tuple[object, str, str]:
    """Run ``command`` in this process; (exit code, stdout, stderr). Logging handlers the command installs are
    removed afterwards, so they do not write into a later test's closed capture."""
    import importlib

    module = importlib.import_module(
        {"train": "mrl.cli.train", "eval": "mrl.cli.evaluate"}.get(command, f"mrl.cli.{command}")
    )
    loggers = [logging.getLogger(), logging.getLogger("mrl")]
    saved = [(log, list(log.handlers), log.level) for log in loggers]
    code: object = 0
    try:
        if command in ("train", "eval"):
            old_argv = sys.argv
            sys.argv = [f"mrl-{command}", *argv]
            try:
                module.main()
            finally:
                sys.argv = old_argv
        else:
            module.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    finally:
        for log, handlers, level in saved:
            log.handlers[:] = handlers
            log.setLevel(level)
    out, err = capfd.readouterr()
    return code, out, err


def _train(*overrides: str):
    return lambda w, tmp: [*FAST, *overrides, f"hydra.run.dir={tmp / 'run'}"]


def _eval(*overrides: str):
    return lambda w, tmp: [f"run={w['run']}", *overrides, f"output_dir={tmp / 'eval'}", f"hydra.run.dir={tmp}"]


def _args(*parts: str):
    """argv with ``{name}`` filled from the world and ``{tmp}`` the case's own folder."""
    return lambda w, tmp: [part.format(**w, tmp=tmp) for part in parts]


TEXT_PAIRS = [  # the fast overrides without the image ones, on a text pairs set
    *(a for a in FAST if not a.startswith(("model.backbone.", "data.image_size", "data.batch_size"))),
    "data=text_pairs",
    "model=minilm_pairs",
    "data.num_workers=0",
]

CASES = [
    # mrl-train: wrong types and values, named before anything is built
    ("train", _train("trainer.max_epochs=x"), r"^ConfigError: trainer\.max_epochs='x': expected an integer"),
    ("train", _train("seed=abc"), r"^ConfigError: seed='abc': expected an integer"),
    ("train", _train("data.batch_size=big"), r"^ConfigError: data\.batch_size='big': expected an integer >= 1"),
    ("train", _train("data.batch_size=0"), r"^ConfigError: data\.batch_size=0: expected an integer >= 1"),
    ("train", _train("model.optimizer.lr=-1"), r"^ConfigError: model\.optimizer\.lr=-1: expected a number > 0"),
    ("train", _train("model.optimizer.lr=fast"), r"^ConfigError: model\.optimizer\.lr='fast'"),
    ("train", _train("model.optimizer.weight_decay=-0.1"), r"model\.optimizer\.weight_decay=-0\.1: expected"),
    ("train", _train("model.backbone=resnet18"), r"model\.backbone='resnet18': .*model\.backbone\.name=resnet18"),
    ("train", _train("+model.backbone.pretraind=true"), r"^ConfigError: model\.backbone\.pretraind=True: timm's"),
    ("train", _train("model.optimizer=adamw"), r"^ConfigError: model\.optimizer='adamw': expected the optimizer"),
    ("train", _train("+model.nestin=[8]"), r"^ConfigError: model\.nestin=\[8\]: unknown key; did you mean model\.nest"),
    ("train", _train("+trainer.max_epoch=3"), r"trainer\.max_epoch=3: unknown key; did you mean trainer\.max_epochs"),
    ("train", _train("+data.batchsize=8"), r"data\.batchsize=8: unknown key; did you mean data\.batch_size"),
    ("train", _train("trainer.accelerator=auto", "trainer.devices=4096"), r"trainer\.devices=4096: this machine has"),
    (
        "train",
        _train("trainer.accelerator=gpu", "trainer.devices=4096"),
        r"trainer\.(devices|accelerator)=.*machine has",
    ),
    ("train", _train("trainer.devices=0"), r"^ConfigError: trainer\.devices=0: expected a positive integer"),
    ("train", _train("trainer.accelerator=quantum"), r"trainer\.accelerator='quantum': expected one of auto, cpu"),
    ("train", _train("trainer.precision=17"), r"^ConfigError: trainer\.precision=17: expected one of"),
    ("train", _train("trainer.limit_train_batches=1.5"), r"trainer\.limit_train_batches=1\.5: expected a batch"),
    ("train", _train("trainer.limit_val_batches=-1"), r"trainer\.limit_val_batches=-1: expected a batch"),
    ("train", _train("trainer.accumulate_grad_batches=0"), r"trainer\.accumulate_grad_batches=0: expected"),
    ("train", _train("trainer.log_every_n_steps=0"), r"trainer\.log_every_n_steps=0: expected an integer >= 1"),
    ("train", _train("trainer.gradient_clip_val=-1"), r"trainer\.gradient_clip_val=-1: expected a number >= 0"),
    ("train", _train("data.num_workers=-1"), r"^ConfigError: data\.num_workers=-1: expected an integer >= 0"),
    ("train", _train("data.val_fraction=1.5"), r"^ConfigError: data\.val_fraction=1\.5: expected a number"),
    ("train", _train("model.scheduler.min_lr_ratio=2"), r"model\.scheduler\.min_lr_ratio=2: expected a number"),
    ("train", _train("model.loss.label_smoothing=1.5"), r"model\.loss\.label_smoothing=1\.5: expected a number"),
    ("train", _train("model.num_classes=0"), r"^ConfigError: model\.num_classes=0: expected an integer >= 1"),
    ("train", _train("test=maybe"), r"^ConfigError: test='maybe': expected true or false"),
    ("train", _train("model.head.kind=mrl_x"), r"model\.head\.kind='mrl_x': expected one of"),
    # the model's sections, callbacks and loggers against what reads them (dataclasses, class signatures)
    (
        "train",
        _train("+model.head.dimm=4"),
        r"^ConfigError: model\.head\.dimm=4: unknown key; did you mean model\.head\.dim\?",
    ),
    ("train", _train("model.head.bias=maybe"), r"^ConfigError: model\.head\.bias='maybe': expected true or false"),
    (
        "train",
        _train("model.optimizer.name=lamb"),
        r"^ConfigError: model\.optimizer\.name='lamb': expected one of sgd, adamw",
    ),
    (
        "train",
        _train("+model.optimizer.nesterv=true"),
        r"model\.optimizer\.nesterv=True: unknown key; did you mean model\.optimizer\.nesterov",
    ),
    ("train", _train("+model.optimizer.betas=3"), r"^ConfigError: model\.optimizer\.betas=3: expected a list"),
    (
        "train",
        _train("model.scheduler.name=poly"),
        r"^ConfigError: model\.scheduler\.name='poly': expected one of cosine",
    ),
    (
        "train",
        _train("+model.scheduler.warmup=2"),
        r"model\.scheduler\.warmup=2: unknown key; did you mean model\.scheduler\.warmup_epochs",
    ),
    (
        "train",
        _train("+model.loss.smoothing=0.1"),
        r"model\.loss\.smoothing=0\.1: unknown key; did you mean model\.loss\.label_smoothing",
    ),
    (
        "train",
        _train("callbacks=default", "callbacks.model_checkpoint.save_top_k=two"),
        r"^ConfigError: callbacks\.model_checkpoint\.save_top_k='two': expected an integer",
    ),
    (
        "train",
        _train("callbacks=default", "+callbacks.model_checkpoint.monitr=x"),
        r"callbacks\.model_checkpoint\.monitr='x': unknown key; did you mean callbacks\.model_checkpoint\.monitor\?",
    ),
    (
        "train",
        _train("callbacks=default", "callbacks.truncation_curve=3"),
        r"callbacks\.truncation_curve=3: expected a mapping",
    ),
    (
        "train",
        _train("logger=csv", "+logger.csv.nme=x"),
        r"logger\.csv\.nme='x': unknown key; did you mean logger\.csv\.name\?",
    ),
    (
        "train",
        lambda w, tmp: [*TEXT_PAIRS, "model.loss.gather=yes", f"hydra.run.dir={tmp / 'run'}"],
        r"^ConfigError: model\.loss\.gather='yes': expected true or false",
    ),
    (
        "train",
        lambda w, tmp: [*TEXT_PAIRS, "+model.backbone.hiden_dropout_prob=0.1", f"hydra.run.dir={tmp / 'run'}"],
        r"^ConfigError: model\.backbone\.hiden_dropout_prob=0\.1: .* takes no argument",
    ),
    # a group option with no file: one line with the valid options, not Hydra's several
    (
        "train",
        _train("model=resnet999"),
        r"^ConfigError: model='resnet999': no conf/model/resnet999\.yaml; .*expected one of .*resnet18_small",
    ),
    (
        "train",
        _train("head=xyz"),
        r"^ConfigError: head='xyz': no conf/head/xyz\.yaml; expected one of ff, mrl, mrl_e, standard$",
    ),
    (
        "eval",
        _eval("data=imagenet9"),
        r"^ConfigError: data='imagenet9': no conf/data/imagenet9\.yaml; did you mean data=imagenet",
    ),
    (
        "train",
        lambda w, tmp: [*TEXT_PAIRS, f"data.source={w['pairs']}", f"hydra.run.dir={tmp / 'run'}"],
        r"^InputError: data\.source='.*two_pairs\.jsonl': 2 pair\(s\) .* give at least 8 pairs",
    ),
    (
        "train",
        lambda w, tmp: [*TEXT_PAIRS, f"data.source={w['broken']}", f"hydra.run.dir={tmp / 'run'}"],
        r"^InputError: data\.source='.*broken\.jsonl': line 2 is not a JSON object",
    ),
    # mrl-eval
    ("eval", _eval("precision=fp8"), r"^ConfigError: precision='fp8': expected one of fp32, bf16, fp16"),
    ("eval", _eval("embeddings_dtype=int4"), r"^ConfigError: embeddings_dtype='int4': expected one of fp32, fp16"),
    ("eval", _eval("funnel.shortlist=0"), r"^ConfigError: funnel\.shortlist=0: expected an integer >= 1"),
    ("eval", _eval("knn.map_k=ten"), r"^ConfigError: knn\.map_k='ten': expected an integer >= 1"),
    ("eval", _eval("adaptive.holdout_fraction=0"), r"adaptive\.holdout_fraction=0: expected a number > 0"),
    ("eval", _eval("seed=abc"), r"^ConfigError: seed='abc': expected an integer"),
    ("eval", _eval("tta=sometimes"), r"^ConfigError: tta='sometimes': expected true or false"),
    ("eval", _eval("device=quantum"), r"device='quantum': expected auto, cpu, cuda"),
    (
        "eval",
        lambda w, tmp: [f"run={w['empty']}", f"hydra.run.dir={tmp}"],
        r"run='.*empty': no run \(a directory with checkpoints",
    ),
    ("eval", lambda w, tmp: [f"ckpt={w['garbage']}", f"hydra.run.dir={tmp}"], r"ckpt='.*garbage\.ckpt'"),
    (
        "eval",
        lambda w, tmp: [f"ckpt={w['run']}", f"hydra.run.dir={tmp}"],
        r"^InputError: ckpt='.*run': a directory, not a checkpoint file; give ckpt=<file\.ckpt>, or run=",
    ),
    (
        "eval",
        lambda w, tmp: [f"ckpt={w['missing']}.ckpt", f"hydra.run.dir={tmp}"],
        r"^InputError: ckpt='.*missing\.ckpt': no such file",
    ),
    # mrl-embed
    ("embed", _args("{missing}", "{images}"), r"run='.*missing': neither a run directory nor a checkpoint"),
    ("embed", _args("{run}", "{missing}"), r"input='.*missing': no such folder"),
    ("embed", _args("{run}", "{empty}"), r"input='.*empty': no image files in it"),
    ("embed", _args("{run}", "{broken_images}", "--out", "{tmp}/e.npz"), r"input='.*broken_images': none of its 2"),
    ("embed", _args("{run}", "{images}", "--dim", "0"), r"^ConfigError: dim=0: the embedding is 512 wide"),
    ("embed", _args("{run}", "{images}", "--dim", "4096"), r"^ConfigError: dim=4096: the embedding is 512 wide"),
    ("embed", _args("{run}", "{images}", "--dtype", "fp8"), r"^ConfigError: dtype='fp8': expected fp32 or fp16"),
    ("embed", _args("{run}", "{images}", "--batch-size", "0"), r"batch_size=0, num_workers=0: need batch_size >= 1"),
    ("embed", _args("{run}", "{images}", "--precision", "fp8"), r"precision='fp8': expected one of"),
    ("embed", _args("{run}", "{images}", "--device", "quantum"), r"device='quantum': expected auto, cpu"),
    ("embed", _args("{run}", "{images}", "--out", "{blocked}/e.npz"), r"^InputError: out='.*blocked/e\.npz': cannot"),
    ("embed", _args("{garbage}", "{images}"), r"ckpt='.*garbage\.ckpt'"),
    # mrl-search
    ("search", _args("{missing}.npz", "{q}"), r"embeddings='.*missing\.npz': no such file"),
    ("search", _args("{db}", "{text}"), r"^InputError: embeddings='.*text\.npz': not an \.npz archive"),
    ("search", _args("{truncated}", "{q}"), r"^InputError: embeddings='.*truncated\.npz': not a readable \.npz"),
    ("search", _args("{pickled}", "{q}"), r"^InputError: embeddings='.*pickled\.npz': .*pickled objects, never"),
    ("search", _args("{no_embeddings}", "{q}"), r"embeddings='.*no_embeddings\.npz': no 'embeddings' array"),
    ("search", _args("{db}", "{nan_q}"), r"^InputError: embeddings='.*nan_q\.npz': 1 row\(s\) hold NaN or inf"),
    ("search", _args("{inf_db}", "{q}"), r"^InputError: embeddings='.*inf_db\.npz': 1 row\(s\) hold NaN or inf"),
    ("search", _args("{db}", "{narrow}"), r"queries='.*narrow\.npz': 32-wide embeddings against a 64-wide"),
    ("search", _args("{db}", "{q}", "--k", "0"), r"^ConfigError: k=0: must be in 1\.\.30"),
    ("search", _args("{db}", "{q}", "--k", "31"), r"^ConfigError: k=31: must be in 1\.\.30"),
    ("search", _args("{db}", "{q}", "--funnel", "16:abc"), r"^ConfigError: funnel='16:abc': stage 1"),
    ("search", _args("{db}", "{q}", "--metric", "hamming"), r"^ConfigError: metric='hamming': expected one of"),
    ("search", _args("{db}", "{q}", "--backend", "pinecone"), r"^ConfigError: backend='pinecone': expected one of"),
    ("search", _args("{db}", "{q}", "--uri", "{tmp}/x.db"), r"^ConfigError: uri='.*x\.db': --uri and --collection"),
    ("search", _args("{q}", "--backend", "lancedb"), r"^ConfigError: uri=None: --backend lancedb needs --uri"),
    ("search", _args("{db}", "{q}", "--out", "{blocked}/r.csv"), r"^InputError: out='.*blocked/r\.csv': cannot"),
    ("search", _args("{db}", "{q}", "--funnel", "64:10", "--target-recall", "0.9"), r"target_recall=0\.9: --funnel"),
    # mrl-index
    ("index", _args("{missing}.npz"), r"embeddings='.*missing\.npz': no such file or run directory"),
    ("index", _args("{run}"), r"embeddings='.*run': no eval/embeddings_train\.npz in this run"),
    ("index", _args("{db}", "--first-size", "128", "--uri", "{tmp}/i"), r"^ConfigError: first_size=128: .* 1\.\.64"),
    ("index", _args("{db}", "--k", "0", "--uri", "{tmp}/i"), r"^ConfigError: k=0: must be in 1\.\.30"),
    ("index", _args("{db}", "--format", "fp4", "--uri", "{tmp}/i"), r"^ConfigError: format='fp4': expected one of"),
    ("index", _args("{db}", "--backend", "pinecone"), r"backend.*pinecone"),
    ("index", _args("{db}", "--uri", "{blocked}/index.lancedb"), r"^InputError: uri='.*blocked/index\.lancedb'"),
    ("index", _args("{db}", "--target-recall", "0.9", "--uri", "{tmp}/i"), r"target_recall=0\.9: tuning needs"),
    ("index", _args("{db}", "--shortlist", "5", "--uri", "{tmp}/i"), r"^ConfigError: shortlist=5: must keep"),
    ("index", _args("{inf_db}", "--uri", "{tmp}/i"), r"^InputError: embeddings='.*inf_db\.npz': 1 row"),
    ("index", _args("{truncated}", "--uri", "{tmp}/i"), r"^InputError: embeddings='.*truncated\.npz'"),
    # mrl-export
    ("export", _args("{missing}"), r"run='.*missing': neither a run directory nor a checkpoint"),
    ("export", _args("{run}", "--truncate-dim", "100", "--out", "{tmp}/x"), r"^ConfigError: truncate_dim=100: .*text"),
    ("export", _args("{run}", "--layers", "2", "--out", "{tmp}/x"), r"^ConfigError: layers=2: --truncate-dim"),
    ("export", _args("{run}", "--out", "{blocked}/export"), r"^InputError: out='.*blocked/export': cannot be"),
    ("export", _args("{run}", "--out", "{blocked}"), r"^InputError: out='.*blocked': is a file; give a folder"),
    ("export", _args("{garbage}"), r"ckpt='.*garbage\.ckpt'"),
    # mrl-report
    ("report", _args("{missing}"), r"DIR='.*missing': no such directory"),
    ("report", _args("{empty}"), r"DIR='.*empty': no results\.json below it"),
    ("report", _args("{blocked}"), r"^InputError: DIR='.*blocked': a file; give a run or sweep directory"),
    ("report", _args("{run}", "--out", "{blocked}/report"), r"^InputError: out='.*blocked/report': cannot be"),
    # mrl-prepare
    ("prepare", _args("{missing}", "{tmp}/out"), r"src=.*missing is not a folder"),
    ("prepare", _args("{empty}", "{tmp}/out"), r"src=.*empty has no train/, val/ or test/ folder"),
    ("prepare", _args("{bare}", "{tmp}/out"), r"src=.*bare: train/ has no class folders"),
    ("prepare", _args("{odd}", "{tmp}/out"), r"src=.*odd_classes: val/ has different classes"),
    ("prepare", _args("{src}", "{tmp}/out", "--workers", "1", "--quiet"), r"^InputError: src='.*train': none of"),
    ("prepare", _args("{src}", "{tmp}/out", "--max-side", "4"), r"^ConfigError: max_side=4: expected the longest side"),
    ("prepare", _args("{src}", "{tmp}/out", "--quality", "0"), r"^ConfigError: quality=0: expected a JPEG quality"),
    (
        "prepare",
        _args("{src}", "{tmp}/out", "--raw-fraction", "2"),
        r"^ConfigError: raw_fraction=2\.0: expected a share",
    ),
    ("prepare", _args("{src}", "{tmp}/out", "--workers", "0"), r"^ConfigError: workers=0: expected a positive number"),
    ("prepare", _args("{src}", "{blocked}/out"), r"^InputError: out='.*blocked/out': cannot be created"),
    ("prepare", _args("--verify", "{empty}"), r"out=.*empty holds no prepared shards"),
    ("prepare", _args(), r"^ValueError: src=: give SRC"),
]


WORLD_KEYS = ("root", "run", "db", "q", "narrow", "nan_q", "inf_db", "truncated", "text", "pickled", "no_embeddings",
              "images", "broken_images", "empty", "blocked", "src", "odd", "bare", "pairs", "broken", "garbage",
              "missing")  # fmt: skip


def _id(case) -> str:
    command, argv, _ = case
    shown = argv({key: f"<{key}>" for key in WORLD_KEYS}, Path("<tmp>"))
    kept = [a for a in shown if a not in FAST and not a.startswith(("hydra.", "output_dir=", "run=<run>"))]
    return f"{command}:{' '.join(kept)}"


@pytest.mark.parametrize("case", CASES, ids=[_id(case) for case in CASES])
def test_a_mistake_ends_in_one_line_naming_it(world, case, tmp_path, capfd):
    command, argv, expected = case
    root = Path(world["root"])
    before = _finished(root)
    code, out, err = _invoke(command, argv(world, tmp_path), capfd)
    assert code not in (0, None), f"exit {code!r}\n{out[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in out + err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, out[-2000:]
    assert re.search(expected, lines[-1]), lines[-1]
    assert _finished(root) == before
    assert not _finished(tmp_path), sorted(map(str, _finished(tmp_path)))


def test_the_suite_covers_every_command_with_sixty_cases():
    commands = {command for command, _, _ in CASES}
    assert commands == {"train", "eval", "embed", "search", "index", "export", "report", "prepare"}
    assert len(CASES) >= 60


def test_text_export_refuses_a_size_it_was_not_trained_at(tmp_path, capfd):
    """``--truncate-dim`` must be one of the trained sizes: any other prefix was never trained on its own."""
    from mrl.training.contrastive import MatryoshkaContrastiveModule

    backbone = {"_target_": "mrl.backbones.HFTextEncoder", "name_or_path": None, "max_length": 16, "embed_dim": 48}
    module = MatryoshkaContrastiveModule(backbone, nesting=[12, 24, 48])
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    code, _, err = _invoke("export", [str(ckpt), "--truncate-dim", "20", "--out", str(tmp_path / "x")], capfd)
    assert code == 1 and "Traceback" not in err
    assert (
        err.strip().splitlines()[-1] == "ConfigError: truncate_dim=20: expected one of the trained sizes [12, 24, 48]"
    )
    assert not (tmp_path / "x").exists()


def test_devices_are_checked_against_the_machine():
    """More GPUs than there are is an error; so is ``accelerator=auto`` asking for several devices on a machine
    without a GPU (Lightning would start that many CPU processes). An explicit ``accelerator=cpu`` may: the DDP
    tests run two gloo processes on any machine."""
    from mrl.common.errors import ConfigError
    from mrl.training.config_checks import check_devices

    check_devices("cpu", 2, gpus=0)
    check_devices("auto", 1, gpus=0)
    check_devices("gpu", [0, 1], gpus=2)
    check_devices("auto", "auto", gpus=0)
    with pytest.raises(ConfigError, match=r"^trainer\.devices=4: this machine has no GPU; expected at most 1"):
        check_devices("auto", 4, gpus=0)
    with pytest.raises(ConfigError, match=r"^trainer\.devices=3: this machine has 2 GPU\(s\); expected at most 2"):
        check_devices("cuda", 3, gpus=2)
    with pytest.raises(ConfigError, match=r"^trainer\.accelerator='gpu': this machine has no GPU"):
        check_devices("gpu", 1, gpus=0)
    with pytest.raises(ConfigError, match=r"^trainer\.devices='0,x': expected a positive integer"):
        check_devices("gpu", "0,x", gpus=2)
