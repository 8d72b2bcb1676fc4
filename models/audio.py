"""Audio in one place: 16-bit PCM scaling, WAV files and the sample-rate converter.

Training (dataset WAVs, espeak-ng speech, speed perturbation) and serving (clients at 8-48 kHz,
WebRTC at 48 kHz) go through the same functions here, so the model hears the same filter in both.
Nothing in this module knows about corpora, datasets or training; ``realtime`` imports it.

PCM: int16 ``s`` <-> float ``s / 32768``. -32768 maps to -1.0 exactly; on the way out floats are
rounded to the nearest integer and clipped to [-32768, 32767], so +1.0 becomes 32767.

Resampling is libsoxr's (``soxr``), one quality for the one-shot :func:`resample` and the
:class:`StreamingResampler`, and the two agree sample for sample (any chunking). The output keeps
the input's time axis: output sample ``n`` is the signal at input time ``n * in / out`` (libsoxr's
filter is linear-phase and its delay is removed), with zeros assumed past the end; after the
input ends there are ``ceil(n_in * out / in)`` output samples.

Streaming look-ahead (:data:`RESAMPLE_QUALITY` "HQ", libsoxr 0.1.3): output sample ``n`` is emitted
once the input has reached ``n * in / out`` plus at most the figures below (one sample pushed at
a time; the figure is the worst case over a second of input, the mean is about half of it). They
add to motion latency; clients at 16 kHz skip the resampler and pay nothing.

    48 kHz -> 16 kHz     1758 input samples =  36.6 ms worst, 21 ms mean
    44.1 kHz -> 16 kHz   1774 input samples =  40.2 ms worst, 23 ms mean
    8 kHz -> 16 kHz       927 input samples = 115.9 ms worst, 64 ms mean

Most of it is libsoxr's block (FFT) processing, not the filter's length, and ``soxr`` offers no
way to shorten it. "LQ" halves it (20.0, 21.9 and 61.4 ms) but its pass band ends early (-3 dB at
6.5 kHz, where the features reach 7.6 kHz); "MQ" is no shorter than "HQ"; "VHQ" doubles it at
44.1-48 kHz; "QQ" (cubic) waits 3 samples but does not stop aliases. "HQ": flat (0.01 dB) to 7.3
kHz, -2.9 dB at 7.6 kHz; tones of 8.3-12 kHz at 44.1 or 48 kHz come out at least 135 dB down.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr
from numpy.typing import ArrayLike, NDArray

from models.errors import DataError

__all__ = [
    "RESAMPLE_QUALITY",
    "S16_FULL_SCALE",
    "StreamingResampler",
    "float_to_pcm16",
    "pcm16_to_float",
    "read_wav",
    "resample",
    "write_wav",
]

S16_FULL_SCALE = 32768.0  # int16 full scale: -32768 <-> -1.0 exactly
# libsoxr's "high quality" preset (20-bit). The module docstring has the trade-off in numbers.
RESAMPLE_QUALITY = "HQ"


# ------------------------------------------------------------------------------------ PCM
def pcm16_to_float(pcm: ArrayLike) -> NDArray[np.float32]:
    """int16 samples (any shape) -> float32 ``pcm / 32768`` in [-1, 1)."""
    arr = np.asarray(pcm)
    if arr.dtype.kind != "i" or arr.dtype.itemsize != 2:  # int16 of either byte order
        raise TypeError(f"pcm16_to_float takes int16 samples, got {arr.dtype}")
    return arr.astype(np.float32) / np.float32(S16_FULL_SCALE)


def float_to_pcm16(samples: ArrayLike) -> NDArray[np.int16]:
    """Float samples (any shape, nominally [-1, 1]) -> int16: scaled by 32768, rounded to the
    nearest integer (halves to even) and clipped to [-32768, 32767]."""
    x = np.asarray(samples, dtype=np.float64) * S16_FULL_SCALE
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------------------ WAV
def read_wav(path: str | Path) -> tuple[NDArray[np.float32], int]:
    """Samples and rate of an audio file: mono float32 (channels averaged), rate in Hz.

    Anything libsndfile reads (WAV of any sample format, FLAC, OGG); 16-bit PCM is scaled with
    :func:`pcm16_to_float`, other formats by libsndfile to the same [-1, 1] range. Raises
    :class:`DataError` naming the file when it is missing, unreadable or holds NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such audio file: {path}")
    try:
        with soundfile.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            if f.subtype == "PCM_16":
                frames = pcm16_to_float(f.read(dtype="int16", always_2d=True))  # (n, channels)
            else:
                frames = f.read(dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, OSError) as exc:
        raise DataError(f"{path} is not a readable audio file: {exc}") from exc
    mono = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1, dtype=np.float64)
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise DataError(f"{path} holds NaN or infinite samples")
    return mono, rate


