"""LightningDiT: a DiT with SwiGLU, RMSNorm, RoPE and optional QK-norm, plus its registry of model sizes."""
from __future__ import annotations

import difflib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..choices import MLP_KINDS, NORM_KINDS, POS_KINDS
from ..errors import ConfigError
from .dit_blocks import (
    FinalLayer,
    LabelEmbedder,
    LightningDiTBlock,
    PatchEmbed,
    RotaryEmbedding2D,
    TimestepEmbedder,
    sincos_pos_embed_2d,
)

# Keyword arguments of LightningDiT that a size does not fix.
SWITCHES = ("mlp_ratio", "class_dropout", "mlp", "norm", "pos", "qk_norm", "adaln_shift", "learn_sigma",
            "grad_checkpoint")

# depth / width / heads. B, L, XL are DiT's; 1.0B and 1.6B are the larger official LightningDiT models
# (models/lightningdit.py: LightningDiT_1p0B_*, LightningDiT_1p6B_*); toy sizes run on a laptop CPU.
_SHAPES = {
    "toy-XS": dict(depth=2, hidden_size=64, num_heads=4),
    "toy-S": dict(depth=4, hidden_size=96, num_heads=4),
    "toy-M": dict(depth=6, hidden_size=128, num_heads=4),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
    "1.0B": dict(depth=24, hidden_size=1536, num_heads=24),
    "1.6B": dict(depth=28, hidden_size=1792, num_heads=28),
}
DIT_SIZES: dict[str, dict] = {
    f"{name}/{patch}": dict(shape, patch_size=patch) for name, shape in _SHAPES.items() for patch in (1, 2)
}


