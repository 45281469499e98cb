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
