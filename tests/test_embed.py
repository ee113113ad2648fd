"""`make embed`: new images and texts embedded as the run prepares its own data, checked against the model
run directly on the data module's tensors (or the tokenizer's batch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mrl.cli.embed import command as embed_main
from mrl.common.errors import InputError
from mrl.data.image import DigitsDataModule
from mrl.data.image.folder import ImageFolderDataModule
from mrl.data.image.synthetic import SyntheticDataModule
from mrl.data.image.torchvision_sets import TorchvisionDataModule
from mrl.embedding import embed_inputs as embed_run
from mrl.evaluation.embeddings import load_embeddings
from mrl.runs import find_checkpoint, load_module
from mrl_testing.configs import FAST, compose_train


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A digits MRL run (one short epoch), and the val split written as 8x8 PNG scans named by position."""
    from mrl.training.procedure import run_training

    root = tmp_path_factory.mktemp("embed")
    run_dir = root / "run"
    run_training(compose_train([*FAST, "trainer.max_epochs=1", "seed=3"], run_dir), run_dir)
    data = DigitsDataModule(image_size=16, in_chans=3, seed=3)
    data.setup()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, val_index = train_test_split(
        np.arange(len(digits.target)), test_size=round(0.2 * len(digits.target)), stratify=digits.target, random_state=3
    )
    folder = root / "scans" / "nested"
    folder.mkdir(parents=True)
    for i, index in enumerate(val_index[:40]):  # bright ink on a dark ground, as the scans are
        Image.fromarray(np.round(digits.images[index] * 255 / 16).astype(np.uint8)).save(folder / f"{i:03d}.png")
    expected = data._tensors["val"][0][:40]
    return run_dir, root / "scans", expected


def _reference(run_dir, images):
    module = load_module(find_checkpoint(run_dir)).eval()
    with torch.no_grad():
        return module.embed(images).numpy()


def test_images_are_embedded_as_the_run_prepares_its_own(digits_run):
    run_dir, scans, tensors = digits_run
    meta = embed_main([str(run_dir), str(scans)])
    out = run_dir / "embed" / "scans_512d.npz"
    assert meta["output"] == str(out) and meta["count"] == 40 and meta["dim"] == 512 and meta["kind"] == "image"
    embeddings, labels, saved_meta = load_embeddings(out)
    ids = np.load(out)["ids"]
    assert list(ids) == [f"nested/{i:03d}.png" for i in range(40)]  # relative, in sorted order
    assert (labels == -1).all() and saved_meta["sizes"] == [8, 16, 32, 64, 128, 256, 512]
    reference = _reference(run_dir, tensors)
    # the PNGs hold the 0-16 scan values rounded to 0-255, so the inputs differ by at most 1/510
    cosine = (F.normalize(torch.from_numpy(embeddings), dim=1) * F.normalize(torch.from_numpy(reference), dim=1)).sum(1)
    assert cosine.min() > 0.999
    assert np.abs(embeddings - reference).max() < 0.02 * np.abs(reference).max()
    shuffled = np.roll(reference, 1, axis=0)  # a wrong order would not pass the same check
    assert (F.normalize(torch.from_numpy(embeddings), dim=1) * F.normalize(torch.from_numpy(shuffled), dim=1)).sum(
        1
    ).min() < 0.99


def test_prefix_normalisation_half_precision_and_list_files(digits_run, tmp_path):
    run_dir, scans, _ = digits_run
    full, _, _ = load_embeddings(embed_main([str(run_dir), str(scans), "--out", str(tmp_path / "full.npz")])["output"])
    listing = tmp_path / "list.txt"
    files = sorted((scans / "nested").glob("*.png"))[::3]
    listing.write_text(
        "\n".join(
            f"{scans / 'nested' / f.name}" if i % 2 else f"../{tmp_path.name}_link/{f.name}"
            for i, f in enumerate(files)
        )
        + "\n"
    )
    (tmp_path.parent / f"{tmp_path.name}_link").symlink_to(scans / "nested")  # relative paths: from the list's folder
    meta = embed_main(
        [
            str(run_dir),
            str(listing),
            "--dim",
            "16",
            "--normalize",
            "--dtype",
            "fp16",
            "--out",
            str(tmp_path / "small.npz"),
            "--batch-size",
            "5",
        ]
    )
    small, _, saved = load_embeddings(meta["output"])
    assert small.dtype == np.float16 and small.shape == (len(files), 16)
    assert saved["normalized"] and saved["dim"] == 16 and saved["dtype"] == "fp16"
    expected = F.normalize(torch.from_numpy(full[::3, :16]), dim=1).numpy()
    np.testing.assert_allclose(small.astype(np.float32), expected, atol=2e-3)


