"""LightningDiT: shapes for every switch, adaLN-Zero, RoPE and embedding formulas, sizes, official loading."""
import itertools
import math

import pytest
import torch

from vavae_lab.diffusion import dit_blocks, fused
from vavae_lab.diffusion.dit_blocks import (
    LabelEmbedder,
    RMSNorm,
    RotaryEmbedding2D,
    TimestepEmbedder,
    sincos_pos_embed_2d,
    swiglu_hidden_size,
)
from vavae_lab.diffusion.lightningdit import DIT_SIZES, LightningDiT, build_dit, count_parameters
from vavae_lab.diffusion.official import (
    OFFICIAL_URLS,
    infer_dit_arch,
    load_official_lightningdit,
    official_layout_state_dict,
)
from vavae_lab.errors import CheckpointError, ConfigError

TOY = dict(input_size=8, in_channels=4, num_classes=10)


def _toy(size="toy-XS/1", **switches) -> LightningDiT:
    """A toy model whose zero-initialised layers are randomised, so outputs depend on every input."""
    torch.manual_seed(0)
    model = build_dit(size, **TOY, **switches)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                param.normal_(0, 0.1)
    return model.eval()


def _inputs(batch=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 8, 8, generator=gen), torch.rand(batch, generator=gen), torch.tensor([0, 3, 9])[:batch]


@pytest.mark.parametrize("patch", [1, 2])
def test_forward_shape_for_every_switch_combination(patch):
    x, t, y = _inputs()
    for mlp, norm, pos, qk_norm, shift, sigma in itertools.product(
            ("swiglu", "gelu"), ("rmsnorm", "layernorm"), ("rope", "abs"), (False, True), (True, False), (False, True)):
        model = _toy(f"toy-XS/{patch}", mlp=mlp, norm=norm, pos=pos, qk_norm=qk_norm, adaln_shift=shift,
                     learn_sigma=sigma)
        with torch.no_grad():
            out = model(x, t, y)
        assert out.shape == x.shape, (mlp, norm, pos, qk_norm, shift, sigma)
        assert torch.isfinite(out).all()


def test_fresh_model_outputs_zero_but_can_learn():
    model = build_dit("toy-S/1", **TOY)
    x, t, y = _inputs()
    out = model(x, t, y)
    assert torch.equal(out, torch.zeros_like(x))  # adaLN-Zero + zero output layer
    out.pow(2).add(out).sum().backward()
    assert model.final_layer.linear.weight.grad.abs().sum() > 0
    block = model.blocks[0].adaLN_modulation[-1]
    assert torch.equal(block.weight, torch.zeros_like(block.weight))


def test_output_depends_on_t_and_y_and_scalar_t_broadcasts():
    model = _toy()
    x, t, y = _inputs()
    with torch.no_grad():
        base = model(x, t, y)
        assert not torch.allclose(base, model(x, t.flip(0), y))
        assert not torch.allclose(base, model(x, t, (y + 1) % 10))
        ones = model(x, torch.ones(3), torch.full((3,), model.null_class))  # t = 1 (data) with the null class
        assert torch.allclose(ones, model(x, 1.0, torch.full((3,), 10)))
        assert torch.isfinite(ones).all()


def test_class_dropout_only_in_training():
    model = _toy(class_dropout=0.999999)
    x, t, y = _inputs()
    null = torch.full_like(y, model.null_class)
    with torch.no_grad():
        uncond = model(x, t, null)
        cond = model(x, t, y)
        model.train()
        dropped = model(x, t, y)  # every label replaced by the null class
    assert torch.allclose(dropped, uncond, atol=1e-6)
    assert not torch.allclose(cond, uncond)


def test_label_embedder_dropout_rate_force_ids_and_table_size():
    emb = LabelEmbedder(num_classes=10, hidden_size=8, class_dropout=0.25)
    labels = torch.randint(0, 10, (20000,))
    torch.manual_seed(0)
    dropped = emb.drop_labels(labels)
    assert abs((dropped == 10).float().mean().item() - 0.25) < 0.02
    assert torch.equal(dropped[dropped != 10], labels[dropped != 10])
    forced = emb.drop_labels(torch.tensor([1, 2, 3]), force_drop_ids=torch.tensor([1, 0, 1]))
    assert forced.tolist() == [10, 2, 10]
    assert torch.equal(emb(torch.tensor([4]), train=False), emb.embedding_table.weight[4:5])
    assert emb.embedding_table.num_embeddings == 11
    # As DiT and the official code: no null row without class dropout.
    assert LabelEmbedder(10, 8, 0.0).embedding_table.num_embeddings == 10


