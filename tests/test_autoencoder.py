"""Tests for the KL autoencoder, its blocks, the diagonal Gaussian posterior and the PatchGAN discriminator."""
import math

import pytest
import torch
import torch.nn.functional as F

from vavae_lab.errors import ConfigError, DataError
from vavae_lab.tokenizer.autoencoder import AutoencoderKL, DiagonalGaussian
from vavae_lab.tokenizer.blocks import AttnBlock, Downsample, Upsample
from vavae_lab.tokenizer.discriminator import NLayerDiscriminator, hinge_d_loss, vanilla_d_loss
from vavae_lab.tokenizer.official import OFFICIAL_F16D32

TOY = dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,), z_channels=8,
           resolution=32, norm_groups=8)
# Counted by instantiating hustvl/LightningDiT's tokenizer/autoencoder.py AutoencoderKL(32, (1, 1, 2, 2, 4)).
OFFICIAL_F16D32_PARAMS = 69_836_067


def toy(embed_dim=4, **kw):
    torch.manual_seed(0)
    return AutoencoderKL(**{**TOY, "embed_dim": embed_dim, **kw}).eval()


@pytest.mark.parametrize("embed_dim", [4, 16])
def test_toy_shapes(embed_dim):
    model = toy(embed_dim)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        recon, posterior, z = model(x)
    assert model.downsample_factor == 4 and model.latent_channels == embed_dim
    assert recon.shape == x.shape
    assert z.shape == posterior.mean.shape == posterior.logvar.shape == (2, embed_dim, 8, 8)
    assert posterior.kl().shape == (2,)


def test_state_dict_follows_ldm_layout():
    keys = toy().state_dict()
    for name in [
        "encoder.conv_in.weight", "encoder.down.0.block.1.norm1.weight", "encoder.down.0.block.0.conv2.bias",
        "encoder.down.1.block.0.nin_shortcut.weight",  # 32 -> 64 channels
        "encoder.down.1.attn.1.q.weight", "encoder.down.1.attn.0.proj_out.bias",  # level 1 is 16x16
        "encoder.down.0.downsample.conv.weight", "encoder.down.1.downsample.conv.weight",
        "encoder.mid.block_1.conv1.weight", "encoder.mid.attn_1.k.weight", "encoder.mid.block_2.norm2.bias",
        "encoder.norm_out.weight", "encoder.conv_out.weight",
        "decoder.conv_in.weight", "decoder.mid.attn_1.v.weight",
        "decoder.up.2.block.2.conv1.weight",  # num_res_blocks + 1 blocks per decoder level
        "decoder.up.1.attn.2.norm.weight", "decoder.up.0.block.0.nin_shortcut.weight",
        "decoder.up.1.upsample.conv.weight", "decoder.up.2.upsample.conv.weight",
        "decoder.norm_out.bias", "decoder.conv_out.weight", "quant_conv.weight", "post_quant_conv.bias",
    ]:
        assert name in keys, name
    assert "encoder.down.2.downsample.conv.weight" not in keys  # the last level does not downsample
    assert "decoder.up.0.upsample.conv.weight" not in keys  # the finest level does not upsample
    assert not any(".attn." in k for k in keys if k.startswith(("encoder.down.0.", "decoder.up.2.")))
    assert not any("temb" in k for k in keys)
    assert keys["quant_conv.weight"].shape == (8, 16, 1, 1)  # 2*z_channels -> 2*embed_dim
    assert keys["post_quant_conv.weight"].shape == (8, 4, 1, 1)  # embed_dim -> z_channels


def test_groupnorms_use_ldm_eps_and_groups():
    norms = [m for m in toy().modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.eps == 1e-6 and m.num_groups == 8 and m.affine for m in norms)


def test_official_f16d32_parameter_count_and_shapes():
    model = AutoencoderKL(**OFFICIAL_F16D32).eval()
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_F16D32_PARAMS
    keys = model.state_dict()
    assert "encoder.down.4.attn.1.q.weight" in keys and "decoder.up.4.attn.2.q.weight" in keys
    assert not any(k.startswith("encoder.down.3.attn") for k in keys)
    assert model.downsample_factor == 16 and model.latent_channels == 32
    # The model is fully convolutional: a 32 px input checks every layer in a fraction of a 256 px pass.
    with torch.no_grad():
        recon, posterior, z = model(torch.zeros(1, 3, 32, 32), sample_posterior=False)
    assert z.shape == (1, 32, 2, 2) and recon.shape == (1, 3, 32, 32)


def test_downsample_pads_only_right_and_bottom():
    down = Downsample(1)
    with torch.no_grad():
        down.conv.bias.zero_()
        down.conv.weight.zero_()
        down.conv.weight[0, 0, 0, 0] = 1.0  # top-left tap: no padding on the top/left
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    assert torch.equal(down(x), x[..., ::2, ::2])
    with torch.no_grad():
        down.conv.weight.zero_()
        down.conv.weight[0, 0, 2, 2] = 1.0  # bottom-right tap: reads the zero pad at the last row/column
    expected = torch.zeros(1, 1, 3, 3)
    expected[..., :2, :2] = x[..., 2::2, 2::2][..., :2, :2]
    assert torch.equal(down(x), expected)