def write_wav(path: str | Path, samples: ArrayLike, rate_hz: int) -> None:
    """Write float samples as a 16-bit PCM WAV (:func:`float_to_pcm16`). ``samples`` is ``(n,)``
    for mono or ``(n, channels)``. The file's bytes depend only on the samples and the rate."""
    pcm = float_to_pcm16(samples)
    soundfile.write(str(path), pcm, int(rate_hz), subtype="PCM_16", format="WAV")


# ------------------------------------------------------------------------------ resampling
def _check_rates(in_rate_hz: int, out_rate_hz: int) -> None:
    if in_rate_hz <= 0 or out_rate_hz <= 0:
        raise ValueError(f"rates must be positive, got {in_rate_hz} -> {out_rate_hz}")


def _tail_pad(in_rate_hz: int, out_rate_hz: int) -> int:
    """Zeros appended at the end so that libsoxr emits every output sample up to
    ``ceil(n_in * out / in)`` (it stops at about ``n_in * out / in`` otherwise)."""
    return -(-in_rate_hz // out_rate_hz) + 1


def _fit(y: NDArray[np.float32], n: int) -> NDArray[np.float32]:
    """``y`` cut or zero-padded to ``n`` samples."""
    if y.size >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - y.size, np.float32)])


class StreamingResampler:
    """Sample-rate converter fed chunk by chunk: :meth:`push` as audio arrives, :meth:`flush` once
    at the end. The concatenated output of any chunking equals :func:`resample` of the whole
    signal; after :meth:`flush` it holds ``ceil(n_in * out / in)`` samples. Equal rates pass the
    samples through untouched. Not thread-safe: one per stream.
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int = 16000) -> None:
        _check_rates(in_rate_hz, out_rate_hz)
        self.in_rate_hz = int(in_rate_hz)
        self.out_rate_hz = int(out_rate_hz)
        self._stream: soxr.ResampleStream | None = None
        if self.in_rate_hz != self.out_rate_hz:
            self._stream = soxr.ResampleStream(self.in_rate_hz, self.out_rate_hz, 1,
                                               dtype="float32", quality=RESAMPLE_QUALITY)
        self._n_in = 0
        self._n_out = 0
        self._flushed = False

    @property
    def delay_in_samples(self) -> int:
        """Input samples held back right now: those received beyond the input time of the next
        output sample, ``floor(n_in - n_out * in / out)``. Bounded by the module docstring's
        table; 0 at equal rates."""
        behind = self._n_in * self.out_rate_hz - self._n_out * self.in_rate_hz
        return max(0, behind // self.out_rate_hz)

    def push(self, samples: ArrayLike) -> NDArray[np.float32]:
        """Feed input samples (flattened to 1-D); returns the output samples now complete
        (possibly none)."""
        if self._flushed:
            raise RuntimeError("push() after flush(): create a new StreamingResampler")
        x = np.array(samples, dtype=np.float32).reshape(-1)  # a copy: callers keep theirs
        self._n_in += x.size
        y = x if self._stream is None else self._stream.resample_chunk(x)
        self._n_out += y.size
        return y

    def flush(self) -> NDArray[np.float32]:
        """End of input: returns the remaining output samples; later calls return none."""
        if self._flushed or self._stream is None:
            self._flushed = True
            return np.zeros(0, np.float32)
        self._flushed = True
        n_total = -(-self._n_in * self.out_rate_hz // self.in_rate_hz)
        pad = np.zeros(_tail_pad(self.in_rate_hz, self.out_rate_hz), np.float32)
        tail = _fit(self._stream.resample_chunk(pad, last=True), max(n_total - self._n_out, 0))
        self._n_out += tail.size
        return tail


def resample(samples: ArrayLike, in_rate_hz: int, out_rate_hz: int = 16000) -> NDArray[np.float32]:
    """One-shot rate conversion of a whole signal (flattened to 1-D) -> float32 of
    ``ceil(n * out / in)`` samples; the same samples as :class:`StreamingResampler`."""
    _check_rates(in_rate_hz, out_rate_hz)
    x = np.array(samples, dtype=np.float32).reshape(-1)
    if in_rate_hz == out_rate_hz:
        return x
    n_total = -(-x.size * out_rate_hz // in_rate_hz)
    if n_total == 0:
        return np.zeros(0, np.float32)
    padded = np.concatenate([x, np.zeros(_tail_pad(in_rate_hz, out_rate_hz), np.float32)])
    y = soxr.resample(padded, in_rate_hz, out_rate_hz, quality=RESAMPLE_QUALITY)
    return _fit(np.asarray(y, np.float32), n_total)
