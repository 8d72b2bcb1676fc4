"""PCM decoding and streaming resampling to the server's 16 kHz mono float32.

Inside the server, audio is 16 kHz mono float32 in [-1, 1] (DESIGN §6). Clients send mono PCM at
any rate in 8000..48000 Hz (``pcm_s16le`` or ``pcm_f32le``); WebRTC peers deliver 48 kHz,
usually stereo, 20 ms frames. This module turns both into 16 kHz samples:

- :func:`decode_pcm` checks and converts one message's bytes (``ProtocolError("bad_audio")``);
- :func:`downmix_interleaved` averages interleaved channels (WebRTC frames);
- :class:`StreamingResampler` converts the rate, chunk by chunk, with a Kaiser-windowed sinc.

Resampler definition (exact, so that it is chunk-size independent): with ``L/M = out/in``
reduced, output sample ``n`` sits at input position ``tau = n*M/L`` and is
``y[n] = sum_j x[j] * h(tau - j)`` where ``x[j] = 0`` for ``j < 0`` and after :meth:`flush`.
``h`` is a Kaiser-windowed sinc with cutoff ``rolloff * min(in, out) / 2`` Hz, normalised per
phase to unit DC gain. Output ``n`` is emitted as soon as the input up to ``floor(tau) + K``
has arrived (``K`` = half the filter length, :attr:`StreamingResampler.delay_in_samples`), so
the output time axis is exactly the input's (no group delay), at the price of ``K`` input
samples of buffering (1.7 ms at 48 kHz, 3.4 ms at 8 kHz with the defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from realtime.errors import ProtocolError

__all__ = [
    "Encoding",
    "ENCODINGS",
    "ResamplerConfig",
    "StreamingResampler",
    "bytes_per_sample",
    "decode_pcm",
    "downmix_interleaved",
    "encode_pcm",
    "resample",
]

Encoding = Literal["pcm_s16le", "pcm_f32le"]
ENCODINGS: tuple[str, ...] = ("pcm_s16le", "pcm_f32le")
_DTYPES: dict[str, np.dtype[Any]] = {"pcm_s16le": np.dtype("<i2"), "pcm_f32le": np.dtype("<f4")}
_S16_SCALE = 32768.0  # int16 full scale: -32768 maps to -1.0 exactly


def bytes_per_sample(encoding: str) -> int:
    """Bytes of one mono sample in ``encoding`` (2 or 4)."""
    if encoding not in _DTYPES:
        raise ProtocolError(
            "bad_audio", f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}"
        )
    return _DTYPES[encoding].itemsize


def decode_pcm(data: bytes, encoding: str) -> NDArray[np.float32]:
    """Mono PCM bytes -> float32 samples, shape ``(n,)``.

    ``pcm_s16le`` is scaled by 1/32768; ``pcm_f32le`` is taken as is but must be finite.
    Raises ``ProtocolError("bad_audio")`` for a length that is not a whole number of samples
    or for NaN/inf values.
    """
    width = bytes_per_sample(encoding)
    if len(data) % width:
        raise ProtocolError(
            "bad_audio",
            f"audio data is {len(data)} bytes, not a multiple of {width} bytes ({encoding} "
            f"samples are {width} bytes each)",
        )
    raw = np.frombuffer(data, dtype=_DTYPES[encoding])
    if encoding == "pcm_s16le":
        return (raw.astype(np.float32) / np.float32(_S16_SCALE)).astype(np.float32)
    samples = raw.astype(np.float32)  # native byte order copy
    if not np.isfinite(samples).all():
        bad = int(np.flatnonzero(~np.isfinite(samples))[0])
        raise ProtocolError(
            "bad_audio", f"audio sample {bad} is {samples[bad]}; pcm_f32le samples must be finite"
        )
    return samples


def encode_pcm(samples: ArrayLike, encoding: str) -> bytes:
    """Float samples in [-1, 1] -> mono PCM bytes (s16 is rounded and clipped)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    bytes_per_sample(encoding)  # validates the name
    if encoding == "pcm_s16le":
        ints = np.clip(np.round(x * _S16_SCALE), -32768, 32767)
        return ints.astype("<i2").tobytes()
    return x.astype("<f4").tobytes()