def test_upsample_is_nearest_then_conv():
    up = Upsample(1)
    with torch.no_grad():
        up.conv.bias.zero_()
        up.conv.weight.zero_()
        up.conv.weight[0, 0, 1, 1] = 1.0  # identity conv
    x = torch.randn(1, 1, 3, 4)
    assert torch.equal(up(x), x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def test_attention_matches_hand_computation():
    torch.manual_seed(1)
    attn = AttnBlock(16, norm_groups=4)
    x = torch.randn(2, 16, 3, 5)
    h = F.group_norm(x, 4, attn.norm.weight, attn.norm.bias, eps=1e-6)
    q, k, v = (conv(h).flatten(2) for conv in (attn.q, attn.k, attn.v))  # (B, C, N)
    weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(16), dim=-1)  # (B, N_query, N_key)
    out = (v @ weights.transpose(1, 2)).reshape(2, 16, 3, 5)
    assert torch.allclose(attn(x), x + attn.proj_out(out), atol=1e-5)


def test_kl_against_hand_computation():
    mean = torch.tensor([0.5, -1.0, 0.0, 2.0]).view(1, 2, 1, 2)
    logvar = torch.tensor([0.0, math.log(2.0), -1.0, 0.3]).view(1, 2, 1, 2)
    post = DiagonalGaussian(torch.cat([mean, logvar], dim=1))
    by_hand = 0.5 * sum(m * m + math.exp(lv) - 1 - lv for m, lv in
                        [(0.5, 0.0), (-1.0, math.log(2.0)), (0.0, -1.0), (2.0, 0.3)])
    assert post.kl().shape == (1,)
    assert post.kl().item() == pytest.approx(by_hand, rel=1e-6)
    assert torch.equal(post.mode(), mean)
    assert torch.allclose(post.std, torch.exp(0.5 * logvar)) and torch.allclose(post.var, torch.exp(logvar))
    assert DiagonalGaussian(torch.zeros(3, 8, 2, 2)).kl().tolist() == [0.0, 0.0, 0.0]


def test_logvar_is_clamped_like_ldm():
    moments = torch.zeros(1, 2, 1, 2)
    moments[0, 1, 0] = torch.tensor([100.0, -100.0])
    assert DiagonalGaussian(moments).logvar.flatten().tolist() == [20.0, -30.0]


def test_sample_statistics_and_generator():
    moments = torch.cat([torch.full((1, 2, 100, 100), 1.5), torch.full((1, 2, 100, 100), math.log(0.25))], dim=1)
    post = DiagonalGaussian(moments)
    z = post.sample(torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(1.5, abs=0.02)
    assert z.std().item() == pytest.approx(0.5, abs=0.02)
    assert torch.equal(z, post.sample(torch.Generator().manual_seed(0)))
    assert not torch.equal(z, post.sample(torch.Generator().manual_seed(1)))


def test_moments_with_odd_channels_are_rejected():
    with pytest.raises(ConfigError, match="2\\*embed_dim"):
        DiagonalGaussian(torch.zeros(1, 3, 2, 2))


def test_forward_mode_decode_clamp_and_last_layers():
    model = toy()
    with torch.no_grad():
        model.decoder.conv_out.weight.mul_(50.0)  # push the raw output outside [-1, 1]
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    recon, posterior, z = model(x, sample_posterior=False)
    assert torch.equal(z, posterior.mean)
    raw = model.decode_raw(z)
    assert torch.equal(recon, raw) and raw.abs().max() > 1
    assert torch.equal(model.decode(z), raw.clamp(-1, 1))
    a, _, _ = model(x, generator=torch.Generator().manual_seed(3))
    b, _, _ = model(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, recon)
    assert model.encoder_last_layer() is model.encoder.conv_out.weight
    assert model.decoder_last_layer() is model.decoder.conv_out.weight
    grad, = torch.autograd.grad(posterior.mean.sum(), model.encoder_last_layer())
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("kw, match", [
    (dict(ch=30), "norm_groups"),
    (dict(ch=32, norm_groups=6), "norm_groups=6"),
    (dict(resolution=30), "divisible by the downsampling factor 4"),
    (dict(attn_resolutions=(12,)), "no level"),
    (dict(num_res_blocks=0), "num_res_blocks"),
    (dict(ch_mult=()), "ch_mult"),
    (dict(dropout=1.0), "dropout"),
])
def test_bad_architectures_raise_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        AutoencoderKL(**{**TOY, "embed_dim": 4, **kw})


def test_bad_inputs_raise_data_error():
    model = toy()
    with pytest.raises(DataError, match="divisible by 4"):
        model.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(DataError, match="\\(B, 3, H, W\\)"):
        model.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(DataError, match="\\(B, 4, h, w\\)"):
        model.decode(torch.zeros(1, 16, 8, 8))


def test_discriminator_layout_and_init():
    torch.manual_seed(0)
    disc = NLayerDiscriminator()
    by_hand = (3 * 64 * 16 + 64) + 64 * 128 * 16 + 2 * 128 + 128 * 256 * 16 + 2 * 256 \
        + 256 * 512 * 16 + 2 * 512 + (512 * 16 + 1)
    assert sum(p.numel() for p in disc.parameters()) == by_hand
    assert disc(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    bns = [m for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 3 and all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bns)
    assert abs(bns[-1].weight.mean().item() - 1.0) < 0.01 and abs(bns[-1].weight.std().item() - 0.02) < 0.005
    assert abs(disc.main[8].weight.std().item() - 0.02) < 0.001
    slopes = [m.negative_slope for m in disc.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert slopes == [0.2] * 4


def test_discriminator_losses_against_hand_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * ((0 + 0.5) / 2 + (0 + 1.5) / 2))
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    expected = 0.5 * ((softplus(-2.0) + softplus(-0.5)) / 2 + (softplus(-2.0) + softplus(0.5)) / 2)
    assert vanilla_d_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
