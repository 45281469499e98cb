import torch

from algorithms.rollout import nstep_returns


def naive_returns(r, d, last, gamma):
    T, N = r.shape
    out = torch.zeros(T, N, dtype=r.dtype)
    for n in range(N):
        for t in range(T):
            ret, disc = 0.0, 1.0
            for k in range(t, T):
                ret += disc * r[k, n]
                if d[k, n]:
                    break
                disc *= gamma
            else:
                ret += disc * last[n]
            out[t, n] = ret
    return out


def test_nstep_returns_against_direct_sums():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(7, 3, generator=g, dtype=torch.float64)
    d = (torch.rand(7, 3, generator=g) < 0.3).double()
    last = torch.randn(3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(nstep_returns(r, d, last, 0.9), naive_returns(r, d, last, 0.9))


def test_rollout_allocates_time_major_buffers_of_the_right_types():
    from algorithms.rollout import Rollout

    r = Rollout.allocate(5, 3, (4, 84, 84), (), torch.uint8, torch.device("cpu"))
    assert r.obs.shape == (5, 3, 4, 84, 84) and r.obs.dtype == torch.uint8
    assert r.actions.shape == (5, 3) and r.actions.dtype == torch.long
    for t in (r.rewards, r.dones, r.values):
        assert t.shape == (5, 3) and t.dtype == torch.float32 and not t.any()
    assert r.last_value.shape == (3,)
    c = Rollout.allocate(2, 1, (6,), (2,), torch.float32, torch.device("cpu"))
    assert c.actions.shape == (2, 1, 2) and c.actions.dtype == torch.float32
    # every buffer on the requested device (the meta device stands in for a GPU here)
    m = Rollout.allocate(2, 1, (6,), (), torch.float32, torch.device("meta"))
    assert all(t.device.type == "meta" for t in (m.obs, m.actions, m.rewards, m.dones, m.values, m.last_value))