def downmix_interleaved(pcm: ArrayLike, channels: int) -> NDArray[np.float32]:
    """Interleaved multi-channel PCM -> mono float32 by averaging the channels.

    ``pcm`` is int16 (scaled by 1/32768) or float, either flat ``(n*channels,)`` with the
    channels interleaved (as aiortc's ``AudioFrame.to_ndarray()`` gives for packed formats,
    shape ``(1, n*channels)``) or already shaped ``(n, channels)``.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    arr = np.asarray(pcm)
    scale = 1.0 / _S16_SCALE if arr.dtype == np.int16 else 1.0
    flat = arr.astype(np.float64).reshape(-1)
    if flat.size % channels:
        raise ValueError(f"{flat.size} samples do not split into {channels} channels")
    mono = flat.reshape(-1, channels).mean(axis=1) * scale
    return mono.astype(np.float32)


@dataclass(frozen=True)
class ResamplerConfig:
    """Anti-aliasing filter of :class:`StreamingResampler`."""

    # Zero crossings of the sinc on each side: the filter half-length in cutoff periods.
    # 24 puts 8.3 kHz (at 48 kHz in) 100 dB down for 1.7 ms of buffering; 16 gives only -58 dB.
    zero_crossings: int = 24
    # Cutoff as a fraction of the lower Nyquist frequency: 0.9 -> 7.2 kHz when the output is
    # 16 kHz, leaving the transition band room to reach the stop band by 8 kHz.
    rolloff: float = 0.9
    # Kaiser window shape: ~8.6 gives about -90 dB side lobes.
    kaiser_beta: float = 8.6
    # Precompute one filter per phase when the reduced ratio has at most this many phases
    # (all the usual rates: 44.1 kHz needs 160); otherwise taps are computed per output sample.
    max_phase_table: int = 4096


class StreamingResampler:
    """Stateful rate converter: :meth:`push` chunks, :meth:`flush` at the end.

    Chunk-size independent: the concatenated output of any chunking of a signal equals the
    one-shot :func:`resample` of it (to float32 rounding). After :meth:`flush`, the total output
    length is ``ceil(n_in * out / in)``.
    """

    def __init__(
        self, in_rate_hz: int, out_rate_hz: int = 16000, config: ResamplerConfig | None = None
    ) -> None:
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise ValueError(f"rates must be positive, got {in_rate_hz} -> {out_rate_hz}")
        cfg = config or ResamplerConfig()
        g = math.gcd(in_rate_hz, out_rate_hz)
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._up = out_rate_hz // g  # L
        self._down = in_rate_hz // g  # M
        self._passthrough = in_rate_hz == out_rate_hz
        # Cutoff in cycles per input sample, and the kernel half-width in input samples.
        self._fc = 0.5 * min(1.0, self._up / self._down) * cfg.rolloff
        self._half_width = cfg.zero_crossings / (2.0 * self._fc)
        self._k = 0 if self._passthrough else math.ceil(self._half_width)
        self._beta = cfg.kaiser_beta
        self._taps = np.arange(2 * self._k)  # (2K,)
        self._table: NDArray[np.float64] | None = None
        if not self._passthrough and self._up <= cfg.max_phase_table:
            self._table = self._kernel_rows(np.arange(self._up) / self._up)  # (L, 2K)
        # Input buffer: absolute input indices [buf_start, n_in); zeros stand for j < 0.
        self._buf = np.zeros(max(self._k - 1, 0), dtype=np.float64)
        self._buf_start = -(self._k - 1) if self._k else 0
        self._n_in = 0
        self._n_out = 0
        self._flushed = False

    @property
    def delay_in_samples(self) -> int:
        """Input samples beyond an output's position needed before it is emitted (K)."""
        return self._k

    def push(self, samples: ArrayLike) -> NDArray[np.float32]:
        """Feed input samples (1-D); returns every output sample that is now complete."""
        if self._flushed:
            raise RuntimeError("push() after flush(): create a new StreamingResampler")
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        self._n_in += x.size
        if self._passthrough:
            self._n_out += x.size
            return x.astype(np.float32)
        self._buf = np.concatenate([self._buf, x])
        # Output n is complete once input index floor(n*M/L) + K has arrived.
        n_end = ((self._n_in - self._k) * self._up - 1) // self._down + 1
        return self._emit(max(n_end, self._n_out))

    def flush(self) -> NDArray[np.float32]:
        """End of input: pads with zeros and returns the remaining output samples."""
        if self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        if self._passthrough:
            return np.zeros(0, dtype=np.float32)
        n_total = (self._n_in * self._up + self._down - 1) // self._down
        self._buf = np.concatenate([self._buf, np.zeros(self._k + 1)])
        return self._emit(n_total)

    def _emit(self, n_end: int) -> NDArray[np.float32]:
        n = np.arange(self._n_out, n_end, dtype=np.int64)  # (N,)
        if n.size == 0:
            return np.zeros(0, dtype=np.float32)
        q = n * self._down // self._up  # integer part of the input position
        p = n * self._down % self._up  # phase: fractional part * L
        idx = (q - self._k + 1 - self._buf_start)[:, None] + self._taps[None, :]  # (N, 2K)
        weights = self._table[p] if self._table is not None else self._kernel_rows(p / self._up)
        y = np.einsum("ij,ij->i", self._buf[idx], weights)
        self._n_out = n_end
        next_start = n_end * self._down // self._up - self._k + 1
        self._buf = self._buf[next_start - self._buf_start :]
        self._buf_start = next_start
        return y.astype(np.float32)

    def _kernel_rows(self, frac: NDArray[np.float64]) -> NDArray[np.float64]:
        """Filter taps for fractional positions ``frac`` in [0, 1): shape (len(frac), 2K)."""
        u = frac[:, None] + (self._k - 1) - self._taps[None, :]  # tau - j, (N, 2K)
        x = u / self._half_width
        inside = np.abs(x) < 1.0
        window = np.i0(self._beta * np.sqrt(np.clip(1.0 - x * x, 0.0, None))) / np.i0(self._beta)
        h = 2.0 * self._fc * np.sinc(2.0 * self._fc * u) * window * inside
        return np.asarray(h / h.sum(axis=1, keepdims=True), dtype=np.float64)


def resample(samples: ArrayLike, in_rate_hz: int, out_rate_hz: int = 16000) -> NDArray[np.float32]:
    """One-shot resampling of a whole signal (same result as streaming it)."""
    rs = StreamingResampler(in_rate_hz, out_rate_hz)
    return np.concatenate([rs.push(samples), rs.flush()])
