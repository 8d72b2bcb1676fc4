"""models.audio: s16 scaling, WAV reading and writing, and their errors. The resampler is tested
through the server's re-export in tests/realtime/test_audio.py; here, that training's one-shot
path and the server's stream give the same samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from models.audio import (
    S16_FULL_SCALE,
    StreamingResampler,
    float_to_pcm16,
    pcm16_to_float,
    read_wav,
    resample,
    write_wav,
)
from models.errors import DataError, UserError

# ------------------------------------------------------------------ PCM scaling


def test_pcm16_to_float_is_exact() -> None:
    pcm = np.array([0, 1, -1, 16384, -16384, 32767, -32768], np.int16)
    out = pcm16_to_float(pcm)
    assert out.dtype == np.float32 and S16_FULL_SCALE == 32768.0
    np.testing.assert_array_equal(out, [0, 1 / 32768, -1 / 32768, 0.5, -0.5, 32767 / 32768, -1])
    np.testing.assert_array_equal(pcm16_to_float(pcm.astype(">i2")), out)  # either byte order


def test_pcm16_to_float_refuses_other_types() -> None:
    with pytest.raises(TypeError, match="int16"):
        pcm16_to_float(np.zeros(3, np.float32))


def test_float_to_pcm16_rounds_and_clips() -> None:
    x = [0.0, 0.5, -1.0, 1.0, 2.0, -3.0, 1.4 / 32768, 1.6 / 32768, 0.5 / 32768, 1.5 / 32768]
    np.testing.assert_array_equal(float_to_pcm16(x),
                                  [0, 16384, -32768, 32767, 32767, -32768, 1, 2, 0, 2])
    assert float_to_pcm16(x).dtype == np.int16
    assert float_to_pcm16(np.zeros((4, 2))).shape == (4, 2)


def test_every_int16_survives_a_round_trip() -> None:
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    np.testing.assert_array_equal(float_to_pcm16(pcm16_to_float(pcm)), pcm)


# ------------------------------------------------------------------ WAV files


def test_write_then_read_is_exact_at_s16(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, 2205).astype(np.float32)
    path = tmp_path / "a.wav"
    write_wav(path, x, 22050)
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (22050, 1, "PCM_16",
                                                                          "WAV")
    y, rate = read_wav(path)
    assert rate == 22050 and y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, pcm16_to_float(float_to_pcm16(x)))
    assert np.abs(y - x).max() <= 0.5 / 32768


def test_written_bytes_depend_only_on_samples_and_rate(tmp_path: Path) -> None:
    """The corpus generator promises byte-identical files for one config: a plain 44-byte
    header and the samples, nothing dated."""
    x = np.sin(np.arange(1000) * 0.05)
    write_wav(tmp_path / "a.wav", x, 16000)
    write_wav(tmp_path / "b.wav", x, 16000)
    data = (tmp_path / "a.wav").read_bytes()
    assert data == (tmp_path / "b.wav").read_bytes() and len(data) == 44 + 2 * x.size
    assert data[44:] == float_to_pcm16(x).astype("<i2").tobytes()


def test_channels_are_averaged(tmp_path: Path) -> None:
    stereo = np.array([[16384, 0], [-32768, 0], [8192, 8192]], np.int16)
    soundfile.write(str(tmp_path / "s.wav"), stereo, 8000, subtype="PCM_16")
    y, rate = read_wav(tmp_path / "s.wav")
    assert rate == 8000 and y.shape == (3,)
    np.testing.assert_array_equal(y, [0.25, -0.5, 0.25])


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_24", "PCM_32"])
def test_other_sample_formats_read_to_the_same_scale(tmp_path: Path, subtype: str) -> None:
    x = np.array([0.0, 0.5, -0.5, -1.0, 0.25], np.float32)
    soundfile.write(str(tmp_path / "x.wav"), x, 44100, subtype=subtype)
    y, rate = read_wav(tmp_path / "x.wav")
    assert rate == 44100 and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such audio file: .*nope.wav"):
        read_wav(tmp_path / "nope.wav")
    with pytest.raises(DataError, match="no such audio file"):
        read_wav(tmp_path)  # a folder is not a file


def test_unreadable_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(40))
    with pytest.raises(DataError, match="bad.wav is not a readable audio file") as info:
        read_wav(bad)
    assert isinstance(info.value, UserError)


def test_non_finite_samples_are_a_data_error(tmp_path: Path) -> None:
    soundfile.write(str(tmp_path / "n.wav"), np.array([0.0, np.nan], np.float32), 16000,
                    subtype="FLOAT")
    with pytest.raises(DataError, match="n.wav holds NaN"):
        read_wav(tmp_path / "n.wav")


def test_read_then_resample_keeps_duration(tmp_path: Path) -> None:
    """What the dataset does with a VOCASET WAV: 22050 Hz in, 16 kHz of the same length out."""
    write_wav(tmp_path / "v.wav", 0.3 * np.sin(np.arange(6615) * 0.05), 22050)
    y, rate = read_wav(tmp_path / "v.wav")
    assert resample(y, rate, 16000).size == 4800  # 0.3 s


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
def test_training_and_serving_resample_alike(tmp_path: Path, rate: int) -> None:
    """A WAV as the dataset reads it (one-shot) and as a client streams it (20 ms chunks): the
    same 16 kHz samples, so the model hears at serve time what it was trained on."""
    x = np.random.default_rng(rate).uniform(-0.5, 0.5, rate // 2)
    write_wav(tmp_path / "s.wav", x, rate)
    y, _ = read_wav(tmp_path / "s.wav")
    rs = StreamingResampler(rate, 16000)
    chunk = rate // 50
    streamed = [rs.push(y[i : i + chunk]) for i in range(0, y.size, chunk)] + [rs.flush()]
    np.testing.assert_allclose(np.concatenate(streamed), resample(y, rate, 16000), rtol=0,
                               atol=1e-6)
