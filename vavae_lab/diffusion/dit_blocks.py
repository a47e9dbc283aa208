"""Building blocks of LightningDiT: embedders, RMSNorm, SwiGLU/GELU MLPs, attention with 2-D RoPE, adaLN-Zero."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import fused

# Both epsilons are the official ones: RMSNorm (LLaMA style) and the affine-free LayerNorm of DiT blocks.
RMSNORM_EPS = 1e-6
LAYERNORM_EPS = 1e-6


def modulate(x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x * (1 + scale) + shift, with (B, D) shift/scale broadcast over the N tokens of x."""
    factor = (1 + scale).unsqueeze(1)
    return x * factor if shift is None else torch.addcmul(shift.unsqueeze(1), x, factor)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """adaLN-Zero residual x + gate * y in one kernel, with a (B, D) gate broadcast over the N tokens."""
    return torch.addcmul(x, gate.unsqueeze(1), y)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of the last dimension: torch's built-in F.rms_norm when it has one, else the LLaMA formula."""
    if x.dtype == torch.float32 and hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)).type_as(x) * weight


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of a float time t followed by a two-layer SiLU MLP (DiT/SiT layout `mlp.0`, `mlp.2`).

    LightningDiT feeds t in [0, 1] as it is (no x1000 rescaling), like SiT.
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    @staticmethod
    def sinusoidal(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """(B,) times -> (B, dim) features [cos(t w_k), sin(t w_k)] with w_k = max_period^(-k / (dim // 2))."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None]
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        if dim % 2:
            features = F.pad(features, (0, 1))
        return features

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed a (B,) tensor of times into (B, hidden_size)."""
        features = self.sinusoidal(t, self.frequency_embedding_size, self.max_period)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class-label embedding table; with class_dropout > 0 it has one extra row, index num_classes, the null class.

    In training, each label is replaced by the null class with probability class_dropout (this trains the
    unconditional model that classifier-free guidance needs). As in DiT/LightningDiT, the null row exists only
    when class_dropout > 0, so the table shape (and the checkpoint) matches the official one.
    """

    def __init__(self, num_classes: int, hidden_size: int, class_dropout: float):
        super().__init__()
        self.num_classes = num_classes
        self.class_dropout = class_dropout
        self.has_null_class = class_dropout > 0
        self.embedding_table = nn.Embedding(num_classes + int(self.has_null_class), hidden_size)

    def drop_labels(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Replace labels by the null class: where force_drop_ids == 1 if given, else at random with class_dropout."""
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.class_dropout
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Embed (B,) integer labels; random class dropout only when train is True."""
        if (train and self.has_null_class) or force_drop_ids is not None:
            labels = self.drop_labels(labels, force_drop_ids)
        return self.embedding_table(labels)


class RMSNorm(nn.Module):
    """Root-mean-square norm x / sqrt(mean(x^2) + eps) * weight, computed in float32 (LLaMA style)."""

    def __init__(self, dim: int, eps: float = RMSNORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise over the last dimension and scale by the learnable weight."""
        if fused.enabled(x, self.weight):
            return fused.RMSNormModulate.apply(x, self.weight, None, None, self.eps)
        return rms_norm(x, self.weight, self.eps)

    def modulated(self, x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
        """modulate(self(x), shift, scale) for x (B, N, D), fused into one autograd node on the fast path."""
        if fused.enabled(x, self.weight, scale):
            return fused.RMSNormModulate.apply(x, self.weight, shift, scale, self.eps)
        return modulate(self(x), shift, scale)


def norm_modulate(norm: nn.Module, x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """modulate(norm(x), shift, scale), fused when the norm is an RMSNorm."""
    if isinstance(norm, RMSNorm):
        return norm.modulated(x, shift, scale)
    return modulate(norm(x), shift, scale)


def make_norm(kind: str, dim: int) -> nn.Module:
    """The block norm: RMSNorm with a weight, or LayerNorm without affine parameters (DiT), both eps 1e-6."""
    if kind == "rmsnorm":
        return RMSNorm(dim)
    return nn.LayerNorm(dim, elementwise_affine=False, eps=LAYERNORM_EPS)


def swiglu_hidden_size(hidden_size: int, mlp_ratio: float) -> int:
    """The official SwiGLU width: two thirds of int(hidden * mlp_ratio), truncated (XL: 3072, B: 2048)."""
    return int(2 / 3 * int(hidden_size * mlp_ratio))


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward w3(silu(a) * b) with [a, b] = w12(x): one fused input projection, as the official."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gated MLP token-wise."""
        hidden = self.w12(x)
        if fused.enabled(hidden):
            return self.w3(fused.SwiGLU.apply(hidden))
        gate, value = hidden.chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class GeluMlp(nn.Module):
    """The DiT MLP fc2(gelu_tanh(fc1(x))), named like timm's Mlp so DiT-style weights load."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP token-wise."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """Rotate each interleaved pair (x_2i, x_2i+1) of the last dimension by 90 degrees: -> (-x_2i+1, x_2i)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class RotaryEmbedding2D(nn.Module):
    """2-D rotary position embedding over a side x side token grid (EVA-02 "VisionRotaryEmbeddingFast" math).

    The head dimension is split in two halves: the first rotates with the token's row index, the second with its
    column index; inside each half, interleaved pairs turn by angle pos * theta^(-2k / half_dim). The cos and sin
    tables (N x head_dim, tokens in row-major order) are persistent buffers `freqs_cos` and `freqs_sin`, as in
    the official checkpoint.
    """

    def __init__(self, head_dim: int, side: int, theta: float = 10000.0):
        super().__init__()
        half = head_dim // 2
        inv_freq = 1.0 / (theta ** (torch.arange(0, half, 2)[: half // 2].float() / half))
        positions = torch.arange(side, dtype=torch.float32)
        angles = torch.repeat_interleave(torch.outer(positions, inv_freq), 2, dim=-1)  # (side, half)
        rows = angles[:, None, :].expand(side, side, -1)
        cols = angles[None, :, :].expand(side, side, -1)
        table = torch.cat([rows, cols], dim=-1).reshape(side * side, -1)  # (N, head_dim)
        self.register_buffer("freqs_cos", table.cos())
        self.register_buffer("freqs_sin", table.sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate queries or keys shaped (..., N, head_dim); returns the same shape and dtype."""
        if fused.enabled(x, self.freqs_cos) and fused.complex_view_ok(x):
            pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
            return torch.view_as_real(pairs * self.rotation()).flatten(-2)
        return (x * self.freqs_cos + rotate_pairs(x) * self.freqs_sin).to(x.dtype)

    def rotation(self) -> torch.Tensor:
        """The (N, head_dim / 2) unit complex numbers cos + i sin of the tables (each pair shares one angle)."""
        return torch.complex(self.freqs_cos[:, 0::2], self.freqs_sin[:, 0::2])

    def split_heads(self, qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fused qkv projection (B, N, 3 * D) -> rotated q, rotated k and v, each (B, heads, N, head_dim)."""
        batch, tokens, width = qkv.shape
        qkv = qkv.view(batch, tokens, 3, num_heads, width // (3 * num_heads))
        if fused.enabled(qkv, self.freqs_cos) and fused.complex_view_ok(qkv):
            return fused.RopeSplit.apply(qkv, self.rotation())
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return self(q), self(k), v


def sincos_pos_embed_2d(dim: int, side: int) -> torch.Tensor:
    """Fixed (side*side, dim) sin-cos table of DiT/MAE: first half encodes the column, second half the row.

    Each half is [sin(p w_k), cos(p w_k)] with w_k = 10000^(-k / (dim / 4)), computed in float64.
    """
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    coords = torch.arange(side, dtype=torch.float64)
    row, col = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([encode(col), encode(row)], dim=1).float()


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv linear (with bias), optional per-head QK-norm and RoPE, SDPA, proj.

    QK-norm uses RMSNorm when the blocks use RMSNorm, else an affine LayerNorm (eps 1e-5), as the official.
    """

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool = False, norm: str = "rmsnorm"):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        if qk_norm:
            make = (lambda: RMSNorm(self.head_dim)) if norm == "rmsnorm" else (lambda: nn.LayerNorm(self.head_dim))
            self.q_norm, self.k_norm = make(), make()
        else:
            self.q_norm = self.k_norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding2D | None = None) -> torch.Tensor:
        """Attend over the N tokens of x (B, N, dim)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x)
        if rope is not None and isinstance(self.q_norm, nn.Identity):
            q, k, v = rope.split_heads(qkv, self.num_heads)
        else:
            qkv = qkv.reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
            q, k = self.q_norm(q), self.k_norm(k)
            if rope is not None:
                q, k = rope(q), rope(k)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class LightningDiTBlock(nn.Module):
    """Transformer block with adaLN-Zero: x += gate * attn(modulate(norm(x))); x += gate * mlp(modulate(norm(x))).

    With adaln_shift=False ("wo_shift" upstream) the conditioning predicts only scale and gate (4 vectors, not 6).
    """

    def __init__(self, hidden_size: int, num_heads: int, *, mlp_ratio: float = 4.0, mlp: str = "swiglu",
                 norm: str = "rmsnorm", qk_norm: bool = False, adaln_shift: bool = True):
        super().__init__()
        self.norm1 = make_norm(norm, hidden_size)
        self.attn = Attention(hidden_size, num_heads, qk_norm=qk_norm, norm=norm)
        self.norm2 = make_norm(norm, hidden_size)
        if mlp == "swiglu":
            self.mlp = SwiGLUFFN(hidden_size, swiglu_hidden_size(hidden_size, mlp_ratio))
        else:
            self.mlp = GeluMlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaln_shift = adaln_shift
        chunks = 6 if adaln_shift else 4
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, chunks * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: RotaryEmbedding2D | None = None) -> torch.Tensor:
        """Update tokens x (B, N, D) under the conditioning vector c (B, D)."""
        if self.adaln_shift:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        else:
            scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(4, dim=1)
            shift_msa = shift_mlp = None
        x = gated_residual(x, gate_msa, self.attn(norm_modulate(self.norm1, x, shift_msa, scale_msa), rope=rope))
        return gated_residual(x, gate_mlp, self.mlp(norm_modulate(self.norm2, x, shift_mlp, scale_mlp)))


class FinalLayer(nn.Module):
    """Output head: norm, adaLN modulation (always with shift, also in wo_shift models), linear to patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, *, norm: str = "rmsnorm"):
        super().__init__()
        self.norm_final = make_norm(norm, hidden_size)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens -> (B, N, p * p * out_channels) patch values."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(norm_modulate(self.norm_final, x, shift, scale))


class PatchEmbed(nn.Module):
    """Cut a (B, C, H, W) latent into p x p patches and project each to a token: a strided conv named `proj`."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H/p * W/p, hidden), tokens in row-major order."""
        return self.proj(x).flatten(2).transpose(1, 2)