def test_unreadable_images_are_left_out_and_named(digits_run, tmp_path):
    run_dir, scans, _ = digits_run
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((scans / "nested").glob("*.png"))[:4]
    for f in good:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "002b.png").write_bytes(b"not an image at all")
    meta = embed_main([str(run_dir), str(folder), "--out", str(tmp_path / "mixed.npz"), "--workers", "2"])
    assert meta["count"] == 4 and meta["skipped"] == ["002b.png"]
    data = np.load(tmp_path / "mixed.npz")
    assert list(data["ids"]) == [f.name for f in good]
    clean = embed_main([str(run_dir), str(scans / "nested"), "--out", str(tmp_path / "clean.npz")])
    np.testing.assert_allclose(data["embeddings"], load_embeddings(clean["output"])[0][:4], rtol=1e-5, atol=1e-5)


def test_bad_requests_fail_with_one_line(digits_run, tmp_path, capsys):
    run_dir, scans, _ = digits_run
    with pytest.raises(ValueError, match=r"^dim=600: the embedding is 512 wide; give 1..512"):
        embed_run(str(run_dir), str(scans), dim=600)
    with pytest.raises(FileNotFoundError, match=r"^input='.*nowhere': no such folder or list file"):
        embed_run(str(run_dir), str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files in it"):
        embed_run(str(run_dir), str(tmp_path / "empty"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"^input='.*broken': none of its 1 images could be read, e.g. 'a.jpg'"):
        embed_run(str(run_dir), str(tmp_path / "broken"))
    with pytest.raises(ValueError, match=r"^dtype='fp8'"):
        embed_run(str(run_dir), str(scans), dtype="fp8")
    with pytest.raises(SystemExit):
        embed_main([str(run_dir), str(scans), "--dim", "0"])
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("ConfigError: dim=0:")


# --------------------------------------------------------------------------------- the preprocessing alone
def _photo(size=(45, 37), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def test_image_folder_preprocessing_needs_no_data(tmp_path):
    (tmp_path / "val" / "a").mkdir(parents=True)
    _photo().save(tmp_path / "val" / "a" / "x.png")
    settings = {"image_size": 48, "crop_pct": 0.75, "interpolation": "bicubic", "in_chans": 3, "color_jitter": 0.3}
    data = ImageFolderDataModule(root=str(tmp_path), train_dir=None, **settings)
    timm_config = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "input_size": (3, 64, 64)}
    data.set_data_config(timm_config)
    own = data._transform(is_training=False)
    new = ImageFolderDataModule.file_transform({**settings, "root": "/no/such/folder"}, timm_config)
    for mode in ("RGB", "RGBA", "L", "P"):  # any file mode comes out as the set's own RGB
        torch.testing.assert_close(new(_photo(mode=mode)), own(_photo(mode=mode).convert("RGB")))
    assert new(_photo()).shape == (3, 48, 48)
    gray = ImageFolderDataModule.file_transform({"in_chans": 1, "image_size": 32}, None)
    assert gray(_photo()).shape == (1, 32, 32)


def test_torchvision_set_preprocessing_resizes_new_images(tmp_path):
    data = TorchvisionDataModule(name="mnist", root=str(tmp_path), in_chans=3, image_size=None, augment=True)
    new = TorchvisionDataModule.file_transform({"name": "mnist", "root": "/absent", "in_chans": 3, "augment": True})
    native = _photo(size=(28, 28), mode="L")
    torch.testing.assert_close(new(native), data.build_transform(is_training=False)(native))
    assert new(_photo(size=(100, 80))).shape == (3, 28, 28)  # any size becomes the set's


def test_digits_preprocessing_matches_the_scans():
    data = DigitsDataModule(image_size=24, in_chans=1, seed=5)
    data.setup()
    transform = DigitsDataModule.file_transform({"image_size": 24, "in_chans": 1, "seed": 5, "batch_size": 7})
    from sklearn.datasets import load_digits

    scan = load_digits().images[0]
    # a 32x32 bitmap whose 4x4 blocks hold the scan's ink counts, box-averaged back to the scan
    bitmap = np.kron(np.round(scan * 255 / 16), np.ones((4, 4))).astype(np.uint8)
    expected = (
        (
            F.interpolate(
                torch.tensor(scan, dtype=torch.float32).view(1, 1, 8, 8) / 16,
                size=(24, 24),
                mode="bilinear",
                align_corners=False,
            ).clamp(0, 1)
            - data.mean
        )
        / data.std
    )[0]
    torch.testing.assert_close(transform(Image.fromarray(bitmap)), expected, atol=3e-3 / data.std, rtol=0)


def test_synthetic_data_has_no_file_preprocessing():
    with pytest.raises(ValueError, match="SyntheticDataModule is not made of image files"):
        SyntheticDataModule.file_transform({})


# -------------------------------------------------------------------------------------------------- texts
def test_texts_from_lines_and_tables(tmp_path):
    from mrl.training.contrastive import MatryoshkaContrastiveModule

    backbone = {"_target_": "mrl.backbones.HFTextEncoder", "name_or_path": None, "max_length": 32, "embed_dim": 48}
    module = MatryoshkaContrastiveModule(backbone, nesting=[12, 24, 48]).eval()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "epoch_000.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    texts = [
        "Lists are mutable sequences.",
        "The with statement wraps the execution of a block.",
        "Tuples are immutable.",
        "A generator function yields values one at a time, lazily.",
    ]
    with torch.no_grad():
        expected = module.embed(module.backbone.tokenize(texts)).numpy()  # one padded batch, all at once
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n\n \n")  # blank lines at the end shift no row
    meta = embed_main([str(ckpt), str(tmp_path / "texts.txt"), "--batch-size", "3", "--dim", "24"])
    assert meta["output"] == str(run / "embed" / "texts_24d.npz") and meta["kind"] == "text"
    data = np.load(meta["output"])
    assert list(data["ids"]) == texts
    np.testing.assert_allclose(data["embeddings"], expected[:, :24], atol=1e-5, rtol=1e-4)
    (tmp_path / "table.jsonl").write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts)))
    table = embed_main([str(run), str(tmp_path / "table.jsonl"), "--column", "body", "--out", str(tmp_path / "t.npz")])
    np.testing.assert_allclose(np.load(table["output"])["embeddings"], expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"^column='text': not a column of table.jsonl; its columns are id, body"):
        embed_run(str(run), str(tmp_path / "table.jsonl"))
    with pytest.raises(ValueError, match=r"^input='.*': a folder, but this run is a text model"):
        embed_run(str(run), str(tmp_path))
    # a blank line inside the file would shift every later row off its line number: refused, the line named
    (tmp_path / "gap.txt").write_text("\n".join(texts[:2]) + "\n  \n" + "\n".join(texts[2:]) + "\n")
    with pytest.raises(InputError, match=r"^input='.*gap\.txt': line 3 is blank; every line is one text"):
        embed_run(str(ckpt), str(tmp_path / "gap.txt"))
    assert not list((run / "embed").glob("gap*"))

    from mrl.training.classifier import (
        MatryoshkaClassifier,  # a text classifier (MRL head over the encoder) embeds the same way
    )

    classifier = MatryoshkaClassifier(backbone, num_classes=3, nesting=[12, 24, 48]).eval()
    ckpt = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": classifier.state_dict(), "hyper_parameters": dict(classifier.hparams)}, ckpt)
    with torch.no_grad():
        expected = classifier.embed(classifier.backbone.tokenize(texts)).numpy()
    meta = embed_main([str(ckpt), str(tmp_path / "texts.txt"), "--out", str(tmp_path / "c.npz")])
    assert meta["head"] == "mrl" and meta["sizes"] == [12, 24, 48]
    np.testing.assert_allclose(np.load(meta["output"])["embeddings"], expected, atol=1e-5, rtol=1e-4)


