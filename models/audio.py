"""Audio in one place: 16-bit PCM scaling, WAV files and the sample-rate converter.

Training (dataset WAVs, espeak-ng speech, speed perturbation) and serving (clients at 8-48 kHz,
WebRTC at 48 kHz) go through the same functions here, so the model hears the same filter in both.
Nothing in this module knows about corpora, datasets or training; ``realtime`` imports it.

PCM: int16 ``s`` <-> float ``s / 32768``. -32768 maps to -1.0 exactly; on the way out floats are
rounded to the nearest integer and clipped to [-32768, 32767], so +1.0 becomes 32767.

Resampling is scipy's polyphase filtering, one filter per rate pair for the one-shot
:func:`resample` (``scipy.signal.resample_poly``) and the :class:`StreamingResampler` (the same
sums over a kept span of input), which agree sample for sample (any chunking, to float32
rounding). The output keeps the input's time axis: output sample ``n`` is the signal at input
time ``n * in / out`` (the filter is linear-phase with an odd length, centred on that time), with
zeros assumed outside the signal; after the input ends there are ``ceil(n_in * out / in)`` output
samples.

The filter (``scipy.signal.firwin``, Kaiser window, cached per rate pair) runs at the common rate
``lcm(in, out)``. Its stop band starts at the lower Nyquist (8 kHz for 16 kHz out, 4 kHz from 8
kHz in) and is :data:`RESAMPLE_STOPBAND_DB` down (Kaiser beta 8.96; 89.7 dB worst); its
transition band is :data:`RESAMPLE_TRANSITION` (12 %) of the lower Nyquist below it, and
``scipy.signal.kaiserord`` sets the length. At 16 kHz out: flat (0.01 dB) to 7.1 kHz, -0.7 dB at
7.3 kHz, -2.2 dB at 7.4 kHz, -6 dB at the cut-off 7.52 kHz, -10 dB at 7.6 kHz (the top of the
features' mel bands); tones of 8.3-12 kHz from 22.05-48 kHz come out 99 dB down or more. From 8
kHz: flat to 3.55 kHz, -6 dB at 3.76 kHz, images of 1-3.4 kHz tones 105 dB down.

Streaming look-ahead: output sample ``n`` is emitted by the push that brings the last input
sample under its filter, the filter's half-length after ``n * in / out``
(:attr:`StreamingResampler.delay_in_samples`, measured one sample pushed at a time). It adds to
motion latency; clients at 16 kHz skip the resampler and pay nothing.

    in -> 16 kHz    taps (at lcm rate)   look-ahead (input samples)   ms
    48 kHz                 287                   143                  2.98
    44.1 kHz            42 007 (up 160)          131.3                2.98
    22.05 kHz           42 007 (up 320)           65.6                2.98
    8 kHz                  193 (up 2)             48                  6.00

The filter's time span is set by the transition band's width in Hz, so it is the same 3 ms from
any rate above 16 kHz and twice that from 8 kHz (a band half as wide). Cost: pushing 20 ms
chunks of 48 kHz audio takes about 0.04 ms a chunk on one core (rates with ``up == 1``, 48 and
32 kHz, are decimated as one small matrix product; measured 2026-12-08, 0.86 ms a chunk before),
about 0.7 ms at 44.1 kHz (each output's window gathered). A rate pair whose
ratio does not reduce (47999 -> 16000: up 16000) needs millions of taps: about 1 s to design
once, 37 MB; speed perturbation at an arbitrary whole-Hz rate pays 0.2 s per new rate.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import soundfile
from numpy.lib.stride_tricks import as_strided, sliding_window_view
from numpy.typing import ArrayLike, NDArray
from scipy import signal

from models.errors import DataError

__all__ = [
    "RESAMPLE_STOPBAND_DB",
    "RESAMPLE_TRANSITION",
    "S16_FULL_SCALE",
    "StreamingResampler",
    "float_to_pcm16",
    "pcm16_to_float",
    "read_wav",
    "resample",
    "write_wav",
]

S16_FULL_SCALE = 32768.0  # int16 full scale: -32768 <-> -1.0 exactly
# The anti-aliasing filter (module docstring has its numbers): attenuation from the lower Nyquist
# up, and the transition band below it as a fraction of it. 12 % keeps the filter's half-length
# (the streaming look-ahead) under 3 ms at 44.1-48 kHz in; narrower costs latency.
RESAMPLE_STOPBAND_DB = 90.0
RESAMPLE_TRANSITION = 0.12
# Output samples the streaming converter computes at once: bounds its (block, span) temporaries
# when one push brings seconds of audio (a 20 ms chunk at 48 kHz makes 320).
_BLOCK_OUTPUTS = 2048


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


def _ratio(in_rate_hz: int, out_rate_hz: int) -> tuple[int, int]:
    """``(up, down)`` in lowest terms: ``out / in = up / down``."""
    g = math.gcd(in_rate_hz, out_rate_hz)
    return out_rate_hz // g, in_rate_hz // g


@functools.lru_cache(maxsize=16)
def _lowpass(in_rate_hz: int, out_rate_hz: int) -> NDArray[np.float64]:
    """The anti-aliasing filter of ``in -> out``: ``(2 * half + 1,)`` taps at ``in * up`` Hz (the
    common rate), linear-phase, DC gain 1, Kaiser-windowed (module docstring). Read-only: shared
    by every caller of this rate pair."""
    up, _ = _ratio(in_rate_hz, out_rate_hz)
    rate_hz = in_rate_hz * up
    nyquist_hz = min(in_rate_hz, out_rate_hz) / 2
    width_hz = RESAMPLE_TRANSITION * nyquist_hz
    n_taps, beta = signal.kaiserord(RESAMPLE_STOPBAND_DB, width_hz / (rate_hz / 2))
    taps = signal.firwin(n_taps | 1, nyquist_hz - width_hz / 2, window=("kaiser", beta),
                         fs=rate_hz)  # odd length: centred on a tap, so no fractional delay
    taps.flags.writeable = False
    return taps


@functools.lru_cache(maxsize=8)
def _polyphase(in_rate_hz: int, out_rate_hz: int) -> NDArray[np.float64]:
    """:func:`_lowpass` split into its ``up`` phases for the streaming converter, ``(up, span)``,
    scaled by ``up`` (as resample_poly does) and reversed in time: output ``n`` with
    ``n * down + half = newest * up + r`` is ``table[r] @ x[newest - span + 1 : newest + 1]``."""
    up, _ = _ratio(in_rate_hz, out_rate_hz)
    taps = _lowpass(in_rate_hz, out_rate_hz)
    span = -(-taps.size // up)  # input samples under the filter
    padded = np.zeros(span * up)
    padded[: taps.size] = taps * up
    # table[r, t] = up * taps[(span - 1 - t) * up + r]: the taps meeting input samples at phase r
    table = np.ascontiguousarray(padded.reshape(span, up)[::-1].T)
    table.flags.writeable = False
    return table


class StreamingResampler:
    """Sample-rate converter fed chunk by chunk: :meth:`push` as audio arrives, :meth:`flush` once
    at the end. The concatenated output of any chunking equals :func:`resample` of the whole
    signal (to float32 rounding); after :meth:`flush` it holds ``ceil(n_in * out / in)`` samples.
    Output sample ``n`` is returned by the push that brings the last input sample under its
    filter, :attr:`delay_in_samples` past its time. Only the last filter span of input is kept.
    Equal rates pass the samples through untouched. Not thread-safe: one per stream.
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int = 16000) -> None:
        _check_rates(in_rate_hz, out_rate_hz)
        self.in_rate_hz = int(in_rate_hz)
        self.out_rate_hz = int(out_rate_hz)
        self._up, self._down = _ratio(self.in_rate_hz, self.out_rate_hz)
        self._table: NDArray[np.float64] | None = None  # None: equal rates, samples pass through
        self._taps_by_row = np.zeros((0, 1))  # up == 1 only: see _decimate
        self._half = 0  # filter taps after the centre, at in * up Hz
        span = 1
        if self.in_rate_hz != self.out_rate_hz:
            self._table = _polyphase(self.in_rate_hz, self.out_rate_hz)
            if self._up == 1:  # the taps in rows of `down` (see _decimate)
                rows = -(-self._table.shape[1] // self._down)
                padded = np.zeros(rows * self._down)
                padded[: self._table.shape[1]] = self._table[0]
                self._taps_by_row = padded.reshape(rows, self._down)
            self._half = _lowpass(self.in_rate_hz, self.out_rate_hz).size // 2
            span = self._table.shape[1]
        # Input samples [_start, _start + _history.size); those before time 0 are zeros.
        self._history = np.zeros(span - 1)
        self._start = 1 - span
        self._n_in = 0
        self._n_out = 0
        self._flushed = False

    @property
    def delay_in_samples(self) -> int:
        """Look-ahead: output ``n`` (at input time ``n * in / out``) is emitted once the input
        has reached that time plus at most this many samples, ``ceil(half / up)`` (the filter's
        half-length at the input rate); 0 at equal rates. A constant of the converter."""
        return -(-self._half // self._up)

    def push(self, samples: ArrayLike) -> NDArray[np.float32]:
        """Feed input samples (flattened to 1-D); returns the output samples now complete
        (possibly none)."""
        if self._flushed:
            raise RuntimeError("push() after flush(): create a new StreamingResampler")
        x = np.array(samples, dtype=np.float32).reshape(-1)  # a copy: callers keep theirs
        if self._table is None:
            return x
        self._n_in += x.size
        self._history = np.concatenate([self._history, x])
        # output n is complete once its newest input sample, (n * down + half) // up, has arrived
        ready = -(-(self._n_in * self._up - self._half) // self._down)
        return self._emit(max(ready, self._n_out))

    def flush(self) -> NDArray[np.float32]:
        """End of input (zeros after it): returns the remaining output samples; later calls
        return none."""
        if self._flushed or self._table is None:
            self._flushed = True
            return np.zeros(0, np.float32)
        self._flushed = True
        n_total = -(-self._n_in * self._up // self._down)
        newest = ((n_total - 1) * self._down + self._half) // self._up  # the last output's
        pad = newest + 1 - (self._start + self._history.size)
        self._history = np.concatenate([self._history, np.zeros(max(pad, 0))])
        return self._emit(max(n_total, self._n_out))

    def _emit(self, stop: int) -> NDArray[np.float32]:
        """Outputs ``[_n_out, stop)`` from the history, then drop the input they alone needed."""
        assert self._table is not None
        span = self._table.shape[1]
        first = self._n_out
        if self._up == 1 and stop > first:  # integer decimation (48 and 32 kHz in)
            y = self._decimate(first, stop)
        else:
            y = self._polyphase_outputs(first, stop)
        self._n_out = stop
        next_newest = (stop * self._down + self._half) // self._up
        keep_from = min(next_newest - (span - 1), self._start + self._history.size)
        self._history = self._history[keep_from - self._start :]
        self._start = keep_from
        return y

    def _decimate(self, first: int, stop: int) -> NDArray[np.float32]:
        """``up == 1``: output n is ``table[0] @ x[n*down + half - span + 1 : ... + span]``. With
        the input cut into rows of ``down`` samples (X) and the taps into rows likewise (H,
        zero-padded), Z = X @ H.T is one small matrix product and output i is the sum of Z's
        diagonal Z[i + j, j] over j: ~20x faster than a gathered window per output (20 ms of
        48 kHz: ~40 us instead of ~0.9 ms), the same sums."""
        assert self._table is not None
        span, down, count = self._table.shape[1], self._down, stop - first
        taps = self._taps_by_row  # (J, down)
        rows = count + taps.shape[0] - 1
        base = first * down + self._half - (span - 1) - self._start  # history index of output 0
        x = np.zeros(rows * down)
        seg = self._history[base : base + x.size]
        x[: seg.size] = seg
        z = x.reshape(rows, down) @ taps.T  # (rows, J)
        step = z.strides[0]
        diagonal = as_strided(z, shape=(count, taps.shape[0]), strides=(step, step + z.strides[1]))
        return diagonal.sum(axis=1).astype(np.float32)

    def _polyphase_outputs(self, first: int, stop: int) -> NDArray[np.float32]:
        """Any ``up``: each output's window gathered, dotted with its phase's taps."""
        assert self._table is not None
        span = self._table.shape[1]
        y = np.empty(stop - first, np.float32)
        for lo in range(first, stop, _BLOCK_OUTPUTS):
            n = np.arange(lo, min(lo + _BLOCK_OUTPUTS, stop))
            newest, phase = np.divmod(n * self._down + self._half, self._up)
            windows = sliding_window_view(self._history, span)[newest - (span - 1) - self._start]
            y[lo - first : lo - first + n.size] = np.einsum("nt,nt->n", self._table[phase], windows)
        return y


def resample(samples: ArrayLike, in_rate_hz: int, out_rate_hz: int = 16000) -> NDArray[np.float32]:
    """One-shot rate conversion of a whole signal (flattened to 1-D) -> float32 of
    ``ceil(n * out / in)`` samples: ``scipy.signal.resample_poly`` with this module's filter
    (zeros assumed outside the signal); :class:`StreamingResampler` gives the same samples."""
    _check_rates(in_rate_hz, out_rate_hz)
    x = np.array(samples, dtype=np.float32).reshape(-1)
    if in_rate_hz == out_rate_hz or x.size == 0:
        return x
    up, down = _ratio(in_rate_hz, out_rate_hz)
    y = signal.resample_poly(x, up, down, window=_lowpass(in_rate_hz, out_rate_hz))
    return np.asarray(y, np.float32)