def test_timestep_embedding_against_hand_values():
    t = torch.tensor([0.0, 0.5])
    feats = TimestepEmbedder.sinusoidal(t, 4)  # w = [1, 10000 ** -0.5]
    assert torch.allclose(feats[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    expected = [math.cos(0.5), math.cos(0.005), math.sin(0.5), math.sin(0.005)]
    assert torch.allclose(feats[1], torch.tensor(expected), atol=1e-7)
    assert TimestepEmbedder.sinusoidal(t, 5).shape == (2, 5)


def test_rmsnorm_against_hand_value():
    norm = RMSNorm(2, eps=0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0]))
    out = norm(torch.tensor([[3.0, 4.0]]))
    rms = math.sqrt((9 + 16) / 2)
    assert torch.allclose(out, torch.tensor([[3 / rms, 8 / rms]]))


def test_sincos_pos_embed_layout():
    dim, side = 8, 3
    table = sincos_pos_embed_2d(dim, side)
    assert table.shape == (9, 8)
    omega = [1.0, 0.01]  # 10000 ** (-k / (dim / 4))
    row, col = 1, 2
    token = table[row * side + col]
    first = [math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
    second = [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega]
    assert torch.allclose(token, torch.tensor(first + second), atol=1e-6)


def test_rope_rotates_first_pair_by_row_index_and_preserves_norms():
    rope = RotaryEmbedding2D(head_dim=8, side=4)  # half = 4: angles pos * [1, 1/100] per half
    x = torch.zeros(16, 8)
    x[:, 0] = 1.0  # first pair of the row half
    x[:, 4] = 1.0  # first pair of the column half
    out = rope(x)
    row, col = 2, 3
    token = out[row * 4 + col]
    assert torch.allclose(token[:2], torch.tensor([math.cos(row), math.sin(row)]), atol=1e-6)
    assert torch.allclose(token[4:6], torch.tensor([math.cos(col), math.sin(col)]), atol=1e-6)
    y = torch.randn(2, 3, 16, 8)
    assert torch.allclose(rope(y).norm(dim=-1), y.norm(dim=-1), atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    side = 6
    rope = RotaryEmbedding2D(head_dim=16, side=side)
    gen = torch.Generator().manual_seed(0)
    q = rope(torch.randn(16, generator=gen).expand(side * side, 16))
    k = rope(torch.randn(16, generator=gen).expand(side * side, 16))
    scores = q @ k.T

    def s(a, b):
        return scores[a[0] * side + a[1], b[0] * side + b[1]]

    for (m, n, shift) in [((0, 0), (1, 2), (3, 1)), ((2, 5), (4, 0), (1, 0)), ((1, 1), (1, 1), (4, 4))]:
        moved_m = (m[0] + shift[0], m[1] + shift[1])
        moved_n = (n[0] + shift[0], n[1] + shift[1])
        assert torch.allclose(s(m, n), s(moved_m, moved_n), atol=1e-5)
    assert not torch.allclose(s((0, 0), (1, 2)), s((0, 0), (2, 1)), atol=1e-3)


def test_parameter_counts_of_the_paper_sizes():
    with torch.device("meta"):
        xl = build_dit("XL/1")
        base = build_dit("B/2")
        large = build_dit("L/2")
    # The official model counts its frozen pos_embed as a parameter: 675,256,736 in all (paper: ~675M).
    assert count_parameters(xl) + xl.pos_embed.numel() == 675_256_736
    assert abs(count_parameters(base) / 130e6 - 1) < 0.01  # DiT-B ~130M
    assert abs(count_parameters(large) / 458e6 - 1) < 0.01  # DiT-L ~458M
    assert swiglu_hidden_size(1152, 4.0) == 3072 and swiglu_hidden_size(1024, 4.0) == 2730
    assert DIT_SIZES["1.0B/1"]["hidden_size"] == 1536 and DIT_SIZES["1.6B/2"]["depth"] == 28


def test_plain_dit_layout_has_affine_free_layernorm_and_fc_mlp():
    model = build_dit("toy-XS/1", **TOY, mlp="gelu", norm="layernorm", pos="abs")
    keys = set(model.state_dict())
    assert "blocks.0.mlp.fc1.weight" in keys and "blocks.0.mlp.fc2.weight" in keys
    assert not any(k.startswith(("blocks.0.norm1.", "feat_rope.")) for k in keys)
    assert model.blocks[0].norm1.elementwise_affine is False
    swiglu = build_dit("toy-XS/1", **TOY, qk_norm=True, adaln_shift=False).state_dict()
    assert {"blocks.0.mlp.w12.weight", "blocks.0.attn.q_norm.weight", "feat_rope.freqs_cos"} <= set(swiglu)
    assert swiglu["blocks.0.adaLN_modulation.1.weight"].shape == (4 * 64, 64)


def test_gradient_checkpointing_gives_the_same_gradients():
    x, t, y = _inputs()
    grads = []
    for flag in (False, True):
        model = _toy(class_dropout=0.0, grad_checkpoint=flag).train()
        model(x, t, y).square().mean().backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(mlp="relu"), "mlp='relu'"),
    (dict(norm="batchnorm"), "norm='batchnorm'"),
    (dict(pos="learned"), "pos='learned'"),
    (dict(hidden_size=64, num_heads=5), "not divisible by num_heads"),
    (dict(input_size=9, patch_size=2), "not divisible by patch_size"),
    (dict(hidden_size=24, num_heads=4), "head_dim"),
    (dict(class_dropout=1.0), "class_dropout"),
])
def test_invalid_arguments_raise_config_error(kwargs, fragment):
    args = dict(input_size=8, in_channels=4, hidden_size=64, depth=1, num_heads=4, num_classes=10) | kwargs
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        LightningDiT(**args)