def test_embedding_files_are_replaced_whole_or_not_at_all(tmp_path):
    from mrl.common.io import atomic_savez

    path = tmp_path / "items.npz"
    atomic_savez(path, embeddings=np.ones((3, 4), dtype=np.float32))

    class Broken:  # numpy pickles object arrays; this one fails half-way through the file
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_savez(path, embeddings=np.zeros((3, 4), dtype=np.float32), extra=np.array([Broken()], dtype=object))
    assert np.load(path)["embeddings"].sum() == 12
    assert [p.name for p in tmp_path.iterdir()] == ["items.npz"]  # no temporary file left behind


def test_an_official_checkpoint_embeds_with_the_reference_preprocessing(tmp_path):
    """``--reference``: a RAIVNLab/MRL file, images prepared as torchvision's ImageNet evaluation prepares them."""
    import torchvision.transforms as T

    from test_compat import NESTING, reference_model, save_from_ddp

    reference = reference_model(False, num_classes=10)
    path = tmp_path / "r50_mrl1.pt"
    save_from_ddp(reference, path)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, size in enumerate([(300, 260), (240, 320)]):
        _photo(size=size, seed=i).save(folder / f"{i}.jpg", quality=95)
    meta = embed_main([str(path), str(folder), "--reference", "--dim", "64"])
    assert meta["output"] == str(tmp_path / "embed" / "photos_64d.npz") and meta["sizes"] == NESTING
    assert meta["head"] == "mrl" and meta["reference"]
    prepare = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    images = torch.stack([prepare(Image.open(folder / f"{i}.jpg").convert("RGB")) for i in range(2)])
    reference.fc = torch.nn.Identity()  # the pooled 2048-d features the nested head reads
    with torch.no_grad():
        expected = reference(images)[:, :64].numpy()
    np.testing.assert_allclose(np.load(meta["output"])["embeddings"], expected, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match=r"^reference='mrl_e': ckpt=.* holds a mrl head"):
        embed_run(str(path), str(folder), reference="mrl_e")


