import torch

from runners.retrieval import EpochSampler


def test_sampler_epochs_are_permutations_and_pure_in_step():
    s = EpochSampler(n=100, batch_size=10, seed=3)
    epoch0 = torch.cat([s.indices(i) for i in range(10)])
    assert sorted(epoch0.tolist()) == list(range(100))
    epoch1 = torch.cat([s.indices(i) for i in range(10, 20)])
    assert sorted(epoch1.tolist()) == list(range(100)) and not torch.equal(epoch0, epoch1)
    fresh = EpochSampler(n=100, batch_size=10, seed=3)  # no history: same batch for the same step
    assert torch.equal(fresh.indices(13), s.indices(13)) and torch.equal(fresh.indices(2), epoch0[20:30])
    assert not torch.equal(EpochSampler(100, 10, seed=4).indices(0), s.indices(0))


def test_sampler_drops_the_partial_batch():
    s = EpochSampler(n=25, batch_size=10, seed=0)
    assert s.per_epoch == 2 and len(s.indices(1)) == 10
