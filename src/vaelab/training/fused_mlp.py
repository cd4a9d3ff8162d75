"""A hand-derived training step for the MLP VAE on the CPU: the ELBO's gradients without autograd.

On a small CPU the autograd step of pytorch/examples' 784-400-20 MLP spends about as long in
bookkeeping (graph recording, one small kernel per backward node, fresh gradient tensors every
step) as in its five large matrix products. For the model it covers, `FusedMLPStep` computes the
same loss and the same gradients directly: one matrix product per weight gradient written into
the parameter's ``.grad``, the element-wise backward of each layer in a few in-place kernels.
The maths is `objectives.neg_elbo` exactly (same noise draw, same densities); the tests check the
gradients against autograd and a whole epoch against the autograd step.

Covered: arch mlp (ReLU or gated hidden layers), Bernoulli likelihood, N(0, I) prior, no labels,
the ELBO with any KL weight (beta, warm-up) and no free bits, fp32. Everything else, and every
other device, takes the autograd step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.models.distributions import Bernoulli
from vaelab.models.objectives import Elbo, ElboTerms, neg_elbo
from vaelab.models.priors import StandardNormal
from vaelab.models.vae import VAE


class _Layer(NamedTuple):
    linear: nn.Linear
    act: str  # "relu", "glu" or "none" (the output layer)


def _layers(net: nn.Module) -> list[_Layer] | None:
    """The Linear -> activation chain of an `networks.mlp`, or None if it is anything else."""
    if not isinstance(net, nn.Sequential):
        return None
    mods, out = list(net), []
    i = 0
    while i < len(mods):
        lin = mods[i]
        if not isinstance(lin, nn.Linear) or lin.bias is None:
            return None
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(nxt, nn.ReLU):
            out.append(_Layer(lin, "relu"))
            i += 2
        elif isinstance(nxt, nn.GLU) and nxt.dim in (-1, 1):
            out.append(_Layer(lin, "glu"))
            i += 2
        elif nxt is None:
            out.append(_Layer(lin, "none"))
            i += 1
        else:
            return None
    return out if out and out[-1].act == "none" else None


def elbo_weight(loss_fn: Callable) -> float | None:
    """The KL weight if ``loss_fn`` is the plain ELBO (`neg_elbo`, or an ``Elbo`` without free bits),
    else None: every other loss takes the autograd step."""
    if loss_fn is neg_elbo:
        return 1.0
    if isinstance(loss_fn, Elbo) and loss_fn.free_bits == 0.0:
        return float(loss_fn.beta)
    return None


def supported(model: VAE) -> bool:
    """Whether `FusedMLPStep` computes this model's gradients (see the module docstring)."""
    c = model.config
    return (
        c.arch == "mlp"
        and model.likelihood is Bernoulli  # the step hand-derives the Bernoulli's gradient
        and type(model.prior) is StandardNormal  # the step hand-derives the KL to N(0, I)
        and not c.n_classes
        and model.device.type == "cpu"
        and all(p.dtype == torch.float32 for p in model.parameters())
        and _layers(model.encoder) is not None
        and _layers(model.decoder) is not None
    )


def _forward(layers: list[_Layer], h: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor | None]]]:
    """Run the chain on h (B, in) -> (output (B, out), per layer (its input, its pre-activation
    for GLU layers))."""
    saved = []
    for layer in layers:
        pre = torch.addmm(layer.linear.bias, h, layer.linear.weight.t())  # (B, width)
        saved.append((h, pre if layer.act == "glu" else None))
        if layer.act == "relu":
            h = pre.clamp_min_(0.0)  # in place: the ReLU output doubles as its own backward mask
        elif layer.act == "glu":
            a, g = pre.chunk(2, dim=-1)
            h = a * torch.sigmoid(g)
        else:
            h = pre
    return h, saved


def _grad_buffer(p: Tensor) -> Tensor:
    """A parameter's ``.grad`` (allocated once), for its gradient to be written into in place."""
    if p.grad is None or p.grad.shape != p.shape:
        p.grad = torch.empty_like(p)
    return p.grad


def _backward(
    layers: list[_Layer], saved: list, outputs: list[Tensor], d_out: Tensor, need_input: bool
) -> Tensor | None:
    """Backpropagate d_out (B, out) through the chain, writing weight and bias gradients -> the
    gradient of the chain's input (B, in), or None when not needed."""
    d = d_out
    for i in range(len(layers) - 1, -1, -1):
        layer, (h_in, pre) = layers[i], saved[i]
        if layer.act == "relu":
            d = torch.ops.aten.threshold_backward(d, outputs[i], 0.0)  # d where the unit was on
        elif layer.act == "glu":
            a, g = pre.chunk(2, dim=-1)
            s = torch.sigmoid(g)
            d = torch.cat([d * s, d * a * s * (1.0 - s)], dim=-1)
        w = layer.linear.weight
        torch.mm(d.t(), h_in, out=_grad_buffer(w))  # (width, in)
        torch.sum(d, 0, out=_grad_buffer(layer.linear.bias))
        if i == 0 and not need_input:
            return None
        d = d @ w  # (B, in)
    return d


class FusedMLPStep:
    """Computes `neg_elbo`'s loss, terms and parameter gradients for a `supported` model.

    ``step(x, beta)``: x (B, C, H, W) -> ElboTerms (loss (), recon (B,), kl (B,)), with every
    parameter's ``.grad`` set to d loss / d parameter. Draws the noise from the global generator at
    the same point `neg_elbo` does, so both consume the random stream alike.
    """

    def __init__(self, model: VAE) -> None:
        self.model = model
        enc, dec = _layers(model.encoder), _layers(model.decoder)
        assert enc is not None and dec is not None  # the model is `supported`
        self.enc, self.dec = enc, dec
        self.k = model.config.latent_dim

    @torch.no_grad()
    def step(self, x: Tensor, beta: float = 1.0) -> ElboTerms:
        b = x.shape[0]
        x = x.reshape(b, -1)  # (B, D)
        # forward: q(z|x), z = mu + std * eps, p(x|z) logits
        out, enc_saved = _forward(self.enc, x)  # (B, 2K)
        enc_outs = [s[0] for s in enc_saved[1:]] + [out]  # each layer's output = the next one's input
        mu, logvar = out[:, : self.k], out[:, self.k :]
        std = torch.exp(0.5 * logvar)  # (B, K)
        eps = torch.randn(mu.shape, dtype=mu.dtype)
        z = mu + std * eps
        logits, dec_saved = _forward(self.dec, z)  # (B, D)
        dec_outs = [s[0] for s in dec_saved[1:]] + [logits]
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)  # (B,)
        var = logvar.exp()
        kl = 0.5 * (mu * mu + var - 1.0 - logvar).sum(1)  # (B,)
        loss = (recon + beta * kl).mean()
        # backward of loss = mean_n(recon_n + beta * kl_n)
        d_logits = torch.sigmoid(logits).sub_(x).mul_(1.0 / b)  # (B, D)
        dz = _backward(self.dec, dec_saved, dec_outs, d_logits, need_input=True)  # (B, K)
        assert dz is not None  # need_input=True
        w = beta / b
        d_mu = dz + w * mu
        d_logvar = dz * eps * (0.5 * std) + (0.5 * w) * (var - 1.0)
        _backward(self.enc, enc_saved, enc_outs, torch.cat([d_mu, d_logvar], dim=1), need_input=False)
        return ElboTerms(loss, recon, kl)
