"""Tests for the VF loss terms and the adaptive weight against direct loop computations."""
import math

import pytest
import torch

from vavae_lab.errors import ConfigError
from vavae_lab.tokenizer.vf_loss import VFLoss, adaptive_weight

B, D_LAT, D_VFM, H, W = 2, 3, 5, 2, 2


def _cos(a, b):
    return float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))


def _loop_terms(zp, fp, m1, m2):
    """mcos and mdms by explicit loops over batch items and grid positions."""
    batch, _, h, w = zp.shape
    zs = zp.flatten(2).double()
    fs = fp.flatten(2).double()
    n = h * w
    mcos, mdms = 0.0, 0.0
    for b in range(batch):
        for i in range(n):
            mcos += max(0.0, 1.0 - m1 - _cos(zs[b, :, i], fs[b, :, i]))
            for j in range(n):
                gap = abs(_cos(zs[b, :, i], zs[b, :, j]) - _cos(fs[b, :, i], fs[b, :, j]))
                mdms += max(0.0, gap - m2)
    return mcos / (batch * n), mdms / (batch * n * n)


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(B, D_LAT, H, W, generator=gen)
    f = torch.randn(B, D_VFM, H, W, generator=gen)
    return z, f


@pytest.mark.parametrize("projection", ["reverse", "forward"])
@pytest.mark.parametrize("m1,m2", [(0.0, 0.0), (0.5, 0.25), (0.9, 0.6)])
def test_terms_match_loops(inputs, projection, m1, m2):
    torch.manual_seed(1)
    z, f = inputs
    loss = VFLoss(D_LAT, D_VFM, projection=projection, m1=m1, m2=m2, w_mcos=0.7, w_mdms=1.3)
    out = loss(z, f)
    with torch.no_grad():
        zp, fp = loss.project(z, f)
    mcos, mdms = _loop_terms(zp, fp, m1, m2)
    assert out["mcos"].item() == pytest.approx(mcos, rel=1e-5, abs=1e-6)
    assert out["mdms"].item() == pytest.approx(mdms, rel=1e-5, abs=1e-6)
    assert out["vf"].item() == pytest.approx(0.7 * mcos + 1.3 * mdms, rel=1e-5, abs=1e-6)
    assert all(v.dim() == 0 for v in out.values())


def test_relu_clips_terms_that_are_within_the_margin(inputs):
    torch.manual_seed(2)
    z, _ = inputs
    loss = VFLoss(D_LAT, D_VFM, m1=0.5, m2=0.25)
    with torch.no_grad():
        f = loss.linear_proj(z)  # the features are exactly the projected latent
    out = loss(z, f)
    assert out["mcos"].item() == 0.0  # 1 - 0.5 - 1 < 0, clipped
    assert out["mdms"].item() == 0.0  # identical distance matrices, gap 0 < 0.25
    # Large margins clip everything, even for unrelated features.
    wide = VFLoss(D_LAT, D_VFM, m1=2.0, m2=2.0)
    assert wide(z, inputs[1])["vf"].item() == 0.0


def test_opposite_features_give_the_maximum_mcos(inputs):
    z, _ = inputs
    loss = VFLoss(D_LAT, D_VFM, m1=0.0, use_mdms=False)
    with torch.no_grad():
        f = -loss.linear_proj(z)
    assert loss(z, f)["mcos"].item() == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize("use_mcos,use_mdms", [(True, False), (False, True)])
def test_disabled_term_is_zero_and_excluded(inputs, use_mcos, use_mdms):
    torch.manual_seed(3)
    z, f = inputs
    both = VFLoss(D_LAT, D_VFM)
    one = VFLoss(D_LAT, D_VFM, use_mcos=use_mcos, use_mdms=use_mdms)
    one.load_state_dict(both.state_dict())
    full, part = both(z, f), one(z, f)
    kept, dropped = ("mcos", "mdms") if use_mcos else ("mdms", "mcos")
    assert part[dropped].item() == 0.0
    assert full[dropped].item() > 0.0
    assert part[kept].item() == pytest.approx(full[kept].item())
    assert part["vf"].item() == pytest.approx(full[kept].item())


def test_projection_shapes_and_bias():
    rev = VFLoss(D_LAT, D_VFM, projection="reverse")
    fwd = VFLoss(D_LAT, D_VFM, projection="forward")
    assert rev.linear_proj.weight.shape == (D_VFM, D_LAT, 1, 1) and rev.linear_proj.bias is None
    assert fwd.linear_proj.weight.shape == (D_LAT, D_VFM, 1, 1) and fwd.linear_proj.bias is not None
    z, f = torch.randn(B, D_LAT, H, W), torch.randn(B, D_VFM, H, W)
    zp, fp = rev.project(z, f)
    assert zp.shape == (B, D_VFM, H, W) and fp is f
    zp, fp = fwd.project(z, f)
    assert zp is z and fp.shape == (B, D_LAT, H, W)


def test_gradients_reach_latent_and_projection_not_features(inputs):
    z, f = inputs
    z = z.clone().requires_grad_(True)
    f = f.clone().requires_grad_(True)
    loss = VFLoss(D_LAT, D_VFM)
    loss(z, f)["vf"].backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert loss.linear_proj.weight.grad.abs().sum() > 0
    assert f.grad is None


