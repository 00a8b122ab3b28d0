"""Loaders: DistributedSampler-compatible order, exact mid-epoch resume, worker-count independence, seeding."""
import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from toco_fast.data.datasets import EvalDataset, TrainDataset
from toco_fast.data.layouts.synthetic import open_synthetic
from toco_fast.data.loader import (ResumableSampler, WorkerInit, batches_per_epoch, build_train_loader,
                                   build_val_loader, iterate_batches, set_position)
from toco_fast.data.tools.make_synthetic import generate
from toco_fast.data.views import ToCoViews


class _Sized(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        return key


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("loader") / "set")
    generate(root, num_train=7, num_val=3, num_classes=4, size=32, seed=2)
    return TrainDataset(open_synthetic(root, "train"), ToCoViews(crop_size=16), seed=9)


@pytest.mark.parametrize("n,world,drop_last", [(10, 1, False), (10, 3, False), (10, 3, True), (2, 4, False),
                                               (17, 4, True)])
def test_order_and_shards_match_distributed_sampler(n, world, drop_last):
    for rank in range(world):
        ours = ResumableSampler(n, seed=3, rank=rank, world_size=world, drop_last=drop_last)
        theirs = DistributedSampler(_Sized(n), num_replicas=world, rank=rank, shuffle=True, seed=3,
                                    drop_last=drop_last)
        for epoch in (0, 1, 5):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert [i for _, i in ours] == list(theirs)
            assert len(ours) == len(theirs)


def test_resume_from_offset_is_tail_of_full_epoch():
    sampler = ResumableSampler(23, seed=1, rank=1, world_size=2)
    sampler.set_epoch(4)
    full = list(sampler)
    assert all(epoch == 4 for epoch, _ in full) and len(full) == 12
    for start in (0, 1, 7, 12):
        sampler.set_epoch(4, start=start)
        assert list(sampler) == full[start:] and len(sampler) == 12 - start
    sampler.set_epoch(5)
    assert [i for _, i in sampler] != [i for _, i in full]
    with pytest.raises(ValueError, match="start"):
        sampler.set_epoch(0, start=13)


def test_unshuffled_sampler_and_bad_arguments():
    sampler = ResumableSampler(5, shuffle=False)
    assert [i for _, i in sampler] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(5, rank=2, world_size=2)
    with pytest.raises(ValueError, match="dataset_size"):
        ResumableSampler(0)


def _batches(loader, count):
    out = []
    for iteration, batch in iterate_batches(loader):
        if iteration == count:
            break
        out.append(batch)
    return out


def _same(a, b):
    assert a["name"] == b["name"]
    for key in ("image", "cls_label", "img_box", "view2", "local_source"):
        assert torch.equal(a[key], b[key]), key


def test_batches_independent_of_worker_count(train_set):
    serial = build_train_loader(train_set, batch_size=2, seed=4, num_workers=0)
    parallel = build_train_loader(train_set, batch_size=2, seed=4, num_workers=2)
    assert batches_per_epoch(serial) == 3
    first, second = _batches(serial, 7), _batches(parallel, 7)  # crosses two epoch boundaries
    for a, b in zip(first, second):
        _same(a, b)
    assert first[0]["image"].shape == (2, 3, 16, 16) and first[0]["img_box"].shape == (2, 4)


def test_resume_mid_epoch_reproduces_batches(train_set):
    loader = build_train_loader(train_set, batch_size=2, seed=4)
    reference = _batches(loader, 8)
    for start in (1, 3, 4):
        resumed = []
        for iteration, batch in iterate_batches(build_train_loader(train_set, batch_size=2, seed=4), start):
            if iteration == 8:
                break
            resumed.append(batch)
        for a, b in zip(reference[start:], resumed):
            _same(a, b)


def test_set_position_and_rng_isolation(train_set):
    loader = build_train_loader(train_set, batch_size=3, seed=0)
    set_position(loader, epoch=2, batch=1)
    assert len(loader) == 1 and loader.sampler.epoch == 2
    state = torch.get_rng_state()
    next(iter(loader))
    assert torch.equal(state, torch.get_rng_state()), "iterating must not consume the global torch RNG"
    with pytest.raises(ValueError, match="batch"):
        set_position(loader, 0, 3)
    with pytest.raises(ValueError, match="batch_size"):
        build_train_loader(train_set, batch_size=8)


def test_worker_init_seeds_from_seed_epoch_worker():
    sampler = ResumableSampler(4)

    def draw(seed, epoch, worker):
        sampler.set_epoch(epoch)
        WorkerInit(seed, sampler)(worker)
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    assert draw(1, 0, 0) == draw(1, 0, 0)
    assert len({draw(1, 0, 0)[k] for k in range(3)}) == 3
    assert draw(1, 0, 1) != draw(1, 0, 0)
    assert draw(1, 1, 0) != draw(1, 0, 0)
    assert draw(2, 0, 0) != draw(1, 0, 0)


def test_val_loader_shards_without_duplicates(train_set):
    val = EvalDataset(open_synthetic(train_set.source.root, "val"))
    seen = []
    for rank in range(2):
        for batch in build_val_loader(val, rank=rank, world_size=2):
            assert batch["image"].shape == (1, 3, 32, 32) and batch["mask"].shape == (1, 32, 32)
            seen.extend(batch["name"])
    assert sorted(seen) == ["val_000000", "val_000001", "val_000002"]
