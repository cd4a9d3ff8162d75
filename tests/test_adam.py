"""The direct fused-Adam step: bit for bit `torch.optim.Adam.step`, and `opt.step()` wherever it
cannot be."""

from __future__ import annotations

import copy

import torch
from torch import nn

from vaelab.training import adam
from vaelab.training.adam import adam_step


def _pair(**kw: object) -> tuple[nn.Module, torch.optim.Adam, nn.Module, torch.optim.Adam]:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    b = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    b.load_state_dict(a.state_dict())
    kw = {"lr": 1e-2, "fused": True, **kw}
    return a, torch.optim.Adam(a.parameters(), **kw), b, torch.optim.Adam(b.parameters(), **kw)


def _grads(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def _same(a: nn.Module, oa: torch.optim.Adam, b: nn.Module, ob: torch.optim.Adam) -> bool:
    params = all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    states = all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    return params and states and sa.keys() == sb.keys()


def test_matches_adam_step_bit_for_bit_with_lr_and_hyperparameter_changes():
    a, oa, b, ob = _pair(betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01)
    for i in range(12):
        if i == 5:
            for o in (oa, ob):
                o.param_groups[0]["lr"] = 3e-3  # e.g. a schedule
        _grads(a, i), _grads(b, i)
        oa.step()
        adam_step(ob)
        assert _same(a, oa, b, ob), f"step {i}"
    assert adam._direct_args(ob) is not None  # the direct path really ran after step 1


def test_follows_a_loaded_optimizer_state():
    a, oa, b, ob = _pair()
    for i in range(3):
        _grads(a, i), _grads(b, i)
        oa.step(), adam_step(ob)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # new state tensors (a resumed run)
    for i in range(3, 6):
        _grads(a, i), _grads(b, i)
        oa.step(), adam_step(ob)
    assert _same(a, oa, b, ob)


def test_parameters_without_gradients_are_left_alone():
    a, oa, b, ob = _pair()
    for i in range(4):
        _grads(a, i), _grads(b, i)
        if i >= 2:
            a[2].bias.grad = b[2].bias.grad = None
        oa.step(), adam_step(ob)
    assert _same(a, oa, b, ob)


def test_falls_back_to_opt_step_where_the_kernel_call_would_differ():
    for kw in ({"fused": False}, {"amsgrad": True}, {"maximize": True}):
        a, oa, b, ob = _pair(**kw)
        for i in range(3):
            _grads(a, i), _grads(b, i)
            oa.step(), adam_step(ob)
        assert adam._direct_args(ob) is None, kw
        assert _same(a, oa, b, ob), kw
    a, oa, b, ob = _pair()
    _grads(b, 0)
    assert adam._direct_args(ob) is None  # no state yet: the first step creates it
    adam_step(ob)
    assert adam._direct_args(ob) is not None
    calls = []
    ob.register_step_post_hook(lambda *args: calls.append(1))
    adam_step(ob)
    assert calls == [1]  # a hook makes it take opt.step(), so the hook runs
    sgd = torch.optim.SGD(b.parameters(), lr=0.1)
    assert adam._direct_args(sgd) is None
