"""The global batch of every iteration is the same samples in the same order whatever the number of processes:
rank ``r`` takes the contiguous slice ``[r*b, (r+1)*b)`` of it, and knows where its samples sit in it."""
import pytest
from torch.utils.data import Dataset

from toco_fast.data.loader import ResumableSampler, batches_per_epoch, build_train_loader, global_batch_slots


class _Keys(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        return key[1]


def _chunks(order, size):
    return [order[i:i + size] for i in range(0, len(order) - size + 1, size)]


@pytest.mark.parametrize("n, global_batch", [(12, 4), (13, 4), (23, 6), (8, 8), (30, 12)])
@pytest.mark.parametrize("epoch", [0, 3])
def test_ranks_together_see_the_one_process_batches(n, global_batch, epoch):
    one = ResumableSampler(n, seed=5, drop_last=True, batch_size=global_batch)
    one.set_epoch(epoch)
    reference = _chunks([i for _, i in one], global_batch)
    assert len(reference) == n // global_batch
    for world in (w for w in (2, 3, 4, 6) if global_batch % w == 0):
        per_rank = global_batch // world
        shards = []
        for rank in range(world):
            sampler = ResumableSampler(n, seed=5, rank=rank, world_size=world, drop_last=True, batch_size=per_rank)
            sampler.set_epoch(epoch)
            shards.append(_chunks([i for _, i in sampler], per_rank))
        assert [sum((shard[g] for shard in shards), []) for g in range(len(reference))] == reference, world


def test_padded_tail_is_split_evenly():
    shards = [list(ResumableSampler(11, shuffle=False, rank=r, world_size=2, batch_size=3).epoch_indices(0))
              for r in range(2)]
    # 12 places (11 padded by repetition): one global batch of 6, then a tail of 6 split 3 / 3.
    assert shards == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 0]]


def test_loader_epoch_length_and_slots_do_not_depend_on_the_world_size():
    data = _Keys(13)
    lengths = {batches_per_epoch(build_train_loader(data, batch_size=4 // world, rank=0, world_size=world))
               for world in (1, 2, 4)}
    assert lengths == {3}
    assert [list(global_batch_slots(build_train_loader(data, batch_size=2, rank=r, world_size=2))) for r in (0, 1)] \
        == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="batch_size: a global batch of 16"):
        build_train_loader(data, batch_size=8, world_size=2)
