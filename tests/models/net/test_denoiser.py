"""Denoiser causality and state carrying, audio encoder receptive field, identity model."""

import pytest
import torch

from models.net.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.net.denoiser import Denoiser, DenoiserConfig
from models.net.identity import IdentityConfig, IdentityModel

torch.set_num_threads(1)
DC = DenoiserConfig(n_coeffs=5, audio_dim=6, identity_dim=4, time_dim=8, hidden=16, n_layers=2)


def _inputs(B=2, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, 5, generator=g), torch.randn(B, T, 6, generator=g),
            torch.randn(B, 4, generator=g))


def test_denoiser_shapes_and_state():
    torch.manual_seed(0)
    net = Denoiser(DC).eval()
    x, a, e = _inputs()
    x0, h = net(x, 100, a, e)
    assert x0.shape == (2, 12, 5) and h.shape == (2, 2, 16)
    x0b, _ = net(x, torch.tensor([100, 100]), a, e[:, None].expand(2, 12, 4))
    torch.testing.assert_close(x0, x0b)


def test_denoiser_is_causal_in_frames():
    torch.manual_seed(0)
    net = Denoiser(DC).eval()
    x, a, e = _inputs()
    x0, _ = net(x, 7, a, e)
    x2, a2 = x.clone(), a.clone()
    x2[:, 6:] += 1.0
    a2[:, 6:] -= 1.0
    y0, _ = net(x2, 7, a2, e)
    torch.testing.assert_close(x0[:, :6], y0[:, :6])
    assert not torch.allclose(x0[:, 6:], y0[:, 6:])


def test_denoiser_in_chunks_with_carried_state_equals_full():
    torch.manual_seed(0)
    net = Denoiser(DC).eval()
    x, a, e = _inputs(T=20)
    full, _ = net(x, 3, a, e)
    h, parts = None, []
    for s, n in [(0, 3), (3, 1), (4, 9), (13, 7)]:
        y, h = net(x[:, s:s + n], 3, a[:, s:s + n], e, h)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_encoder_receptive_field_is_bounded_and_documented():
    cfg = AudioEncoderConfig(input_dim=7, d_model=8, dilations=(1, 2, 4), lookahead_frames=3,
                             dropout=0.0)
    assert cfg.context_frames == 14 and cfg.receptive_field == (11, 3)
    torch.manual_seed(0)
    enc = AudioEncoder(cfg).eval()
    T = 10
    f = torch.randn(1, 14 + T, 7)
    out = enc(f)
    assert out.shape == (1, T, 8)
    k = 5  # output frame k sees input positions [k, k + 14] (frames k-11 .. k+3)
    for pos, affects in [(k - 1, False), (k, True), (k + 14, True), (k + 15, False)]:
        g = f.clone()
        g[0, pos] += 3.0
        changed = not torch.allclose(enc(g)[0, k], out[0, k])
        assert changed == affects, pos


def test_encoder_windows_compose():
    cfg = AudioEncoderConfig(input_dim=7, d_model=8, dilations=(1, 2), dropout=0.0)
    torch.manual_seed(0)
    enc = AudioEncoder(cfg).eval()
    R = cfg.context_frames
    f = torch.randn(1, R + 20, 7)
    full = enc(f)
    torch.testing.assert_close(torch.cat([enc(f[:, :R + 8]), enc(f[:, 8:])], 1), full)


def test_contrastive_loss_and_pick():
    torch.manual_seed(0)
    model = IdentityModel(IdentityConfig(n_identities=3, dim=4, audio_dim=6, joint_dim=5))
    assert abs(model.log_scale.exp().item() - 1 / 0.07) < 1e-4
    audio = torch.randn(6, 10, 6)
    idx = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = model.contrastive_loss(audio, idx)
    assert torch.isfinite(loss) and loss > 0
    # a few steps separate three talkers whose audio differs by an offset
    audio = torch.randn(6, 10, 6) * 0.1 + torch.eye(6)[idx * 2][:, None]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = model.contrastive_loss(audio, idx)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    for i in range(3):
        index, scores = model.pick(audio[i])
        assert index == i and scores.shape == (3,)
    assert model.mean_identity().shape == (4,)


def test_encoder_streaming_cache_equals_windowed_forward():
    cfg = AudioEncoderConfig(input_dim=7, d_model=8, dilations=(1, 2, 4), dropout=0.0)
    torch.manual_seed(0)
    enc = AudioEncoder(cfg).eval()
    R = cfg.context_frames
    silence = torch.randn(7)
    f = torch.cat([silence.expand(1, R, 7), torch.randn(1, 20, 7)], dim=1)  # positions -R..19
    full = enc(f)  # positions 0..19
    caches = [c[None] for c in enc.init_cache(silence)]
    parts = []
    for s, n in [(0, 3), (3, 1), (4, 16)]:
        y, caches = enc.forward_stream(f[:, R + s:R + s + n], caches)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dilation", [1, 2, 8])
def test_conv_block_equals_torch_dilated_conv(dilation):
    """The block computes its conv as one matmul over shifted views: same numbers as Conv1d."""
    from models.net.audio_encoder import CausalConvBlock

    torch.manual_seed(dilation)
    block = CausalConvBlock(16, 3, dilation, dropout=0.0).eval()
    h = torch.randn(4, 2 * dilation + 11, 16)
    x = block.norm(h).transpose(1, 2)
    reference = h[:, block.cut:] + block.proj(torch.nn.functional.gelu(
        block.conv(x).transpose(1, 2)))
    torch.testing.assert_close(block(h), reference, rtol=1e-5, atol=1e-5)


def test_parts_refuse_configs_whose_sizes_are_not_wired():
    """The sizes a part takes from elsewhere default to 0 until TalkerConfig.build wires them."""
    with pytest.raises(ValueError, match="not wired"):
        Denoiser(DenoiserConfig())
    with pytest.raises(ValueError, match="not wired"):
        AudioEncoder(AudioEncoderConfig())
    with pytest.raises(ValueError, match="not wired"):
        IdentityModel(IdentityConfig(n_identities=3))


def test_prepared_condition_and_kept_time_bias_give_the_same_prediction():
    """A sampler's shortcuts (the audio/identity part computed once, the step's part kept per
    step) predict what the plain call does, and a changed weight is never served stale."""
    torch.manual_seed(0)
    net = Denoiser(DC).eval()
    x, a, e = _inputs()
    with torch.no_grad():
        plain, _ = net(x, 100, a, e)
        cond = net.condition(a, e)
        for _ in range(2):  # the second call reads the kept step bias
            fast, _ = net(x, 100, None, None, cond=cond)
            torch.testing.assert_close(fast, plain)
        assert len(net._time_cache) == 1
        net.time_mlp[0].weight.mul_(1.5)  # an optimiser step, a loaded state dict
        changed, _ = net(x, 100, a, e)
    assert not torch.allclose(changed, plain)
    net.train()
    trained, _ = net(x, 100, a, e)  # with gradients: computed, not kept
    assert trained.requires_grad
    torch.testing.assert_close(trained.detach(), changed)
