"""PCM decoding, downmix and the streaming resampler (frequency, aliasing, chunk invariance)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.audio import (
    StreamingResampler,
    decode_pcm,
    downmix_interleaved,
    encode_pcm,
    resample,
)
from realtime.errors import ProtocolError


def tone(freq_hz: float, rate_hz: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq_hz * np.arange(int(rate_hz * seconds)) / rate_hz)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def peak_hz(x: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1.0 / rate_hz)[spectrum.argmax()])


# ------------------------------------------------------------------ PCM


def test_decode_s16_scaling() -> None:
    data = np.array([0, 16384, -16384, 32767, -32768], "<i2").tobytes()
    out = decode_pcm(data, "pcm_s16le")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0.0, 0.5, -0.5, 32767 / 32768, -1.0])


def test_decode_f32_is_little_endian() -> None:
    data = bytes.fromhex("0000803e" "0000c0bf")  # 0.25, -1.5 as little-endian float32
    np.testing.assert_array_equal(decode_pcm(data, "pcm_f32le"), [0.25, -1.5])


@pytest.mark.parametrize(
    ("data", "encoding"), [(b"\0" * 3, "pcm_s16le"), (b"\0" * 6, "pcm_f32le")]
)
def test_partial_sample_rejected(data: bytes, encoding: str) -> None:
    with pytest.raises(ProtocolError, match="not a multiple") as info:
        decode_pcm(data, encoding)
    assert info.value.code == "bad_audio" and info.value.close_code == 1003


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_f32_rejected(bad: float) -> None:
    data = np.array([0.0, bad], "<f4").tobytes()
    with pytest.raises(ProtocolError, match="sample 1") as info:
        decode_pcm(data, "pcm_f32le")
    assert info.value.code == "bad_audio"


def test_unknown_encoding_rejected() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_pcm(b"", "pcm_u8")
    assert info.value.code == "bad_audio"


@pytest.mark.parametrize("encoding", ["pcm_s16le", "pcm_f32le"])
def test_encode_decode_round_trip(encoding: str) -> None:
    x = np.linspace(-1, 1, 101).astype(np.float32)
    y = decode_pcm(encode_pcm(x, encoding), encoding)
    np.testing.assert_allclose(y, x, atol=1 / 32768 if encoding == "pcm_s16le" else 0)


def test_downmix_interleaved_stereo_int16() -> None:
    frame = np.array([[16384, 0, -32768, 0, 8192, 8192]], dtype=np.int16)  # aiortc's (1, n*ch)
    mono = downmix_interleaved(frame, channels=2)
    np.testing.assert_allclose(mono, [0.25, -0.5, 0.25])
    assert mono.dtype == np.float32
    np.testing.assert_allclose(downmix_interleaved(np.ones((4, 2)), 2), np.ones(4))
    with pytest.raises(ValueError):
        downmix_interleaved(np.zeros(5, np.int16), channels=2)


# ------------------------------------------------------------------ resampler


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 44101])
def test_sine_keeps_frequency_and_amplitude(rate: int) -> None:
    freq = 1000.0 if rate < 16000 else 3000.0
    y = resample(tone(freq, rate), rate)
    assert y.size == 16000
    body = y[400:-400]
    assert abs(peak_hz(body, 16000) - freq) <= 1.0
    assert rms(body) == pytest.approx(np.sqrt(0.5), rel=2e-3)


@pytest.mark.parametrize(("rate", "freq"), [(48000, 8300), (48000, 12000), (44100, 9000),
                                            (32000, 8500), (22050, 10000), (44101, 9000)])
def test_alias_energy_is_low(rate: int, freq: float) -> None:
    """Tones above the 8 kHz output Nyquist are removed, not folded back."""
    y = resample(tone(freq, rate), rate)
    assert 20 * np.log10(rms(y[400:-400]) / np.sqrt(0.5)) < -70.0


def test_upsampling_images_are_low() -> None:
    y = resample(tone(1000, 8000), 8000)[400:-400]
    power = np.abs(np.fft.rfft(y * np.hanning(y.size))) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / 16000)
    assert 10 * np.log10(power[freqs > 4000].sum() / power.sum()) < -70.0


def test_dc_gain_is_one() -> None:
    y = resample(np.full(48000, 0.5), 48000)
    np.testing.assert_allclose(y[100:-100], 0.5, atol=1e-6)


def test_passthrough_at_16k() -> None:
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    rs = StreamingResampler(16000)
    np.testing.assert_array_equal(np.concatenate([rs.push(x[:300]), rs.push(x[300:]),
                                                  rs.flush()]), x)


def test_output_time_axis_is_not_delayed() -> None:
    """A click at input time t comes out at output time t (zero group delay)."""
    x = np.zeros(4800)
    x[2400] = 1.0  # 50 ms at 48 kHz
    y = resample(x, 48000)
    assert int(np.argmax(y)) == 800  # 50 ms at 16 kHz


def test_streaming_emits_once_lookahead_arrived_and_flush_completes() -> None:
    rs = StreamingResampler(48000)
    k = rs.delay_in_samples
    assert rs.push(np.zeros(k)).size == 0
    assert rs.push(np.zeros(1)).size == 1  # output 0 needs input up to index K
    rest = rs.push(np.zeros(3000 - k - 1))
    total = 1 + rest.size + rs.flush().size
    assert total == 1000
    with pytest.raises(RuntimeError):
        rs.push(np.zeros(1))


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([8000, 22050, 44100, 48000, 47999]),
    st.lists(st.integers(1, 2500), min_size=1, max_size=12),
)
def test_chunk_invariance(rate: int, cuts: list[int]) -> None:
    x = np.random.default_rng(rate).standard_normal(sum(cuts) + 17)
    rs = StreamingResampler(rate)
    parts, i = [], 0
    for n in cuts + [17]:
        parts.append(rs.push(x[i : i + n]))
        i += n
    parts.append(rs.flush())
    streamed = np.concatenate(parts)
    whole = resample(x, rate)
    assert streamed.size == whole.size == -(-x.size * 16000 // rate)
    np.testing.assert_allclose(streamed, whole, atol=1e-6, rtol=0)
