"""Talker: offline generation, streaming parity, checkpoints, errors."""

import numpy as np
import pytest
import torch

from models.errors import ModelError
from models.face.basis import MotionBasis
from models.net.audio_encoder import AudioEncoderConfig
from models.net.denoiser import DenoiserConfig
from models.net.identity import IdentityConfig
from models.net.talker import ModelSize, Talker, TalkerConfig

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


def tiny_talker(sampler="ddim", steps=4, seed=0) -> Talker:
    torch.manual_seed(seed)
    cfg = TalkerConfig.build(TINY, tuple(f"c{i}" for i in range(K)), ("ann", "bob", "cy"),
                             sampler=sampler, sampler_steps=steps)
    rng = np.random.default_rng(seed)
    return Talker(cfg, tiny_basis(), rng.normal(size=K).astype(np.float32),
                  rng.uniform(0.5, 2, size=K).astype(np.float32)).eval()


def _audio(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


def _stream(talker, audio, seed, chunk_rng, identity=None, max_hop=None):
    st = talker.new_stream(seed)
    out, pos = [], 0
    vec = None if identity is None else talker.identity_vector(identity)[None]
    while pos < len(audio):
        n = int(chunk_rng.integers(1, 4000))
        talker.push_audio(st, audio[pos:pos + n])
        pos += n
        k = talker.frames_available(st)
        if max_hop:
            k = min(k, max_hop)
        if k:
            out.append(talker.stream_step([st], k, vec)[0])
    talker.flush(st)
    while (k := talker.frames_available(st)) > 0:
        out.append(talker.stream_step([st], min(k, max_hop or k), vec)[0])
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
    from models.net.talker import TrainBatch

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