def test_build_dit_errors_and_input_checks():
    with pytest.raises(ConfigError, match="Did you mean 'XL/1'"):
        build_dit("XL1")
    with pytest.raises(ConfigError, match="unknown switches"):
        build_dit("toy-XS/1", **TOY, use_swiglu=True)
    with pytest.raises(ConfigError, match="already fixes"):
        build_dit("toy-XS/1", **TOY, depth=3)
    model = build_dit("toy-XS/1", **TOY)
    with pytest.raises(ConfigError, match="in_channels=3"):
        model(torch.zeros(1, 3, 8, 8), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ConfigError, match="integer tensor"):
        model(torch.zeros(1, 4, 8, 8), torch.zeros(1), torch.zeros(1))


def test_official_checkpoint_round_trip_uses_ema_and_strips_prefixes(tmp_path):
    model = _toy(qk_norm=True)
    ckpt = official_layout_state_dict(model)
    ckpt["model"] = {k: v + 1.0 if v.is_floating_point() else v for k, v in ckpt["model"].items()}  # online != EMA
    ckpt["ema"] = {f"module.{k}": v for k, v in ckpt["ema"].items()}
    path = tmp_path / "lightningdit.pt"
    torch.save(ckpt, path)
    loaded = load_official_lightningdit(path, size="toy-XS/1", **TOY, qk_norm=True)
    x, t, y = _inputs()
    with torch.no_grad():
        assert torch.allclose(loaded(x, t, y), model(x, t, y), atol=1e-6)
    assert not loaded.training
    online = load_official_lightningdit(path, size="toy-XS/1", use_ema=False, **TOY, qk_norm=True)
    assert torch.allclose(online.x_embedder.proj.bias, model.x_embedder.proj.bias + 1.0)
    raw = tmp_path / "raw.pt"
    torch.save(model.state_dict(), raw)
    again = load_official_lightningdit(raw, size="toy-XS/1", **TOY, qk_norm=True)
    assert all(p.requires_grad for p in again.parameters())


def test_official_loading_errors_name_the_problem_and_the_right_size(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(official_layout_state_dict(build_dit("toy-S/2", **TOY)), path)
    with pytest.raises(CheckpointError) as info:
        load_official_lightningdit(path, size="toy-XS/1", **TOY)
    message = str(info.value)
    assert "unexpected keys" in message and "shape mismatches" in message and "size='toy-S/2'" in message
    assert infer_dit_arch(torch.load(path, weights_only=True)["ema"])["patch_size"] == 2
    with pytest.raises(CheckpointError, match=OFFICIAL_URLS["800ep"]):
        load_official_lightningdit(tmp_path / "absent.pt")
    only_model = tmp_path / "only_model.pt"
    torch.save({"model": build_dit("toy-XS/1", **TOY).state_dict()}, only_model)
    with pytest.raises(CheckpointError, match="use_ema=False"):
        load_official_lightningdit(only_model, size="toy-XS/1", **TOY)
    with pytest.raises(ConfigError, match="unknown switches"):
        load_official_lightningdit(only_model, size="toy-XS/1", use_rope=True)


def _grads(fn, *tensors):
    """Output of fn and the gradients of its inputs for a fixed random upstream gradient."""
    tensors = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*tensors)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(7)))
    return [out.detach()] + [t.grad for t in tensors]


def _assert_all_close(got, want, atol=1e-5):
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=atol, rtol=1e-5), (a - b).abs().max()