class LightningDiT(nn.Module):
    """Class-conditional latent transformer: forward(x, t, y) maps latents x_t (B, C, H, W) to a velocity (B, C, H, W).

    t is a float in [0, 1] (t = 1 is data), y an integer class, y == num_classes the null class (needs
    class_dropout > 0). Parameter and buffer names follow the official checkpoint. Plain DiT is
    mlp="gelu", norm="layernorm", pos="abs". Note pos="rope" adds RoPE on top of the fixed sin-cos embedding,
    exactly as the official model does.
    """

    def __init__(self, *, input_size: int = 16, in_channels: int = 32, patch_size: int = 1, hidden_size: int = 1152,
                 depth: int = 28, num_heads: int = 16, mlp_ratio: float = 4.0, num_classes: int = 1000,
                 class_dropout: float = 0.1, mlp: str = "swiglu", norm: str = "rmsnorm", pos: str = "rope",
                 qk_norm: bool = False, adaln_shift: bool = True, learn_sigma: bool = False,
                 grad_checkpoint: bool = False):
        super().__init__()
        _validate(input_size=input_size, in_channels=in_channels, patch_size=patch_size, hidden_size=hidden_size,
                  depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, num_classes=num_classes,
                  class_dropout=class_dropout, mlp=mlp, norm=norm, pos=pos)
        self.config = dict(input_size=input_size, in_channels=in_channels, patch_size=patch_size,
                           hidden_size=hidden_size, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                           num_classes=num_classes, class_dropout=class_dropout, mlp=mlp, norm=norm, pos=pos,
                           qk_norm=qk_norm, adaln_shift=adaln_shift, learn_sigma=learn_sigma)
        self.input_size = input_size
        self.in_channels = in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.grad_checkpoint = grad_checkpoint
        side = input_size // patch_size

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden_size, side).unsqueeze(0))
        self.feat_rope = RotaryEmbedding2D(hidden_size // num_heads, side) if pos == "rope" else None
        self.blocks = nn.ModuleList(
            LightningDiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, mlp=mlp, norm=norm, qk_norm=qk_norm,
                              adaln_shift=adaln_shift)
            for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, norm=norm)
        self.initialize_weights()

    @property
    def null_class(self) -> int:
        """The label that selects the unconditional (null) embedding, for classifier-free guidance."""
        return self.num_classes

    def initialize_weights(self) -> None:
        """DiT initialisation: xavier-uniform linears, N(0, 0.02) embeddings, zero adaLN and zero output layer."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        proj = self.x_embedder.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))  # as a linear on flattened patches
        nn.init.zeros_(proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:  # adaLN-Zero: each block starts as the identity
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, p * p * C_out) tokens in row-major order -> (B, C_out, H, W); each token is laid out (p, p, C)."""
        p, c = self.patch_size, self.out_channels
        side = self.input_size // p
        x = tokens.reshape(tokens.shape[0], side, side, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(tokens.shape[0], c, side * p, side * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor, hidden_block: int | None = None):
        """Predict the velocity for latents x (B, C, H, W) at times t ((B,) or a scalar) and labels y (B,).

        With `hidden_block` k (1-based), return (velocity, the (B, N, hidden) tokens after block k), what REPA reads.
        """
        self._check_inputs(x, y)
        if hidden_block is not None and not 1 <= hidden_block <= len(self.blocks):
            raise ConfigError(f"hidden_block={hidden_block} is not a block of this {len(self.blocks)}-block DiT; "
                              f"set dit.repa.depth to 1..{len(self.blocks)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        tokens = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        hidden = None
        for i, block in enumerate(self.blocks, start=1):
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, c, self.feat_rope, use_reentrant=False)
            else:
                tokens = block(tokens, c, self.feat_rope)
            if i == hidden_block:
                hidden = tokens
        out = self.unpatchify(self.final_layer(tokens, c))
        out = out[:, : self.in_channels] if self.learn_sigma else out
        return out if hidden_block is None else (out, hidden)

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Raise ConfigError when x or y do not fit the shapes this model was built for (shape checks only)."""
        want = (self.in_channels, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ConfigError(
                f"LightningDiT was built for latents of shape (B, {want[0]}, {want[1]}, {want[2]}) but got "
                f"{tuple(x.shape)}; build it with in_channels={x.shape[1] if x.ndim == 4 else '?'} and "
                f"input_size=<latent side> (image size / tokenizer downsampling) to match your latents"
            )
        if y.shape != (x.shape[0],) or y.dtype not in (torch.int64, torch.int32):
            raise ConfigError(
                f"labels y must be an integer tensor of shape ({x.shape[0]},), got dtype {y.dtype} and shape "
                f"{tuple(y.shape)}; use y.long() with one class index per latent"
            )


def _validate(*, input_size, in_channels, patch_size, hidden_size, depth, num_heads, mlp_ratio, num_classes,
              class_dropout, mlp, norm, pos) -> None:
    """Raise ConfigError for LightningDiT arguments that cannot build a model."""
    for name, value, choices in (("mlp", mlp, MLP_KINDS), ("norm", norm, NORM_KINDS), ("pos", pos, POS_KINDS)):
        if value not in choices:
            raise ConfigError(f"LightningDiT {name}={value!r} is unknown; choose one of {list(choices)}")
    for name, value in (("input_size", input_size), ("in_channels", in_channels), ("patch_size", patch_size),
                        ("hidden_size", hidden_size), ("depth", depth), ("num_heads", num_heads),
                        ("num_classes", num_classes)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"LightningDiT {name}={value!r} must be a positive integer")
    if mlp_ratio <= 0:
        raise ConfigError(f"LightningDiT mlp_ratio={mlp_ratio!r} must be positive (DiT uses 4.0)")
    if not 0.0 <= class_dropout < 1.0:
        raise ConfigError(f"LightningDiT class_dropout={class_dropout!r} must be in [0, 1) (the paper uses 0.1)")
    if input_size % patch_size:
        raise ConfigError(f"input_size={input_size} is not divisible by patch_size={patch_size}; pick a patch size "
                          f"that divides the latent side, e.g. 1 or 2")
    if hidden_size % num_heads:
        raise ConfigError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}; pick a head count "
                          f"that divides the width (head_dim = hidden_size / num_heads)")
    if hidden_size % 4:
        raise ConfigError(f"hidden_size={hidden_size} must be a multiple of 4 for the 2-D sin-cos position embedding")
    if pos == "rope" and (hidden_size // num_heads) % 4:
        raise ConfigError(f"pos='rope' needs head_dim = hidden_size / num_heads divisible by 4, got "
                          f"{hidden_size // num_heads}; change num_heads or use pos='abs'")


def build_dit(size: str, *, input_size: int = 16, in_channels: int = 32, num_classes: int = 1000,
              **switches) -> LightningDiT:
    """Build LightningDiT of a registered size ("XL/1", "B/2", "toy-S/1", ...) with the given switches."""
    if size not in DIT_SIZES:
        close = difflib.get_close_matches(size, list(DIT_SIZES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown LightningDiT size {size!r}.{hint} Known sizes: {', '.join(DIT_SIZES)}")
    clash = sorted(set(switches) & set(DIT_SIZES[size]))
    if clash:
        raise ConfigError(f"build_dit got {clash}, which the size {size!r} already fixes; pick another size or "
                          f"construct LightningDiT(...) directly")
    unknown = sorted(set(switches) - set(SWITCHES))
    if unknown:
        raise ConfigError(f"build_dit({size!r}) got unknown switches {unknown}; valid ones are {list(SWITCHES)}")
    return LightningDiT(input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                        **DIT_SIZES[size], **switches)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as pos_embed and the RoPE tables are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
