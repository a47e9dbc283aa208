"""The fused fast paths of LightningDiT's blocks: hand-written autograd kernels for RMSNorm with adaLN modulation,
SwiGLU and RoPE, equal to the plain formulas in dit_blocks.py (tests/test_lightningdit.py) and faster on a CPU.

A student reads dit_blocks.py; this file only makes the same numbers cheaper (benchmarks/dit.py --plain compares).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Eager fast paths (custom autograd Functions) run for these dtypes; others use the plain formulas, which
# keep the official mixed-precision behaviour under autocast. FAST_PATHS = False forces the plain formulas.
FAST_DTYPES = (torch.float32, torch.float64)
FAST_PATHS = True


def enabled(*tensors: torch.Tensor) -> bool:
    """True when the hand-written kernels apply: fast paths enabled, full-precision tensors, not under tracing."""
    return (FAST_PATHS and all(t.dtype in FAST_DTYPES for t in tensors)
            and not torch.compiler.is_compiling())


class RMSNormModulate(torch.autograd.Function):
    """x / rms(x) * weight, then optionally * (1 + scale) + shift, with a hand-written backward (no composite ops).

    Forward is 1 reduction and 2 elementwise passes; backward 5 passes, against about twice that for autograd
    through the formula. The weight is folded into the (B, D) modulation factor, which changes rounding only.
    """

    @staticmethod
    def forward(ctx, x, weight, shift, scale, eps):
        """x (..., D) or (B, N, D) with (B, D) shift/scale; returns the normalised, scaled (and modulated) x."""
        dim = x.shape[-1]
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(dim).add_(eps).rsqrt_()
        xhat = x * rstd
        factor = weight if scale is None else weight * (1 + scale).unsqueeze(1)  # (D,) or (B, 1, D)
        out = xhat * factor if shift is None else torch.addcmul(shift.unsqueeze(1), xhat, factor)
        ctx.save_for_backward(xhat, rstd, weight, scale, factor)
        ctx.has_shift = shift is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        """Gradients for x, weight, shift and scale from the saved normalised input and inverse rms."""
        xhat, rstd, weight, scale, factor = ctx.saved_tensors
        need_x, need_w, need_shift, need_scale, _ = ctx.needs_input_grad
        grad_x = grad_w = grad_shift = grad_scale = None
        if need_shift and ctx.has_shift:
            grad_shift = grad.sum(1)
        if need_w or need_scale:
            if scale is None:
                grad_w = (grad * xhat).reshape(-1, xhat.shape[-1]).sum(0)
            else:
                per_sample = (grad * xhat).sum(1)  # (B, D): gradient of the folded factor
                grad_w = (per_sample * (1 + scale)).sum(0) if need_w else None
                grad_scale = per_sample * weight if need_scale else None
        if need_x:
            grad_xhat = grad * factor
            dot = (grad_xhat * xhat).mean(-1, keepdim=True)
            grad_x = torch.addcmul(grad_xhat, xhat, dot, value=-1.0).mul_(rstd)
        return grad_x, grad_w, grad_shift, grad_scale, None


class SwiGLU(torch.autograd.Function):
    """silu(a) * b for [a, b] = h.chunk(2, -1); the backward writes both halves into one buffer (no torch.cat)."""

    @staticmethod
    def forward(ctx, hidden):
        """(..., 2H) -> (..., H)."""
        gate, value = hidden.chunk(2, dim=-1)
        activated = F.silu(gate)
        ctx.save_for_backward(hidden, activated)
        return activated * value

    @staticmethod
    def backward(ctx, grad):
        """Gradient of the fused projection output, laid out like it."""
        hidden, activated = ctx.saved_tensors
        gate, value = hidden.chunk(2, dim=-1)
        out = torch.empty_like(hidden)
        grad_gate, grad_value = out.chunk(2, dim=-1)
        torch.mul(grad, activated, out=grad_value)
        torch.ops.aten.silu_backward.grad_input(grad * value, gate, grad_input=grad_gate)
        return out


def complex_view_ok(x: torch.Tensor) -> bool:
    """Whether the last dimension of x can be viewed as complex pairs (CPU/CUDA, even strides and offset)."""
    return (x.device.type in ("cpu", "cuda") and x.stride(-1) == 1 and x.storage_offset() % 2 == 0
            and all(stride % 2 == 0 for stride in x.stride()[:-1]))


def _as_pairs(x: torch.Tensor) -> torch.Tensor:
    """View a real (..., 2P) tensor as (..., P) complex pairs, copying first only when its layout forbids it."""
    if not complex_view_ok(x):
        x = x.contiguous()
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


class RopeSplit(torch.autograd.Function):
    """Split a (B, N, 3, heads, head_dim) qkv into heads and rotate q and k by RoPE, as complex products.

    One complex multiply rotates q and k together; the backward writes the three gradients straight into one
    buffer laid out like the qkv projection output, so no stack, no cat and no permute copy is needed.
    """

    @staticmethod
    def forward(ctx, qkv, rotation):
        """Returns q, k (rotated) and v, each (B, heads, N, head_dim); v is a view of qkv."""
        pairs = torch.view_as_complex(qkv[:, :, :2].unflatten(-1, (-1, 2)))  # (B, N, 2, heads, head_dim / 2)
        rotated = torch.view_as_real(pairs * rotation[:, None, None]).flatten(-2)
        ctx.save_for_backward(rotation)
        ctx.shape = qkv.shape
        q, k = rotated.transpose(1, 3).unbind(2)  # each (B, heads, N, head_dim)
        return q, k, qkv[:, :, 2].transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_q, grad_k, grad_v):
        """Gradient of qkv from the three head-split gradients."""
        (rotation,) = ctx.saved_tensors
        out = torch.empty(ctx.shape, dtype=rotation.real.dtype, device=rotation.device)
        back = rotation.conj()[:, None]
        for index, grad in ((0, grad_q), (1, grad_k)):
            target = torch.view_as_complex(out[:, :, index].unflatten(-1, (-1, 2)))
            if grad is None:
                target.zero_()
            else:
                torch.mul(_as_pairs(grad.transpose(1, 2)), back, out=target)
        if grad_v is None:
            out[:, :, 2].zero_()
        else:
            out[:, :, 2].copy_(grad_v.transpose(1, 2))
        return out, None
