"""A run resumed mid-epoch trains on the rest of that epoch's order: every sample once, as without the stop."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import lightning as L
import pytest

from mrl.data.sampling import ResumableOrder, ResumableSampler, resume_position
from mrl_testing.training import fit_config


class RecordSamples(L.Callback):
    """The fingerprints of the images each epoch trained on, in order."""

    def __init__(self) -> None:
        self.seen: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        prints = [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in batch[0]]
        self.seen.setdefault(trainer.current_epoch, []).extend(prints)


def test_a_run_stopped_mid_epoch_trains_on_the_rest_of_that_epoch(tmp_path, make_cfg):
    cfg = make_cfg(
        "data=synthetic",
        "data.train_size=40",
        "data.val_size=8",
        "data.batch_size=8",
        "data.image_size=16",
        "trainer.limit_train_batches=null",
    )  # 5 batches an epoch
    whole = RecordSamples()
    datamodule = fit_config(cfg, [whole], max_epochs=2).datamodule
    samples = sorted(hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in datamodule._tensors["train"][0])
    assert sorted(whole.seen[0]) == sorted(whole.seen[1]) == samples  # each epoch: every sample once
    assert whole.seen[0] != whole.seen[1]  # in a new order

    # stopped after 2 of epoch 1's 5 batches, with a checkpoint after every step; then resumed
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1, save_top_k=-1
    )
    first, second = RecordSamples(), RecordSamples()
    fit_config(cfg, [first, ckpt], max_steps=7)
    fit_config(cfg, [second], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), max_epochs=2)
    assert len(first.seen[1]) == 16 and 0 not in second.seen
    assert first.seen[1] + second.seen[1] == whole.seen[1]  # the same epoch as without the stop

    # a checkpoint that closed an epoch resumes at the start of the next one
    closing = RecordSamples()
    fit_config(cfg, [closing], ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=5.ckpt"), max_epochs=2)
    assert closing.seen == {1: whole.seen[1]}


def _trainer(started, processed, batches, world_size=1, rank=0):
    """The parts of a Trainer that the training position is read from."""
    epochs = SimpleNamespace(started=started, processed=processed)
    loop = SimpleNamespace(
        epoch_progress=SimpleNamespace(current=epochs),
        epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=SimpleNamespace(processed=batches))),
    )
    return SimpleNamespace(fit_loop=loop, num_training_batches=5, world_size=world_size, global_rank=rank)


class Module(ResumableOrder):
    batch_size, seed, trainer = 8, 3, None


def test_position_saved_and_loaded():
    assert resume_position(None) == (0, 0)
    assert resume_position(_trainer(0, 0, 0)) == (0, 0)  # before any training
    assert resume_position(_trainer(2, 1, 3)) == (1, 3)  # 3 of epoch 1's 5 batches trained
    assert resume_position(_trainer(2, 1, 5)) == (2, 0)  # saved after epoch 1's last batch
    assert resume_position(_trainer(2, 2, 5)) == (2, 0)  # saved as epoch 1 ended
    saving, loading = Module(), Module()
    saving.trainer = _trainer(2, 1, 3)
    loading.load_state_dict(saving.state_dict())
    sampler = loading.training_sampler(list(range(40)))
    full = list(ResumableSampler(list(range(40)), seed=3, epoch=1))
    assert list(sampler) == full[24:] and list(sampler) == full  # only the resumed pass starts late
    assert list(loading.training_sampler(list(range(40)))) == list(ResumableSampler(list(range(40)), seed=3))


@pytest.mark.parametrize("rank", [0, 1])
def test_ranks_share_an_epoch_and_skip_their_own_batches(rank):
    data = list(range(21))  # 11 per rank, the last padded as DistributedSampler pads
    whole = [list(ResumableSampler(data, seed=0, num_replicas=2, rank=r, epoch=4)) for r in (0, 1)]
    assert sorted(set(whole[0]) | set(whole[1])) == data and len(whole[0]) == len(whole[1]) == 11
    module = Module()
    module.seed, module.batch_size, module.trainer = 0, 4, _trainer(5, 4, 2, world_size=2, rank=rank)
    module.load_state_dict(module.state_dict())  # epoch 4, 2 batches of 4 done on every rank
    assert list(module.training_sampler(data)) == whole[rank][8:]


@pytest.mark.parametrize(("size", "replicas"), [(1, 1), (21, 2), (40, 3), (5, 8)])
def test_the_order_is_torchs_distributed_sampler_order(size, replicas):
    """The epoch's order is kept in a tensor (10 million indices are 80 MB, not a 360 MB list) and is still the
    order of `DistributedSampler`: the same permutation, padding and sharding."""
    from torch.utils.data import DistributedSampler

    data = list(range(size))
    for rank in range(replicas):
        reference = DistributedSampler(data, num_replicas=replicas, rank=rank, shuffle=True, seed=5)
        reference.set_epoch(3)
        assert list(ResumableSampler(data, seed=5, num_replicas=replicas, rank=rank, epoch=3)) == list(reference)
