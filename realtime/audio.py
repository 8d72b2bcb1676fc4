"""PCM decoding and streaming resampling to the server's 16 kHz mono float32.

Inside the server, audio is 16 kHz mono float32 in [-1, 1] (DESIGN §6). Clients send mono PCM at
any rate in 8000..48000 Hz (``pcm_s16le`` or ``pcm_f32le``); WebRTC peers deliver 48 kHz,
usually stereo, 20 ms frames. This module turns both into 16 kHz samples:

- :func:`decode_pcm` checks and converts one message's bytes (``ProtocolError("bad_audio")``):
  float samples are finite and within ``±F32_MAX_ABS`` (overshoot past full scale is clipped);
- :func:`downmix_interleaved` averages interleaved channels (WebRTC frames);
- :class:`StreamingResampler` and :func:`resample` convert the rate. They are
  ``models.audio``'s (scipy polyphase), the very converter that prepared the training audio; its
  docstring gives the look-ahead each input rate adds to motion latency (about 3 ms from
  22.05-48 kHz, 6 ms from 8 kHz, none at 16 kHz).

The s16 scaling (1/32768 in, round and clip out) is ``models.audio``'s as well.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.audio import (
    S16_FULL_SCALE,
    StreamingResampler,
    float_to_pcm16,
    pcm16_to_float,
    resample,
)
from realtime.errors import ProtocolError, echo

__all__ = [
    "Encoding",
    "ENCODINGS",
    "F32_MAX_ABS",
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
# Largest |sample| accepted in pcm_f32le. Float audio may overshoot full scale a little (an
# unclipped mix, a browser's float capture): up to +6 dBFS is clipped to [-1, 1] as a converter
# would. Beyond that the bytes are not audio (1e20 overflowed the model's features to NaN and
# ended the session as a server error): the client's error, `bad_audio`.
F32_MAX_ABS = 2.0


def bytes_per_sample(encoding: str) -> int:
    """Bytes of one mono sample in ``encoding`` (2 or 4)."""
    if encoding not in _DTYPES:
        raise ProtocolError(
            "bad_audio", f"encoding must be one of {', '.join(ENCODINGS)}, got {echo(encoding)}"
        )
    return _DTYPES[encoding].itemsize


def decode_pcm(data: bytes, encoding: str) -> NDArray[np.float32]:
    """Mono PCM bytes -> float32 samples, shape ``(n,)``.

    ``pcm_s16le`` is scaled by 1/32768; ``pcm_f32le`` must be finite with ``|x| <=
    F32_MAX_ABS`` and is clipped to [-1, 1]. Raises ``ProtocolError("bad_audio")``, naming the
    first bad sample, for a length that is not a whole number of samples, NaN/inf, or a value
    out of range.
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
        return pcm16_to_float(raw)
    samples = raw.astype(np.float32)  # native byte order copy
    with np.errstate(invalid="ignore"):
        ok = np.abs(samples) <= F32_MAX_ABS  # False for NaN and inf too
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise ProtocolError(
            "bad_audio", f"audio sample {bad} is {samples[bad]:g}; pcm_f32le samples must be "
            f"finite and within ±{F32_MAX_ABS:g} (full scale is ±1)"
        )
    return np.clip(samples, -1.0, 1.0, out=samples)


def encode_pcm(samples: ArrayLike, encoding: str) -> bytes:
    """Float samples in [-1, 1] -> mono PCM bytes (s16 is rounded and clipped)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    bytes_per_sample(encoding)  # validates the name
    if encoding == "pcm_s16le":
        return float_to_pcm16(x).astype("<i2").tobytes()
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
    scale = 1.0 / S16_FULL_SCALE if arr.dtype == np.int16 else 1.0
    flat = arr.astype(np.float64).reshape(-1)
    if flat.size % channels:
        raise ValueError(f"{flat.size} samples do not split into {channels} channels")
    mono = flat.reshape(-1, channels).mean(axis=1) * scale
    return mono.astype(np.float32)