def test_grid_mismatch_names_the_grids():
    loss = VFLoss(D_LAT, D_VFM)
    with pytest.raises(ConfigError, match="VFM grid .* must equal the latent grid"):
        loss(torch.randn(1, D_LAT, 2, 2), torch.randn(1, D_VFM, 3, 3))


def test_input_validation():
    loss = VFLoss(D_LAT, D_VFM)
    with pytest.raises(ConfigError, match="latent_dim=3"):
        loss(torch.randn(1, 4, 2, 2), torch.randn(1, D_VFM, 2, 2))
    with pytest.raises(ConfigError, match="vfm_dim=5"):
        loss(torch.randn(1, D_LAT, 2, 2), torch.randn(1, 6, 2, 2))
    with pytest.raises(ConfigError, match="batch"):
        loss(torch.randn(1, D_LAT, 2, 2), torch.randn(2, D_VFM, 2, 2))
    with pytest.raises(ConfigError, match="B x C x h x w"):
        loss(torch.randn(1, D_LAT, 4), torch.randn(1, D_VFM, 4))


@pytest.mark.parametrize("kwargs", [{"projection": "sideways"}, {"use_mcos": False, "use_mdms": False},
                                    {"m2": -0.1}])
def test_constructor_validation(kwargs):
    with pytest.raises(ConfigError, match="VFLoss: projection must be one of .* got .*"):
        VFLoss(D_LAT, D_VFM, **kwargs)


def _linear_problem():
    gen = torch.Generator().manual_seed(4)
    weight = torch.randn(2, 3, generator=gen).requires_grad_(True)
    x = torch.randn(3, generator=gen)
    y = weight @ x
    return weight, x, y


def test_adaptive_weight_is_the_gradient_norm_ratio():
    weight, x, y = _linear_problem()
    main = (y ** 2).sum()  # d/dW = 2 y x^T
    aux = 3.0 * y.sum()    # d/dW = 3 * 1 x^T
    got = adaptive_weight(main, aux, weight)
    y0 = y.detach()
    grad_main = 2.0 * torch.outer(y0, x)
    grad_aux = 3.0 * torch.outer(torch.ones(2), x)
    expected = grad_main.norm() / (grad_aux.norm() + 1e-4)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not got.requires_grad
    # The graphs were retained: the caller can still backpropagate.
    (main + aux).backward()
    assert weight.grad is not None


def test_adaptive_weight_clamp_and_eps():
    weight, _, y = _linear_problem()
    main = (y ** 2).sum()
    grad_main_norm = torch.autograd.grad(main, weight, retain_graph=True)[0].norm().item()
    flat = 0.0 * y.sum()  # zero gradient: the ratio is ||g_main|| / eps
    assert adaptive_weight(main, flat, weight).item() == pytest.approx(grad_main_norm / 1e-4, rel=1e-5)
    assert adaptive_weight(main, flat, weight, max_value=10.0).item() == 10.0
    assert adaptive_weight(main, flat, weight, eps=1.0).item() == pytest.approx(grad_main_norm, rel=1e-6)


def test_adaptive_weight_errors():
    weight, _, y = _linear_problem()
    other = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(ConfigError, match="does not depend on the given layer"):
        adaptive_weight(y.sum(), (other ** 2).sum() + y.sum(), other)
    with pytest.raises(ConfigError, match="no graph"):
        adaptive_weight(y.detach().sum(), y.sum(), weight)


def test_the_vf_gradient_ratio_is_logged_and_shows_a_term_that_switched_off():
    """w * ||grad L_vf|| / ||grad L_rec|| at the encoder's last layer: w_hyper while the adaptive weight can balance the
    two, near 0 once the margins leave the VF term no gradient (what `history["train"]` records as vf_grad_ratio)."""
    from vavae_lab.tokenizer.losses import TokenizerLoss

    torch.manual_seed(0)
    layer = torch.nn.Parameter(torch.randn(4, 4))
    x = torch.randn(2, 4)
    z = (x @ layer).reshape(2, 4, 1, 1)
    features = torch.randn(2, 6, 1, 1)
    recon = torch.tanh(z.reshape(2, 4)).reshape(2, 4, 1, 1).expand(2, 4, 2, 2)
    inputs = torch.zeros_like(recon)

    class Posterior:
        def kl(self):
            return z.pow(2).sum((1, 2, 3))

    def ratio(m1, m2):
        vf = VFLoss(4, 6, m1=m1, m2=m2)
        loss = TokenizerLoss(disc_start=10**9, vf_loss=vf, vf_weight=0.1, perceptual_weight=0.0).train()
        _, logs = loss.generator_loss(inputs, recon, Posterior(), 0, enc_last_layer=layer, z=z, features=features)
        return logs["vf_grad_ratio"]

    assert ratio(0.0, 0.0) == pytest.approx(0.1, rel=1e-3)  # the adaptive weight balances it to w_hyper
    assert ratio(2.0, 2.0) == pytest.approx(0.0, abs=1e-6)   # margins above every term: no VF gradient at all
