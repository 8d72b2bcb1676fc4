"""Talker: offline generation, streaming parity, checkpoints, errors."""

import itertools

import numpy as np
import pytest
import torch

from models.errors import ModelError
from models.face.basis import MotionBasis
from models.net.audio_encoder import AudioEncoderConfig
from models.net.denoiser import DenoiserConfig
from models.net.identity import IdentityConfig
from models.net.talker import LossConfig, ModelSize, Talker, TalkerConfig, TrainBatch
from models.sampling import frame_noise, noise_generators

torch.set_num_threads(1)
K, V = 5, 24
TINY = ModelSize(encoder=AudioEncoderConfig(d_model=16, dilations=(1, 2), lookahead_frames=3),
                 denoiser=DenoiserConfig(time_dim=8, hidden=16, n_layers=2),
                 identity=IdentityConfig(dim=8, joint_dim=8))


def tiny_basis(seed=0) -> MotionBasis:
    rng = np.random.default_rng(seed)
    masks = {"lip": np.arange(V) < 6, "upper_face": np.arange(V) >= 12}
    faces = np.array([[i, (i + 1) % V, (i + 2) % V] for i in range(V)], np.int32)
    return MotionBasis(rng.normal(size=(V, 3)).astype(np.float32),
                       (rng.normal(size=(K, V, 3)) * 0.01).astype(np.float32),
                       tuple(f"c{i}" for i in range(K)), faces, masks)


def tiny_talker(sampler="ddim", steps=4, seed=0, **options) -> Talker:
    torch.manual_seed(seed)
    cfg = TalkerConfig.build(TINY, tuple(f"c{i}" for i in range(K)), ("ann", "bob", "cy"),
                             sampler=sampler, sampler_steps=steps, **options)
    rng = np.random.default_rng(seed)
    return Talker(cfg, tiny_basis(), rng.normal(size=K).astype(np.float32),
                  rng.uniform(0.5, 2, size=K).astype(np.float32)).eval()


