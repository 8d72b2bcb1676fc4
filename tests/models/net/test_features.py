"""Audio features, the streaming audio buffer and augmentation."""

import numpy as np
import pytest
import torch

from models.data.augment import (
    AugmentConfig,
    add_noise,
    augment,
    band_limit,
    colour,
    gain,
    insert_silence,
    pitch_shift,
    reverb,
    speed,
)
from models.errors import ModelError
from models.net.features import AudioBuffer, FeatureConfig, check_audio, frame_features

FC = FeatureConfig()


def _audio(seconds=1.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(
        np.float32)


def test_frame_count_is_ceil_of_samples_over_533():
    for n in [1, 533, 534, 1066, 1067, 16000, 16001]:
        assert FC.n_frames(n) == int(np.ceil(n / (16000 / 30)))


def test_centre_mel_follows_100_over_30():
    assert [FC.centre_mel(k) for k in range(7)] == [0, 3, 6, 10, 13, 16, 20]
    assert list(FC.stack_offsets) == [-1, 0, 1, 2]


def test_last_computable_frame_matches_samples_needed():
    for n in range(0, 5000, 37):
        k = FC.last_computable_frame(n)
        assert FC.samples_needed(k) <= n < FC.samples_needed(k + 1)


def test_features_only_see_the_samples_they_need():
    a = _audio(1.0)
    full = frame_features(a, -5, 40, FC)  # (40, 320)
    assert full.shape == (40, FC.feature_dim)
    # frames up to 20 computed from a buffer cut right after their last needed sample
    cut = FC.samples_needed(20)
    part = frame_features(a[:cut], -5, 26, FC)
    torch.testing.assert_close(part, full[:26], atol=1e-5, rtol=1e-5)
    # frames from 10 on, from a buffer that starts late (absolute offset)
    start = (FC.centre_mel(10) - 1) * 160 - 200
    late = frame_features(a[start:], 10, 25, FC, audio_offset=start)
    torch.testing.assert_close(late, full[15:], atol=1e-5, rtol=1e-5)


def test_silence_before_the_session_is_the_floor():
    f = frame_features(_audio(0.2), -10, 5, FC)
    expected = (np.log(FC.log_floor) + FC.norm_offset) / FC.norm_scale
    assert torch.allclose(f, torch.full_like(f, expected))


def test_audio_buffer_in_chunks_equals_offline():
    a = _audio(1.0, seed=1)
    offline = frame_features(a, 0, FC.n_frames(len(a)), FC)
    buf, rng, pos, out, k = AudioBuffer(FC), np.random.default_rng(0), 0, [], 0
    while pos < len(a):
        n = int(rng.integers(1, 2000))
        buf.push(a[pos:pos + n])
        pos += n
        ready = buf.last_ready_frame() + 1 - k
        if ready > 0:
            out.append(buf.features(k, ready))
            k += ready
            buf.release(k)
    buf.flush()
    out.append(buf.features(k, FC.n_frames(len(a)) - k))
    torch.testing.assert_close(torch.cat(out), offline, atol=1e-4, rtol=1e-4)


def test_audio_buffer_refuses_frames_without_audio():
    buf = AudioBuffer(FC)
    buf.push(np.zeros(1000, np.float32))
    with pytest.raises(ModelError):
        buf.features(0, buf.last_ready_frame() + 2)


@pytest.mark.parametrize("audio,sr,msg", [
    (np.zeros(100, np.float32), 8000, "16000 Hz"),
    (np.zeros(0, np.float32), 16000, "empty"),
    (np.array([0.0, np.nan], np.float32), 16000, "NaN"),
    (np.zeros((2, 100), np.float32), 16000, "1-D"),
    (np.zeros(100, np.int16), 16000, "float"),
])
def test_check_audio_errors(audio, sr, msg):
    with pytest.raises(ModelError, match=msg):
        check_audio(audio, sr, FC)


def test_channel_augmentations_keep_length_and_finite():
    a, rng = _audio(0.5), np.random.default_rng(0)
    for out in [gain(a, rng, (-6, 6)), add_noise(a, rng, (10, 20)), band_limit(a, rng),
                reverb(a, rng, (0.2, 0.3)), pitch_shift(a, rng, (2, 2)), colour(a, rng)]:
        assert out.shape == a.shape and out.dtype == np.float32 and np.isfinite(out).all()


def test_noise_has_the_requested_snr():
    a = np.sin(np.arange(16000) * 0.1).astype(np.float32)
    out = add_noise(a, np.random.default_rng(0), (10.0, 10.0))
    snr = 10 * np.log10(np.mean(a ** 2) / np.mean((out - a) ** 2))
    assert abs(snr - 10.0) < 0.1


def test_telephone_band_removes_low_and_high():
    t = np.arange(16000) / 16000
    a = (np.sin(2 * np.pi * 100 * t) + np.sin(2 * np.pi * 1000 * t)
         + np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    spec = np.abs(np.fft.rfft(band_limit(a, np.random.default_rng(0), "telephone")))
    assert spec[1000] > 1000 and spec[100] < 1 and spec[6000] < 1


def test_speed_warps_audio_and_motion_together():
    a = _audio(1.0)
    c = np.linspace(0, 1, 30, dtype=np.float32)[:, None].repeat(2, 1)
    a2, c2 = speed(a, c, np.random.default_rng(0), (1.25, 1.25))
    assert len(a2) == 12800 and len(c2) == 24
    # output frame k shows original time k * 1.25 / 30
    np.testing.assert_allclose(c2[8, 0], c[10, 0], atol=1e-6)


def test_silence_insertion_closes_the_mouth():
    a = _audio(1.0)
    c = np.ones((30, 3), np.float32)
    a2, c2 = insert_silence(a, c, np.random.default_rng(3), (2, 2))
    assert len(a2) == len(a) + 3200 and len(c2) == 36
    closed = np.flatnonzero(np.all(c2 == 0, axis=1))
    assert len(closed) == 2  # 6 frames: 2 ease out, 2 closed, 2 ease in
    for k in closed:  # the audio at the time of a closed-mouth frame is silent
        s = k * 16000 // 30
        assert np.all(a2[s - 200:s + 200] == 0)


def test_augment_chain_is_reproducible():
    a, c = _audio(0.5), np.zeros((15, 3), np.float32)
    cfg = AugmentConfig(p_gain=1, p_noise=1, p_band=1, p_reverb=1, p_pitch=1, p_speed=1,
                        p_silence=1)
    x1 = augment(a, c, np.random.default_rng(5), cfg)
    x2 = augment(a, c, np.random.default_rng(5), cfg)
    np.testing.assert_array_equal(x1[0], x2[0])
    assert np.abs(x1[0]).max() <= 1.0


def test_colour_tilts_the_spectrum_and_keeps_timing_and_level():
    t = np.arange(16000) / 16000
    a = (0.3 * np.sin(2 * np.pi * 250 * t) + 0.3 * np.sin(2 * np.pi * 4000 * t)).astype(np.float32)
    out = colour(a, np.random.default_rng(0), tilt_db_per_octave=(6.0, 6.0), ripple_db=0.0)
    spec_in, spec_out = np.abs(np.fft.rfft(a)), np.abs(np.fft.rfft(out))
    gained = 20 * np.log10(spec_out[[250, 4000]] / spec_in[[250, 4000]])
    assert abs((gained[1] - gained[0]) - 6.0 * 4) < 0.5  # 4 octaves apart at 6 dB each
    np.testing.assert_allclose(np.sqrt(np.mean(out ** 2)), np.sqrt(np.mean(a ** 2)), rtol=1e-3)
    click = np.zeros(8000, np.float32)
    click[4000] = 1.0
    assert int(np.argmax(np.abs(colour(click, np.random.default_rng(1))))) == 4000  # zero phase


def test_colour_is_off_by_default_and_draws_nothing_then():
    a, c = _audio(0.5), np.zeros((15, 3), np.float32)
    off = augment(a, c, np.random.default_rng(5), AugmentConfig(p_colour=0.0))
    default = augment(a, c, np.random.default_rng(5))
    np.testing.assert_array_equal(off[0], default[0])
    on = augment(a, c, np.random.default_rng(5), AugmentConfig(p_colour=1.0))
    assert on[0].shape == off[0].shape and not np.array_equal(on[0], off[0])
