"""Device placement checked on a CPU-only machine: with PyTorch's default device set to 'meta' (data-less), a tensor
made without the input's device lands there and the call fails, as it would on a GPU with a CPU default; correct
code gives bitwise the same results as the ordinary run."""
from __future__ import annotations

import torch


def assert_equal_nested(a, b) -> None:
    """Tensors bitwise equal (same device too), lists/tuples/dicts element by element, anything else by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.device == b.device and torch.equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_equal_nested(x, y)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_equal_nested(a[k], b[k])
    else:
        assert a == b


def assert_same_under_meta_default(run) -> None:
    """``run()`` (inputs and modules on the CPU) gives the same results with the default device set to 'meta'."""
    want = run()
    with torch.device("meta"):
        got = run()
    assert_equal_nested(want, got)