def test_fast_rmsnorm_and_modulation_match_the_llama_formula_forward_and_backward():
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(3, 5, 16, generator=gen), 1 + 0.1 * torch.randn(16, generator=gen)
    shift, scale = torch.randn(3, 16, generator=gen), torch.randn(3, 16, generator=gen)
    norm = RMSNorm(16)

    def formula(x, w):
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)) * w

    def fast(x, w, shift, scale):
        return fused.RMSNormModulate.apply(x, w, shift, scale, norm.eps)

    want = _grads(lambda x, w, sh, sc: formula(x, w) * (1 + sc[:, None]) + sh[:, None], x, weight, shift, scale)
    _assert_all_close(_grads(fast, x, weight, shift, scale), want)
    no_shift = _grads(lambda x, w, sc: fast(x, w, None, sc), x, weight, scale)
    _assert_all_close(no_shift, _grads(lambda x, w, sc: formula(x, w) * (1 + sc[:, None]), x, weight, scale))
    plain = _grads(lambda x, w: fast(x, w, None, None), x, weight)
    _assert_all_close(plain, _grads(formula, x, weight))
    # the module's fast path, the module's fallback (F.rms_norm or the formula) and the functional all agree
    with torch.no_grad():
        norm.weight.copy_(weight)
    assert torch.allclose(norm(x), formula(x, weight), atol=1e-6)
    assert torch.allclose(dit_blocks.rms_norm(x, weight, norm.eps), formula(x, weight), atol=1e-6)
    assert torch.allclose(norm.modulated(x, shift, scale), want[0], atol=1e-6)
    assert torch.allclose(dit_blocks.rms_norm(x.double(), weight, 1e-6), formula(x, weight).double(), atol=1e-6)


def _rotate_half_formula(x, cos, sin):
    """The official EVA rotation: x * cos + rotate_half(x) * sin with (-x_odd, x_even) interleaved."""
    pairs = x.unflatten(-1, (-1, 2))
    return x * cos + torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2) * sin


def test_fast_rope_and_qkv_split_match_the_rotate_half_formula_forward_and_backward():
    rope = RotaryEmbedding2D(head_dim=8, side=3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 9, 8, generator=gen)
    want = _grads(lambda x: _rotate_half_formula(x, rope.freqs_cos, rope.freqs_sin), x)
    _assert_all_close(_grads(rope, x), want)
    batch, tokens, heads = 2, 9, 3
    qkv = torch.randn(batch, tokens, 3 * heads * 8, generator=gen)

    def reference(qkv):
        q, k, v = qkv.reshape(batch, tokens, 3, heads, 8).permute(2, 0, 3, 1, 4).unbind(0)
        rot = [_rotate_half_formula(t, rope.freqs_cos, rope.freqs_sin) for t in (q, k)]
        return torch.stack(rot + [v])

    _assert_all_close(_grads(lambda t: torch.stack(rope.split_heads(t, heads)), qkv), _grads(reference, qkv))
    # a gradient that reaches only v (q and k unused) still comes back complete
    v_only = _grads(lambda t: rope.split_heads(t, heads)[2], qkv)
    _assert_all_close(v_only, _grads(lambda t: reference(t)[2], qkv))


def test_fast_swiglu_matches_the_formula_forward_and_backward():
    from vavae_lab.diffusion.dit_blocks import SwiGLUFFN

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 12, generator=gen)

    def formula(h):
        gate, value = h.chunk(2, dim=-1)
        return torch.nn.functional.silu(gate) * value

    _assert_all_close(_grads(fused.SwiGLU.apply, hidden), _grads(formula, hidden))
    ffn = SwiGLUFFN(8, 6)
    x = torch.randn(2, 5, 8, generator=gen)
    assert torch.allclose(ffn(x), ffn.w3(formula(ffn.w12(x))), atol=1e-6)


@pytest.mark.parametrize("switches", [dict(), dict(qk_norm=True), dict(adaln_shift=False, learn_sigma=True),
                                      dict(norm="layernorm", mlp="gelu", pos="abs")])
def test_fast_paths_match_the_plain_formulas_for_the_whole_model(switches, monkeypatch):
    x, t, y = _inputs()
    runs = []
    for fast in (True, False):
        monkeypatch.setattr(fused, "FAST_PATHS", fast)
        model = _toy(class_dropout=0.0, **switches).train()
        out = model(x, t, y)
        out.square().mean().backward()
        runs.append([out.detach()] + [p.grad for p in model.parameters() if p.grad is not None])
    assert len(runs[0]) == len(runs[1])
    _assert_all_close(runs[0], runs[1], atol=1e-6)


def test_the_config_gate_lists_exactly_the_sizes_the_model_builds():
    from vavae_lab.choices import DIT_SIZES as GATE

    assert GATE == tuple(DIT_SIZES)  # config_rules refuses a size here, before any training, in the same words
