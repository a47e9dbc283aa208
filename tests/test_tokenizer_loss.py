"""Tests for TokenizerLoss (NLL, KL, GAN and VF terms) and build_lpips."""
import math

import pytest
import torch
from torch import nn

from vavae_lab.errors import CheckpointError, ConfigError, WeightsUnavailableError
from vavae_lab.tokenizer.losses import TokenizerLoss, _load_vgg_backbone, build_lpips
from vavae_lab.tokenizer.vf_loss import VFLoss

LATENT, VFM_DIM = 2, 5


class FixedKL:
    """A posterior stand-in whose per-sample KL is given."""

    def __init__(self, values):
        self.values = values

    def kl(self):
        return self.values


class TinyAutoencoder(nn.Module):
    """16x16 RGB -> 2 x 8 x 8 latent (deterministic noise) -> 16x16 RGB."""

    def __init__(self):
        super().__init__()
        self.conv_out = nn.Conv2d(3, 2 * LATENT, 3, stride=2, padding=1)
        self.dec_out = nn.Conv2d(LATENT, 3, 3, padding=1)

    def forward(self, x):
        mean, logvar = self.conv_out(x).chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
        z = mean + torch.exp(0.5 * logvar) * noise
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3))
        recon = self.dec_out(nn.functional.interpolate(z, scale_factor=2.0))
        return recon, FixedKL(kl), z


class MeanSquareLPIPS(nn.Module):
    """A stand-in perceptual distance with LPIPS's output shape B x 1 x 1 x 1."""

    def forward(self, a, b):
        return ((a - b) ** 2).mean(dim=(1, 2, 3), keepdim=True)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    features = torch.randn(2, VFM_DIM, 8, 8)
    return TinyAutoencoder(), images, features


def _make(**kwargs):
    defaults = dict(perceptual_weight=0.0, disc_ndf=8, disc_layers=2, disc_start=10)
    return TokenizerLoss(**{**defaults, **kwargs})


def _run(loss_fn, model, images, features=None, step=0, **kwargs):
    recon, posterior, z = model(images)
    out = loss_fn.generator_loss(images, recon, posterior, step, enc_last_layer=model.conv_out.weight,
                                 dec_last_layer=model.dec_out.weight, z=z, features=features, **kwargs)
    return out, (recon, posterior, z)


def test_nll_and_kl_match_a_hand_computation():
    x = torch.zeros(2, 1, 2, 2)
    r = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 0.0, 0.0, 1.0]).reshape(2, 1, 2, 2)
    loss_fn = _make(logvar_init=0.5, kl_weight=0.1, disc_in_channels=1)
    loss, logs = loss_fn.generator_loss(x, r, FixedKL(torch.tensor([1.0, 3.0])), step=0)
    # nll = sum(|x - r| / e^0.5 + 0.5) / B = (7.5 / e^0.5 + 8 * 0.5) / 2
    nll = (7.5 / math.exp(0.5) + 4.0) / 2
    assert logs["nll"] == pytest.approx(nll, rel=1e-6)
    assert logs["rec"] == pytest.approx(7.5 / 8)
    assert logs["kl"] == pytest.approx(2.0)
    assert logs["logvar"] == pytest.approx(0.5)
    assert loss.item() == pytest.approx(nll + 0.1 * 2.0, rel=1e-6)
    assert logs["total"] == pytest.approx(loss.item())


def test_perceptual_term_is_added_per_pixel_like_ldm():
    x = torch.zeros(2, 1, 2, 2)
    r = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 0.0, 0.0, 1.0]).reshape(2, 1, 2, 2)
    loss_fn = _make(perceptual_weight=2.0, pixel_weight=0.5, lpips=MeanSquareLPIPS(), disc_in_channels=1)
    _, logs = loss_fn.generator_loss(x, r, FixedKL(torch.zeros(2)), step=0)
    p = [(1 + 4 + 0.25) / 4, (9 + 1) / 4]  # per-sample LPIPS stand-in, broadcast over the 4 pixels
    expected = (0.5 * 7.5 + 2.0 * 4 * (p[0] + p[1])) / 2
    assert logs["nll"] == pytest.approx(expected, rel=1e-6)