def _audio(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


def _stream(talker, audio, seed, chunk_rng, identity=None, max_hop=None, guidance=None):
    """Stream ``audio`` in random chunks; hops of every available frame, at most ``max_hop``
    (an int, or a list of hop sizes used in turn)."""
    st = talker.new_stream(seed, guidance=guidance)
    out, pos = [], 0
    vec = None if identity is None else talker.identity_vector(identity)[None]
    hops = itertools.cycle(max_hop) if isinstance(max_hop, list) else itertools.repeat(max_hop)

    def step(available):
        k = min(available, next(hops) or available)
        out.append(talker.stream_step([st], k, vec)[0])

    while pos < len(audio):
        n = int(chunk_rng.integers(1, 4000))
        talker.push_audio(st, audio[pos:pos + n])
        pos += n
        if k := talker.frames_available(st):
            step(k)
    talker.flush(st)
    while (k := talker.frames_available(st)) > 0:
        step(k)
    return np.concatenate(out)


def test_generate_shape_and_determinism():
    talker = tiny_talker()
    audio = _audio(0.7)
    c = talker.generate(audio, "ann", seed=1)
    assert c.shape == (int(np.ceil(len(audio) / (16000 / 30))), K) and c.dtype == np.float32
    np.testing.assert_array_equal(c, talker.generate(audio, "ann", seed=1))
    assert not np.allclose(c, talker.generate(audio, "ann", seed=2))
    assert not np.allclose(c, talker.generate(audio, "bob", seed=1))
    assert talker.vertices(c).shape == (len(c), V, 3)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_streaming_in_any_chunking_equals_offline(sampler):
    talker = tiny_talker(sampler)
    audio = _audio(1.3, seed=3)
    offline = talker.generate(audio, "bob", seed=7)
    for chunk_seed, max_hop in [(0, None), (1, 3), (2, 1)]:
        streamed = _stream(talker, audio, 7, np.random.default_rng(chunk_seed), "bob", max_hop)
        assert streamed.shape == offline.shape
        np.testing.assert_allclose(streamed, offline, atol=1e-4, rtol=0)


def test_batched_streams_equal_their_own_offline_runs():
    talker = tiny_talker()
    audios = [_audio(0.6, seed=s) for s in range(3)]
    seeds, names = [11, 12, 13], ["ann", "bob", "cy"]
    states = [talker.new_stream(s) for s in seeds]
    vecs = torch.stack([talker.identity_vector(n) for n in names])
    out = [[] for _ in states]
    for start in range(0, 9600, 1600):  # 100 ms hops, 3 frames each once warmed up
        for st, a in zip(states, audios, strict=True):
            talker.push_audio(st, a[start:start + 1600])
        n = min(talker.frames_available(st) for st in states)
        if n:
            for b, frames in enumerate(talker.stream_step(states, n, vecs)):
                out[b].append(frames)
    for st in states:
        talker.flush(st)
    n = talker.frames_available(states[0])
    for b, frames in enumerate(talker.stream_step(states, n, vecs)):
        out[b].append(frames)
    for b in range(3):
        np.testing.assert_allclose(np.concatenate(out[b]),
                                   talker.generate(audios[b], names[b], seed=seeds[b]), atol=1e-4)


def test_frames_wait_for_the_lookahead():
    talker = tiny_talker()
    st = talker.new_stream(0)
    talker.push_audio(st, np.zeros(16000, np.float32))
    cfg = talker.config.features
    # frame k is available once frame k + 3's mel frames have arrived
    assert talker.frames_available(st) == cfg.last_computable_frame(16000) - 3 + 1
    with pytest.raises(ModelError, match="available"):
        talker.stream_step([st], talker.frames_available(st) + 1)
    talker.flush(st)
    assert talker.frames_available(st) == 30


def test_per_frame_identity_vectors_blend():
    talker = tiny_talker()
    st = talker.new_stream(0)
    talker.push_audio(st, _audio(0.5))
    a, b = talker.identity_vector("ann"), talker.identity_vector("bob")
    w = torch.linspace(0, 1, 3)[None, :, None]
    out = talker.stream_step([st], 3, (1 - w) * a + w * b)
    assert out.shape == (1, 3, K)


def test_checkpoint_round_trip(tmp_path):
    talker = tiny_talker()
    audio = _audio(0.5)
    path = talker.save(tmp_path / "t.safetensors", {"step": 3, "note": "hi"})
    loaded = Talker.from_checkpoint(path)
    assert loaded.identities == ["ann", "bob", "cy"]
    assert loaded.config == talker.config
    assert loaded.receptive_field == (3, 3)
    np.testing.assert_array_equal(loaded.basis.masks["lip"], talker.basis.masks["lip"])
    np.testing.assert_array_equal(loaded.generate(audio, "cy", seed=4),
                                  talker.generate(audio, "cy", seed=4))
    np.testing.assert_allclose(loaded.vertices(np.ones((2, K))),
                               talker.vertices(np.ones((2, K))))


def test_identity_choices():
    talker = tiny_talker()
    torch.testing.assert_close(talker.identity_vector(None), talker.identity.bank.weight.mean(0))
    auto = talker.identity_vector("auto", _audio(1.0))
    assert any(torch.equal(auto, row) for row in talker.identity.bank.weight)
    index, scores = talker.pick_identity(_audio(1.0))
    assert 0 <= index < 3 and scores.shape == (3,)


def test_bad_inputs_raise_model_error(tmp_path):
    talker = tiny_talker()
    with pytest.raises(ModelError, match="16000 Hz"):
        talker.generate(_audio(0.2), "ann", sample_rate_hz=48000)
    with pytest.raises(ModelError, match="empty"):
        talker.generate(np.zeros(0, np.float32), "ann")
    with pytest.raises(ModelError, match="NaN"):
        talker.generate(np.full(100, np.nan, np.float32), "ann")
    with pytest.raises(ModelError, match="known: ann, bob, cy"):
        talker.generate(_audio(0.2), "zed")
    with pytest.raises(ModelError, match="needs audio"):
        talker.identity_vector("auto")
    with pytest.raises(ModelError, match="NaN"):
        talker.push_audio(talker.new_stream(0), np.array([np.inf], np.float32))
    with pytest.raises(ModelError, match="not found"):
        Talker.from_checkpoint(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ModelError, match="corrupt"):
        Talker.from_checkpoint(bad)
    good = talker.save(tmp_path / "t.safetensors")
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ModelError):
        Talker.from_checkpoint(truncated)
    st = talker.new_stream(0)
    talker.flush(st)
    with pytest.raises(ModelError, match="after flush"):
        talker.push_audio(st, np.zeros(10, np.float32))


