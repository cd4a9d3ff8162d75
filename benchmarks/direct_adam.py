"""Benchmark-only: fused Adam's CPU kernel called directly, without `Optimizer.step`'s Python.

The library steps its optimizer through ``opt.step()``. This module keeps the alternative, a direct
call of the private ``torch._fused_adam_`` kernel with the optimizer's own state, so that
``speed.py --setups vaelab,vaelab-adam-direct`` and `speed_parts.py` can measure what ``opt.step()``
costs per epoch. It is the same update bit for bit (`check_same_update` verifies that at start-up).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_KERNEL = getattr(torch, "_fused_adam_", None)


def _direct_args(opt: torch.optim.Optimizer) -> tuple | None:
    """The kernel's tensor lists and hyperparameters for this step, or None where only the
    optimizer's own step is right (another optimizer or device, options the call below ignores,
    hooks, or the first step, which creates the state)."""
    if _KERNEL is None or type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
        return None
    if opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks:
        return None
    g = opt.param_groups[0]
    if not g.get("fused") or g.get("amsgrad") or g.get("maximize") or g.get("differentiable"):
        return None
    if g.get("capturable") or g.get("decoupled_weight_decay") or isinstance(g["lr"], torch.Tensor):
        return None
    params, grads, avgs, sqs, steps = [], [], [], [], []
    for p in g["params"]:
        if p.grad is None:
            continue
        state = opt.state.get(p)
        if not state or p.device.type != "cpu" or p.grad.is_sparse:
            return None
        params.append(p)
        grads.append(p.grad)
        avgs.append(state["exp_avg"])
        sqs.append(state["exp_avg_sq"])
        steps.append(state["step"])
    if not params or len({(p.dtype, s.dtype) for p, s in zip(params, steps, strict=True)}) != 1:
        return None
    return params, grads, avgs, sqs, steps, g


def direct_step(opt: torch.optim.Optimizer) -> None:
    """One Adam update: the fused kernel called directly where that is ``Adam.step``'s update, else
    ``Adam.step`` itself (called on the class, so it works on an optimizer patched by `use_direct`)."""
    args = _direct_args(opt)
    if args is None:
        type(opt).step(opt)
        return
    params, grads, avgs, sqs, steps, g = args
    beta1, beta2 = g["betas"]
    with torch.no_grad():
        torch._foreach_add_(steps, 1)
        _KERNEL(
            params,
            grads,
            avgs,
            sqs,
            [],
            steps,
            amsgrad=False,
            lr=g["lr"],
            beta1=float(beta1),
            beta2=float(beta2),
            weight_decay=g["weight_decay"],
            eps=g["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


def use_direct(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Make ``opt.step()`` the direct kernel call for this instance (the engine calls ``opt.step()``)
    -> opt."""
    opt.step = lambda closure=None: direct_step(opt)  # an instance attribute shadows Adam.step
    return opt


def check_same_update(steps: int = 6) -> None:
    """Raise unless the direct call updates parameters and state exactly as ``Adam.step`` does."""
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    b = copy.deepcopy(a)
    oa = torch.optim.Adam(a.parameters(), lr=1e-2, fused=True)
    ob = use_direct(torch.optim.Adam(b.parameters(), lr=1e-2, fused=True))
    for i in range(steps):
        g = torch.Generator().manual_seed(i)
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        oa.step()
        ob.step()
    same = all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    if not (same and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])):
        raise AssertionError("the direct fused-Adam call no longer matches Adam.step on this torch")
    if _direct_args(ob) is None:
        raise AssertionError("the direct fused-Adam call is not taken on this torch (no kernel?)")