def test_gan_term_is_off_before_disc_start(batch):
    model, images, _ = batch
    loss_fn = _make(disc_start=10)
    calls = []
    loss_fn.discriminator.register_forward_hook(lambda *args: calls.append(1))
    (loss, logs), _ = _run(loss_fn, model, images, step=9)
    assert logs["g"] == 0.0 and logs["d_weight"] == 0.0 and logs["disc_factor"] == 0.0
    assert loss.item() == pytest.approx(logs["nll"] + 1e-6 * logs["kl"], rel=1e-6)
    d_loss, d_logs = loss_fn.discriminator_loss(images, images, step=9)
    assert d_loss.item() == 0.0 and d_logs["disc_factor"] == 0.0
    d_loss.backward()  # a no-op, not an error
    assert calls == []


def test_gan_term_and_adaptive_weight_after_disc_start(batch):
    model, images, _ = batch
    loss_fn = _make(disc_start=10, disc_weight=0.5)
    (loss, logs), (recon, posterior, _) = _run(loss_fn, model, images, step=10)
    assert logs["g"] != 0.0 and logs["disc_factor"] == 1.0
    nll = ((images - recon).abs() / torch.exp(loss_fn.logvar) + loss_fn.logvar).sum() / 2
    g = -loss_fn.discriminator(recon).mean()
    last = model.dec_out.weight
    ratio = (torch.autograd.grad(nll, last, retain_graph=True)[0].norm()
             / (torch.autograd.grad(g, last, retain_graph=True)[0].norm() + 1e-4))
    assert logs["d_weight"] == pytest.approx(0.5 * ratio.item(), rel=1e-5)
    expected = nll + 1e-6 * posterior.kl().mean() + logs["d_weight"] * g
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_discriminator_loss_is_hinge_on_detached_recon(batch):
    model, images, _ = batch
    loss_fn = _make(disc_start=0, disc_factor=2.0)
    recon, _, _ = model(images)
    d_loss, logs = loss_fn.discriminator_loss(images, recon, step=0)
    with torch.no_grad():
        real, fake = loss_fn.discriminator(images), loss_fn.discriminator(recon)
    hinge = 0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())
    assert d_loss.item() == pytest.approx(2.0 * hinge.item(), rel=1e-5)
    assert logs["logits_fake"] == pytest.approx(fake.mean().item(), rel=1e-5)
    d_loss.backward()
    assert model.dec_out.weight.grad is None
    assert all(p.grad is not None for p in loss_fn.discriminator.parameters())


def test_vf_adaptive_weight_is_the_gradient_ratio(batch):
    model, images, features = batch
    loss_fn = _make(vf_loss=VFLoss(LATENT, VFM_DIM), vf_weight=0.1)
    (loss, logs), (recon, posterior, z) = _run(loss_fn, model, images, features)
    nll = ((images - recon).abs() / torch.exp(loss_fn.logvar) + loss_fn.logvar).sum() / 2
    vf = loss_fn.vf_loss(z, features)["vf"]
    last = model.conv_out.weight
    ratio = (torch.autograd.grad(nll, last, retain_graph=True)[0].norm()
             / (torch.autograd.grad(vf, last, retain_graph=True)[0].norm() + 1e-4))
    assert logs["vf"] == pytest.approx(vf.item(), rel=1e-6) and logs["vf"] > 0
    assert logs["mcos"] > 0 and logs["mdms"] > 0
    assert logs["vf_weight"] == pytest.approx(0.1 * ratio.item(), rel=1e-5)
    expected = nll + 1e-6 * posterior.kl().mean() + logs["vf_weight"] * vf
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_vf_weight_fixed_and_reused_every_k_steps(batch):
    model, images, features = batch
    fixed = _make(vf_loss=VFLoss(LATENT, VFM_DIM), vf_weight=0.3, vf_adaptive=False)
    assert _run(fixed, model, images, features)[0][1]["vf_weight"] == pytest.approx(0.3)
    loss_fn = _make(vf_loss=VFLoss(LATENT, VFM_DIM), vf_adaptive_every=3)
    first = _run(loss_fn, model, images, features, step=0)[0][1]["vf_weight"]
    with torch.no_grad():
        model.conv_out.weight.mul_(3.0)  # changes the gradient ratio
    reused = _run(loss_fn, model, images, features, step=2)[0][1]["vf_weight"]
    fresh = _run(loss_fn, model, images, features, step=3)[0][1]["vf_weight"]
    assert reused == first and fresh != first