def test_loss_is_finite_and_backpropagates():
    talker = tiny_talker().train()
    R = talker.config.encoder.context_frames
    g = torch.Generator().manual_seed(0)
    batch = TrainBatch(torch.randn(4, R + 10, talker.config.features.feature_dim, generator=g),
                       torch.randn(4, 10, K, generator=g), torch.tensor([0, 1, 2, 0]),
                       torch.ones(4, 10, dtype=torch.bool))
    terms = talker.loss(batch, generator=g)
    assert set(terms) == {"loss", "rec", "lip", "vel", "contrastive"}
    terms["loss"].backward()
    assert talker.denoiser.inp.weight.grad is not None
    assert talker.encoder.inp.weight.grad is not None


# ----------------------------------------------------------------------------- guidance (CFG)

def _batch(talker, seed=0, B=4, W=10):
    g = torch.Generator().manual_seed(seed)
    R, F = talker.config.encoder.context_frames, talker.config.features.feature_dim
    return TrainBatch(torch.randn(B, R + W, F, generator=g), torch.randn(B, W, K, generator=g),
                      torch.tensor([0, 1, 2, 0][:B]), torch.ones(B, W, dtype=torch.bool))


def _denoiser_batches(talker):
    """Batch sizes of every denoiser call from now on (a forward hook: the real network runs)."""
    sizes = []
    talker.denoiser.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    return sizes


def test_audio_dropout_zero_draws_nothing_more():
    """audio_dropout = 0 (every existing config) leaves the loss's random stream as it was:
    timesteps, noise and the identity-dropout draw, nothing else."""
    talker = tiny_talker().train()
    batch = _batch(talker)
    g = torch.Generator().manual_seed(5)
    talker.loss(batch, generator=g)
    expected = torch.Generator().manual_seed(5)
    torch.randint(0, 500, (4,), generator=expected)
    torch.randn((4, 10, K), generator=expected)
    torch.rand(4, generator=expected)
    assert torch.equal(g.get_state(), expected.get_state())


def test_audio_dropout_trains_on_the_null_audio():
    """Dropped items see zeros instead of the encoded audio: with dropout 1 the motion terms do
    not depend on the audio, while the contrastive loss still hears it."""
    talker = tiny_talker(loss=LossConfig(audio_dropout=1.0)).train()
    a, b = _batch(talker, seed=0), _batch(talker, seed=0)
    b.features = torch.randn(b.features.shape, generator=torch.Generator().manual_seed(9))
    ta = talker.loss(a, generator=torch.Generator().manual_seed(1))
    tb = talker.loss(b, generator=torch.Generator().manual_seed(1))
    for k in ("rec", "lip", "vel"):
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0)
    assert not torch.equal(ta["contrastive"], tb["contrastive"])
    # the same model without dropout does hear the difference
    heard = tiny_talker().train()
    ha = heard.loss(a, generator=torch.Generator().manual_seed(1))
    hb = heard.loss(b, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(ha["rec"], hb["rec"])
    ta["loss"].backward()  # the null branch trains the denoiser; the encoder only by InfoNCE
    assert talker.denoiser.inp.weight.grad is not None


def test_guided_prediction_extrapolates_from_the_null_audio():
    """x0_g = x0_null + g (x0_audio - x0_null), on fixed inputs and through one sampling step."""
    talker = tiny_talker()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, K, generator=g)
    audio = torch.randn(2, 6, talker.config.encoder.d_model, generator=g)
    ident = torch.randn(2, talker.config.identity.dim, generator=g)
    x_cond, _ = talker(x, 250, audio, ident)
    x_null, _ = talker(x, 250, torch.zeros_like(audio), ident)
    x2, state = talker.guided(x, 250, audio, ident, 2.0)
    torch.testing.assert_close(x2 - x_null, 2 * (x_cond - x_null), rtol=0, atol=1e-5)
    assert state.shape == (2, 4, 16)  # (L, 2B, H): the conditional rows, then the null rows
    one, _ = talker.guided(x, 250, audio, ident, 1.0)
    assert torch.equal(one, x_cond)
    # one DDIM step: generate's x0 is the guided prediction at the noisiest step
    clip = _audio(0.4, seed=2)
    T = talker.config.features.n_frames(len(clip))
    x_T = torch.from_numpy(frame_noise(noise_generators(3)[0], T, K))[None]
    feats = talker.encode_audio(talker.offline_features(clip)[None])
    vec = talker.identity_vector("bob")[None]
    with torch.no_grad():
        null, _ = talker(x_T, talker.steps(1).t[0], torch.zeros_like(feats), vec)

    def x0(guidance):
        c = talker.generate(clip, "bob", steps=1, seed=3, guidance=guidance)
        return talker.normalize(torch.from_numpy(c))[None]

    g1, g2 = x0(1.0), x0(2.0)
    assert (g2 - g1).abs().max() > 1e-3
    torch.testing.assert_close(g2 - null, 2 * (g1 - null), rtol=0, atol=1e-4)