# ------------------------------------------------------------------------------------------ image export
def _apply_steps(steps, image):
    """The export's preprocessing recipe carried out with PIL, numpy and torch only, as a server would."""
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "box": Image.BOX, "nearest": Image.NEAREST}
    x = image
    for step in steps:
        if "convert" in step:
            x = x.convert(step["convert"])
        elif "grayscale" in step:
            x = x.convert("L").convert("RGB" if step["grayscale"] == 3 else "L")
        elif "resize" in step and step["on"] == "pil":
            size, (w, h) = step["resize"], x.size
            if isinstance(size, int):  # the shorter side to size, the longer one in proportion
                size = [size, int(size * h / w)] if w <= h else [int(size * w / h), size]
                size = size[::-1]
            x = x.resize((size[1], size[0]), resample[step["interpolation"]])
        elif "resize" in step:
            x = F.interpolate(x[None], size=tuple(step["resize"]), mode=step["interpolation"], align_corners=False)[0]
        elif "center_crop" in step:
            (ch, cw), (w, h) = step["center_crop"], x.size
            top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            x = x.crop((left, top, left + cw, top + ch))
        elif "to_tensor" in step:
            array = np.asarray(x, dtype=np.float32) / 255.0
            x = torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())
        elif "clamp" in step:
            x = x.clamp(*step["clamp"])
        elif "normalize" in step:
            mean, std = (torch.tensor(step["normalize"][k]).view(-1, 1, 1) for k in ("mean", "std"))
            x = (x - mean) / std
        elif "repeat_channels" in step:
            x = x.expand(step["repeat_channels"], -1, -1)
        else:
            raise AssertionError(f"unknown step {step}")
    return x


@pytest.mark.parametrize("kind", ["folder", "folder_gray", "mnist", "digits"])
def test_the_exported_recipe_is_the_preprocessing(kind):
    from mrl.interop.torch_export import describe_preprocessing

    transform = {
        "folder": lambda: ImageFolderDataModule.file_transform({"image_size": 40, "crop_pct": 0.8}, None),
        "folder_gray": lambda: ImageFolderDataModule.file_transform({"image_size": 24, "in_chans": 1}, None),
        "mnist": lambda: TorchvisionDataModule.file_transform({"name": "mnist", "in_chans": 3}),
        "digits": lambda: DigitsDataModule.file_transform({"image_size": 20, "in_chans": 3}),
    }[kind]()
    steps = json.loads(json.dumps(describe_preprocessing(transform)))  # plain data, as written to the file
    for size, mode in [((45, 37), "RGB"), ((30, 62), "L"), ((28, 28), "RGBA")]:
        image = _photo(size=size, mode=mode)
        torch.testing.assert_close(_apply_steps(steps, image), transform(image), atol=1e-5, rtol=1e-5)


def test_an_image_run_exports_a_program_that_needs_only_torch(digits_run, tmp_path):
    from mrl.cli.export import command as export_main

    run_dir, scans, tensors = digits_run
    out = export_main([str(run_dir), "--out", str(tmp_path / "export")])
    info = json.loads((out / "mrl_export.json").read_text())
    assert info["sizes"] == [8, 16, 32, 64, 128, 256, 512] and info["input_shape"] == [3, 16, 16]
    program = torch.export.load(out / "embedder.pt2").module()
    module = load_module(find_checkpoint(run_dir)).eval()
    with torch.no_grad():
        for batch in (tensors[:1], tensors[:33]):  # any batch size
            torch.testing.assert_close(program(batch), module.embed(batch), atol=1e-5, rtol=1e-5)
        files = sorted((scans / "nested").glob("*.png"))[:6]
        served = program(torch.stack([_apply_steps(info["preprocess"], Image.open(f)) for f in files]))
    embedded = embed_main([str(run_dir), str(scans / "nested"), "--out", str(tmp_path / "e.npz")])
    np.testing.assert_allclose(served.numpy(), np.load(embedded["output"])["embeddings"][:6], atol=1e-5, rtol=1e-5)
