"""The optimizer the engine builds: torch's fused Adam, stepped through ``opt.step()``, makes the
update of the reference (single-tensor) Adam, through lr changes and a reloaded state."""

from __future__ import annotations

import copy

import torch
from torch import nn

from vaelab.training.engine import make_optimizer


def _pair(**kw: object) -> tuple[nn.Module, torch.optim.Adam, nn.Module, torch.optim.Adam]:
    """Two copies of one small net: reference Adam on the first, fused Adam on the second."""
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    b = copy.deepcopy(a)
    kw = {"lr": 1e-2, **kw}
    ref = torch.optim.Adam(a.parameters(), foreach=False, fused=False, **kw)
    return a, ref, b, torch.optim.Adam(b.parameters(), fused=True, **kw)


def _grads(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def _assert_same(a: nn.Module, oa: torch.optim.Adam, b: nn.Module, ob: torch.optim.Adam) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            torch.testing.assert_close(sb[i][k], sa[i][k], rtol=1e-6, atol=1e-7, check_dtype=False)


def test_make_optimizer_builds_fused_adam_on_the_cpu():
    opt = make_optimizer(nn.Linear(3, 2), 1e-3)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["fused"]
    assert not opt.param_groups[0]["capturable"]  # capturable is for CUDA graphs only


def test_fused_adam_makes_the_reference_update_with_lr_changes_and_a_reloaded_state():
    a, oa, b, ob = _pair(betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01)
    for i in range(12):
        if i == 5:
            for o in (oa, ob):
                o.param_groups[0]["lr"] = 3e-3  # e.g. the NaN guard's lr drop
        if i == 8:
            ob.load_state_dict(copy.deepcopy(ob.state_dict()))  # a resumed run: new state tensors
        _grads(a, i), _grads(b, i)
        if i >= 10:
            a[2].bias.grad = b[2].bias.grad = None  # a parameter without a gradient is left alone
        oa.step()
        ob.step()
        _assert_same(a, oa, b, ob)