def test_guidance_one_is_the_unguided_path():
    talker = tiny_talker()
    sizes = _denoiser_batches(talker)
    audio = _audio(0.5)
    plain = talker.generate(audio, "ann", seed=2)
    assert sizes == [1] * 4
    np.testing.assert_array_equal(talker.generate(audio, "ann", seed=2, guidance=1.0), plain)
    st = talker.new_stream(0, guidance=1.0)
    assert st.guidance == 1.0 and st.gru_null is None
    sizes.clear()
    guided = talker.generate(audio, "ann", seed=2, guidance=2.0)
    assert sizes == [2] * 4 and not np.allclose(guided, plain)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_guided_streaming_in_any_hops_equals_offline(sampler):
    talker = tiny_talker(sampler)
    audio = _audio(1.3, seed=3)
    offline = talker.generate(audio, "bob", seed=7, guidance=2.0)
    assert not np.allclose(offline, talker.generate(audio, "bob", seed=7))
    for chunk_seed, max_hop in [(0, None), (1, 3), (2, 1), (3, [1, 4, 2, 7, 3])]:
        streamed = _stream(talker, audio, 7, np.random.default_rng(chunk_seed), "bob", max_hop,
                           guidance=2.0)
        assert streamed.shape == offline.shape
        np.testing.assert_allclose(streamed, offline, atol=1e-4, rtol=0)


def test_guided_streams_batch_together_but_not_with_other_scales():
    talker = tiny_talker()
    audios = [_audio(0.6, seed=s) for s in range(2)]
    states = [talker.new_stream(s, guidance=1.5) for s in (11, 12)]
    assert states[0].gru_null is not None and states[0].gru_null.shape == states[0].gru.shape
    for st, a in zip(states, audios, strict=True):
        talker.push_audio(st, a)
        talker.flush(st)
    sizes = _denoiser_batches(talker)
    out = talker.stream_step(states, 18)
    assert sizes == [4] * 4  # 2 streams, doubled: one call per step
    for b in range(2):
        np.testing.assert_allclose(out[b], talker.generate(audios[b], None, seed=11 + b,
                                                           guidance=1.5), atol=1e-4)
    mixed = [talker.new_stream(13, guidance=1.5), talker.new_stream(14)]
    for st in mixed:
        talker.push_audio(st, audios[0])
    with pytest.raises(ModelError, match="share sampler, steps and guidance"):
        talker.stream_step(mixed, 1)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ModelError, match="guidance"):
            talker.new_stream(0, guidance=bad)


def test_guidance_travels_in_the_checkpoint(tmp_path):
    talker = tiny_talker(guidance=2.0, loss=LossConfig(audio_dropout=0.2))
    audio = _audio(0.5)
    loaded = Talker.from_checkpoint(talker.save(tmp_path / "g.safetensors"))
    assert loaded.config.guidance == 2.0 and loaded.config.loss.audio_dropout == 0.2
    assert loaded.new_stream(0).guidance == 2.0
    np.testing.assert_array_equal(loaded.generate(audio, "cy", seed=4),
                                  talker.generate(audio, "cy", seed=4, guidance=2.0))
    # configs written before guidance existed load as unguided, without audio dropout
    old = talker.config.to_dict()
    del old["guidance"], old["loss"]["audio_dropout"]
    cfg = TalkerConfig.from_dict(old)
    assert cfg.guidance == 1.0 and cfg.loss.audio_dropout == 0.0
