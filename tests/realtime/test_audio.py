"""PCM decoding, downmix and the streaming resampler (frequency, aliasing, chunk invariance)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import models.audio as models_audio
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
    data = bytes.fromhex("0000803e" "0000c0be")  # 0.25, -0.375 as little-endian float32
    np.testing.assert_array_equal(decode_pcm(data, "pcm_f32le"), [0.25, -0.375])


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
# The converter is models.audio's (scipy polyphase), re-exported for the server; these tests hold
# it to what the server relies on and to the numbers its docstring gives: frequency and level
# kept, aliases removed, the input's time axis, ceil(n * out / in) samples in all, streaming equal
# to one-shot for any chunking, a look-ahead under 3 ms at 44.1-48 kHz and a bounded history.
# 47999 Hz is a rate whose ratio to 16 kHz does not reduce (up = 16000).


def stream(x: np.ndarray, rate: int, cuts: list[int], out_rate: int = 16000) -> np.ndarray:
    """``x`` pushed in pieces of the given sizes (the rest in one piece), then flushed."""
    rs = StreamingResampler(rate, out_rate)
    parts, i = [], 0
    for n in cuts:
        parts.append(rs.push(x[i : i + n]))
        i += n
    parts += [rs.push(x[i:]), rs.flush()]
    return np.concatenate(parts)


def gain_db(y: np.ndarray) -> float:
    """Level of a unit sine after resampling, away from the edges."""
    return float(20 * np.log10(rms(y[400:-400]) / np.sqrt(0.5)))


def test_realtime_uses_the_models_resampler() -> None:
    assert StreamingResampler is models_audio.StreamingResampler
    assert resample is models_audio.resample


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 47999])
def test_sine_keeps_frequency_and_amplitude(rate: int) -> None:
    freq = 1000.0 if rate < 16000 else 3000.0
    y = resample(tone(freq, rate), rate)
    assert y.size == 16000 and y.dtype == np.float32
    body = y[400:-400]
    assert abs(peak_hz(body, 16000) - freq) <= 1.0
    assert rms(body) == pytest.approx(np.sqrt(0.5), rel=2e-3)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_pass_band_is_as_documented(rate: int) -> None:
    """1 kHz within 0.1 dB; at 16 kHz out the roll-off of the models.audio docstring: flat to
    7.1 kHz, -0.7 dB at 7.3 kHz, -6 dB at the 7.52 kHz cut-off, -10 dB at 7.6 kHz."""
    assert abs(gain_db(resample(tone(1000, rate), rate))) < 0.1
    if rate > 16000:
        for freq, want_db in ((7100, 0.0), (7300, -0.74), (7520, -6.02), (7600, -10.16)):
            assert gain_db(resample(tone(freq, rate), rate)) == pytest.approx(want_db, abs=0.05)


@pytest.mark.parametrize(("rate", "freq"), [(48000, 8300), (48000, 9000), (48000, 12000),
                                            (44100, 9000), (32000, 8500), (22050, 10000),
                                            (47999, 9000)])
def test_tone_above_the_new_nyquist_is_rejected(rate: int, freq: float) -> None:
    """Tones above the 8 kHz output Nyquist are removed (the filter's stop band, about 90 dB from
    8 kHz up), not folded back."""
    assert gain_db(resample(tone(freq, rate), rate)) < -90.0


def test_tone_above_the_new_nyquist_is_rejected_when_streamed() -> None:
    x = tone(12000, 48000)
    y = stream(x, 48000, [960] * 40)  # 20 ms WebRTC frames, then the rest
    assert gain_db(y) < -90.0


def test_upsampling_images_are_low() -> None:
    y = resample(tone(1000, 8000), 8000)[400:-400]
    power = np.abs(np.fft.rfft(y * np.hanning(y.size))) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / 16000)
    assert 10 * np.log10(power[freqs > 4000].sum() / power.sum()) < -100.0


def test_dc_gain_is_one() -> None:
    y = resample(np.full(48000, 0.5), 48000)
    np.testing.assert_allclose(y[200:-200], 0.5, atol=1e-5)


def test_passthrough_at_equal_rates() -> None:
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    rs = StreamingResampler(16000)
    assert rs.delay_in_samples == 0
    out = np.concatenate([rs.push(x[:300]), rs.push(x[300:]), rs.flush()])
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(resample(x, 22050, 22050), x)
    assert rs.delay_in_samples == 0


@pytest.mark.parametrize(("rate", "out_rate"), [(48000, 16000), (44100, 16000), (8000, 16000),
                                                (22050, 16000), (16000, 48000)])
def test_impulse_keeps_its_time(rate: int, out_rate: int) -> None:
    """A click at input time t comes out at output time t, within a sample (no filter delay)."""
    for t_s in (0.05, 0.0731):
        x = np.zeros(rate // 10)
        x[round(t_s * rate)] = 1.0
        for y in (resample(x, rate, out_rate), stream(x, rate, [17, 480, 3], out_rate)):
            peak = int(np.argmax(np.abs(y)))
            assert abs(peak - round(t_s * rate) * out_rate / rate) <= 1.0


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 47999])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 100, 4801])
def test_length_after_flush_is_ceil(rate: int, n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n)
    want = -(-n * 16000 // rate)
    assert resample(x, rate).size == want
    assert stream(x, rate, [1, 2]).size == want


@pytest.mark.parametrize(("rate", "documented_ms"), [(48000, 2.98), (44100, 2.98),
                                                     (22050, 2.98), (8000, 6.0)])
def test_streaming_emits_within_the_documented_look_ahead(rate: int, documented_ms: float
                                                           ) -> None:
    """Pushed one sample at a time, output n comes out once the input has reached its time
    n * in / out plus the filter's half-length (delay_in_samples, the models.audio table), and
    no later: under 3 ms at 22.05-48 kHz. Push after flush fails."""
    rs = StreamingResampler(rate)
    x = np.random.default_rng(0).standard_normal(rate // 4)
    delays = []  # per output sample: input samples past its time when it came out
    for i in range(x.size):
        for n in range(len(delays), len(delays) + rs.push(x[i : i + 1]).size):
            delays.append(i - n * rate / 16000)
    worst = max(delays)
    assert rs.delay_in_samples - 2 < min(delays) and worst <= rs.delay_in_samples
    assert worst > rs.delay_in_samples - 1  # the look-ahead is spent, not merely bounded
    assert 1000 * worst / rate == pytest.approx(documented_ms, abs=0.005)
    assert rate < 16000 or 1000 * worst / rate <= 3.0
    assert len(delays) + rs.flush().size == 4000
    with pytest.raises(RuntimeError):
        rs.push(np.zeros(1))
    assert rs.flush().size == 0


@pytest.mark.parametrize("rate", [48000, 44100, 8000, 47999])
def test_streaming_keeps_a_bounded_history(rate: int) -> None:
    """60 s pushed in 20 ms chunks: the resampler keeps at most one filter span of input."""
    rs = StreamingResampler(rate)
    chunk = np.random.default_rng(0).standard_normal(rate // 50).astype(np.float32)
    for _ in range(3000):
        rs.push(chunk)
        assert rs._history.size <= 2 * rs.delay_in_samples + 1


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([8000, 22050, 44100, 48000, 47999]),
    st.lists(st.integers(1, 2500), min_size=1, max_size=12),
)
def test_streaming_equals_one_shot(rate: int, cuts: list[int]) -> None:
    x = np.random.default_rng(rate).standard_normal(sum(cuts) + 17).astype(np.float32)
    streamed = stream(x, rate, cuts)
    whole = resample(x, rate)
    assert streamed.size == whole.size == -(-x.size * 16000 // rate)
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_streaming_equals_one_shot_in_webrtc_frames(rate: int) -> None:
    """Several seeds of 20 ms frames with random jitter in size, 2 s of audio."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(2 * rate).astype(np.float32)
        cuts = list(rng.integers(1, rate // 25, size=120))
        np.testing.assert_allclose(stream(x, rate, cuts), resample(x, rate), rtol=0, atol=1e-6)


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StreamingResampler(0)
    with pytest.raises(ValueError):
        resample(np.zeros(10), 16000, -1)