def test_gradients_reach_projection_logvar_and_encoder(batch):
    model, images, features = batch
    loss_fn = _make(vf_loss=VFLoss(LATENT, VFM_DIM))
    (loss, _), _ = _run(loss_fn, model, images, features, step=20)
    loss.backward()
    assert loss_fn.vf_loss.linear_proj.weight.grad.abs().sum() > 0
    assert loss_fn.logvar.grad is not None and loss_fn.logvar.grad.abs() > 0
    assert model.conv_out.weight.grad.abs().sum() > 0
    assert loss_fn.generator_parameters() == [loss_fn.vf_loss.linear_proj.weight]
    assert loss_fn.generator_parameters(train_logvar=True)[-1] is loss_fn.logvar


def test_eval_mode_uses_zero_adaptive_weights(batch):
    model, images, features = batch
    loss_fn = _make(vf_loss=VFLoss(LATENT, VFM_DIM)).eval()
    with torch.no_grad():
        (loss, logs), _ = _run(loss_fn, model, images, features, step=20)
    assert logs["d_weight"] == 0.0 and logs["vf_weight"] == 0.0 and logs["g"] != 0.0
    assert loss.item() == pytest.approx(logs["nll"] + 1e-6 * logs["kl"], rel=1e-6)


def test_user_mistakes_raise_config_errors(batch):
    model, images, features = batch
    with pytest.raises(ConfigError, match="pass z .* and features"):
        _run(_make(vf_loss=VFLoss(LATENT, VFM_DIM)), model, images, None)
    recon, posterior, z = model(images)
    with pytest.raises(ConfigError, match="enc_last_layer"):
        _make(vf_loss=VFLoss(LATENT, VFM_DIM)).generator_loss(images, recon, posterior, 0, z=z, features=features)
    with pytest.raises(ConfigError, match="dec_last_layer"):
        _make().generator_loss(images, recon, posterior, 10)
    with pytest.raises(ConfigError, match="needs an LPIPS module"):
        TokenizerLoss(perceptual_weight=1.0)
    with pytest.raises(ConfigError, match="disc_loss must be one of"):
        _make(disc_loss="wasserstein")


def test_lpips_stays_frozen_in_eval_and_out_of_checkpoints():
    lpips = nn.Sequential(nn.Dropout(0.5))
    loss_fn = _make(perceptual_weight=1.0, lpips=lpips).train()
    assert loss_fn.training and not lpips.training
    lpips.register_buffer("vgg", torch.ones(3))
    state = loss_fn.state_dict()
    assert "logvar" in state and not any(k.startswith("perceptual_loss.") for k in state)
    _make(perceptual_weight=1.0, lpips=nn.Sequential()).load_state_dict(state)  # strict, no error


@pytest.fixture(scope="module")
def vgg_lpips(tmp_path_factory):
    vgg = pytest.importorskip("torchvision.models.vgg")
    torch.manual_seed(0)
    state = vgg.make_layers(vgg.cfgs["D"]).state_dict()  # the features of vgg16(weights=None)
    path = tmp_path_factory.mktemp("vgg") / "vgg16_features.pth"
    torch.save(state, path)
    return build_lpips(path), state


def test_build_lpips_from_a_local_vgg16(vgg_lpips):
    model, state = vgg_lpips
    loaded = model.state_dict()
    assert all(torch.equal(loaded[f"net.slice{s}.{k}"], state[k])
               for s, k in [(1, "0.weight"), (3, "14.bias"), (5, "28.weight")])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(model(x, x), torch.zeros(2, 1, 1, 1))
    assert (model(x, x.flip(-1)) > 0).all()


def test_vgg_backbone_file_formats(vgg_lpips, tmp_path):
    model, state = vgg_lpips
    # A full vgg16 state dict ("features.N.weight" keys plus the classifier) loads too.
    full = {f"features.{k}": v + 1.0 for k, v in state.items()} | {"classifier.0.bias": torch.zeros(4)}
    torch.save(full, tmp_path / "vgg16_full.pth")
    _load_vgg_backbone(model, tmp_path / "vgg16_full.pth")
    assert torch.equal(model.state_dict()["net.slice2.5.weight"], state["5.weight"] + 1.0)
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"not a torchvision vgg16.*0.weight: file \(1,\).*missing 0.bias"):
        _load_vgg_backbone(model, tmp_path / "wrong.pth")
    (tmp_path / "garbage.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="Could not read"):
        _load_vgg_backbone(model, tmp_path / "garbage.pth")


def test_build_lpips_errors(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="torch.save"):
        build_lpips()
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_lpips(tmp_path / "missing.pth")
