"""Audio augmentation for training the from-scratch audio encoder (numpy only).

Real users speak through laptop mics, phones and rooms; the corpus is clean TTS. Each function
takes 16 kHz float32 audio and a numpy Generator and returns new audio; the two that change timing
(``speed``, ``insert_silence``) also take and return the (T, K) motion target, kept consistent:
frame k still depicts audio time k / fps.

``augment`` applies a random subset with the probabilities of an ``AugmentConfig``. ``colour``
tilts and reshapes the spectral envelope (another voice's source and tract, another microphone)
without touching pitch or timing. Pitch is
shifted without changing timing by resampling the STFT magnitude along frequency (crude, but it
moves formants and f0 together, which is what a different voice does); tempo is changed by
``speed`` (resampling with ``models.audio.resample``, the converter of serving: pitch and tempo
together, Kaldi-style speed perturbation) with the motion target time-warped by the same factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import next_fast_len

from models.audio import resample

SR = 16000
FPS = 30
# Speed factors come in steps of 50 Hz of the nominal input rate (0.3 %): any such rate reduces
# against 16 kHz to at most 320 polyphase phases, so the resampler's filter is designed in
# milliseconds (a whole-Hz rate can need millions of taps).
SPEED_STEP_HZ = 50


@dataclass(frozen=True)
class AugmentConfig:
    p_gain: float = 0.5
    gain_db: tuple[float, float] = (-12.0, 6.0)  # quiet mics are common, clipping ones rarer
    p_noise: float = 0.3
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_band: float = 0.3  # telephone / cheap mic / rumble filter
    p_reverb: float = 0.2
    rt60_s: tuple[float, float] = (0.15, 0.6)  # small rooms to living rooms
    p_pitch: float = 0.2
    semitones: tuple[float, float] = (-3.0, 3.0)
    p_speed: float = 0.2
    speed: tuple[float, float] = (0.9, 1.1)
    p_silence: float = 0.2
    silence_hops: tuple[int, int] = (1, 10)  # inserted silence, in 100 ms hops (3 frames)
    # Voice and microphone colour (``colour``): a random spectral tilt and smooth random peaks
    # and dips. Off by default (a recipe knob: talker train --augment-colour P).
    p_colour: float = 0.0
    tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0)
    ripple_db: float = 6.0  # +- at each of the control points


def gain(audio: np.ndarray, rng: np.random.Generator, db: tuple[float, float]) -> np.ndarray:
    return (audio * 10 ** (rng.uniform(*db) / 20)).astype(np.float32)


def add_noise(audio: np.ndarray, rng: np.random.Generator,
              snr_db: tuple[float, float]) -> np.ndarray:
    """White or pink-ish noise at a random SNR relative to the signal power."""
    noise = rng.standard_normal(len(audio))
    if rng.random() < 0.5:  # pink-ish: 1/f power by shaping the spectrum
        n = next_fast_len(len(noise))
        shaped = np.fft.rfft(noise, n) / np.sqrt(np.arange(n // 2 + 1) + 1.0)
        noise = np.fft.irfft(shaped, n=n)[: len(audio)]
    p_sig = np.mean(audio.astype(np.float64) ** 2) + 1e-12
    p_noise = np.mean(noise ** 2) + 1e-12
    scale = np.sqrt(p_sig / p_noise / 10 ** (rng.uniform(*snr_db) / 10))
    return (audio + scale * noise).astype(np.float32)


def band_limit(audio: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """FFT brick-wall band limits: "telephone" (300-3400 Hz), "lowpass" (3-7 kHz), "highpass"."""
    kind = kind or str(rng.choice(["telephone", "lowpass", "highpass"]))
    lo, hi = {"telephone": (300.0, 3400.0), "lowpass": (0.0, rng.uniform(3000, 7000)),
              "highpass": (rng.uniform(80, 300), SR / 2)}[kind]
    n = next_fast_len(len(audio))  # zero-padded to a fast FFT size (odd sizes are slow)
    spec = np.fft.rfft(audio, n)
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, n=n)[: len(audio)].astype(np.float32)


def reverb(audio: np.ndarray, rng: np.random.Generator, rt60_s: tuple[float, float]) -> np.ndarray:
    """Convolve with an exponentially decaying noise impulse response (60 dB down at RT60)."""
    rt60 = rng.uniform(*rt60_s)
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    ir = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: -60 dB
    ir[0] = 1.0  # the direct path
    ir /= np.sqrt(np.sum(ir ** 2))
    m = len(audio) + n - 1
    size = 1 << (m - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(ir, size), size)[:len(audio)]
    peak = np.abs(audio).max() / (np.abs(wet).max() + 1e-9)
    return (wet * peak).astype(np.float32)


def pitch_shift(audio: np.ndarray, rng: np.random.Generator,
                semitones: tuple[float, float]) -> np.ndarray:
    """Shift spectra by a random ratio, keeping timing (STFT magnitude resampled, phase kept)."""
    ratio = 2 ** (rng.uniform(*semitones) / 12)
    n_fft, hop = 512, 128
    win = np.hanning(n_fft + 1)[:-1]
    pad = np.concatenate([np.zeros(n_fft), audio, np.zeros(n_fft)])
    n_frames = (len(pad) - n_fft) // hop + 1
    idx = np.arange(n_fft)[None] + hop * np.arange(n_frames)[:, None]
    spec = np.fft.rfft(pad[idx] * win, axis=1)  # (F, n_fft/2+1)
    # Linear interpolation of every frame's magnitude at bins / ratio (zero past the top bin).
    n_bins = spec.shape[1]
    pos = np.arange(n_bins) / ratio
    i0 = np.minimum(np.floor(pos).astype(int), n_bins - 1)
    i1 = np.minimum(i0 + 1, n_bins - 1)
    frac = pos - i0
    mag_in = np.abs(spec)
    mag = mag_in[:, i0] * (1 - frac) + mag_in[:, i1] * frac
    mag[:, pos > n_bins - 1] = 0.0
    frames = np.fft.irfft(mag * np.exp(1j * np.angle(spec)), n=n_fft, axis=1) * win
    # Overlap-add: segment j (hop samples) of frame f lands at hop * (f + j).
    out = np.zeros(len(pad))
    norm = np.zeros(len(pad))
    for j in range(n_fft // hop):
        seg = slice(hop * j, hop * (j + 1))
        dst = slice(hop * j, hop * (j + n_frames))
        out[dst] += frames[:, seg].reshape(-1)
        norm[dst] += np.tile(win[seg] ** 2, n_frames)
    out = out / np.maximum(norm, 1e-3)
    return out[n_fft:n_fft + len(audio)].astype(np.float32)


COLOUR_POINTS_HZ = (150.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0)  # an octave apart


def colour(audio: np.ndarray, rng: np.random.Generator,
           tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0),
           ripple_db: float = 6.0) -> np.ndarray:
    """Colour the spectrum the way another voice or microphone would: gain(f) in dB is a tilt
    (dB per octave around 1 kHz: brighter or darker voices, a glottal source unlike the
    synthesiser's) plus a smooth curve through random gains at ``COLOUR_POINTS_HZ`` (formant
    regions a little stronger or weaker: a different vocal tract, a cheap microphone),
    interpolated along log frequency. Zero-phase (applied to the FFT magnitude): timing is
    kept exactly. The RMS level is kept."""
    n = next_fast_len(len(audio))
    spec = np.fft.rfft(audio.astype(np.float64), n)
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    octaves = np.log2(f / 1000.0)
    points = np.log2(np.asarray(COLOUR_POINTS_HZ) / 1000.0)
    ripple = np.interp(octaves, points, rng.uniform(-ripple_db, ripple_db, len(points)))
    gain_db = rng.uniform(*tilt_db_per_octave) * np.clip(octaves, -3.0, 3.0) + ripple
    out = np.fft.irfft(spec * 10 ** (gain_db / 20), n=n)[: len(audio)]
    rms_in = np.sqrt(np.mean(audio.astype(np.float64) ** 2))
    rms_out = np.sqrt(np.mean(out ** 2))
    return (out * (rms_in / rms_out if rms_out > 0 else 1.0)).astype(np.float32)


def speed(audio: np.ndarray, coeffs: np.ndarray, rng: np.random.Generator,
          factor_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Play faster (factor > 1) or slower; the motion target is warped by the same factor.

    The audio is taken as recorded at ``factor * 16 kHz`` (rounded to a multiple of
    ``SPEED_STEP_HZ``, and the factor with it) and resampled to 16 kHz, anti-aliased: output
    sample n is input time n * factor, and output frame k shows input time k * factor / fps.
    """
    steps = round(rng.uniform(*factor_range) * SR / SPEED_STEP_HZ)
    in_rate_hz = int(steps * SPEED_STEP_HZ)
    r = in_rate_hz / SR
    a = resample(audio, in_rate_hz, SR)
    if a.size == 0:
        a = np.zeros(1, np.float32)
    n_out = len(a)
    T_out = max(1, -(-n_out * FPS // SR))
    src = np.minimum(np.arange(T_out) * r, len(coeffs) - 1)  # output frame k <- time k*r/fps
    c = np.stack([np.interp(src, np.arange(len(coeffs)), coeffs[:, j])
                  for j in range(coeffs.shape[1])], axis=1).astype(np.float32)
    return a, c


def insert_silence(audio: np.ndarray, coeffs: np.ndarray, rng: np.random.Generator,
                   hops: tuple[int, int], neutral: np.ndarray | None = None,
                   ramp_frames: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Insert a pause at a hop boundary; the face eases to ``neutral`` (closed mouth, default all
    zeros = the ARKit rest pose) over ``ramp_frames`` and back. 3 frames = 1600 samples exactly."""
    n_hops = int(rng.integers(hops[0], hops[1] + 1))
    k = 3 * int(rng.integers(0, len(coeffs) // 3 + 1))  # insertion frame, multiple of 3
    s = k * SR // FPS
    neutral = np.zeros(coeffs.shape[1], np.float32) if neutral is None else neutral
    gap = np.repeat(neutral[None], 3 * n_hops, axis=0)
    ramp = min(ramp_frames, len(gap) // 3)  # at least a third of the pause fully closed
    if ramp:
        w = (np.arange(1, ramp + 1) / (ramp + 1))[:, None]
        before = coeffs[k - 1] if k > 0 else neutral
        after = coeffs[k] if k < len(coeffs) else neutral
        gap[:ramp] = (1 - w) * before + w * neutral
        gap[-ramp:] = w[::-1] * after + (1 - w[::-1]) * neutral
    a = np.concatenate([audio[:s], np.zeros(1600 * n_hops, np.float32), audio[s:]])
    c = np.concatenate([coeffs[:k], gap, coeffs[k:]]).astype(np.float32)
    return a, c


def augment(audio: np.ndarray, coeffs: np.ndarray, rng: np.random.Generator,
            config: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Random augmentation chain: timing first (speed, silence), then channel effects."""
    c = config
    if rng.random() < c.p_speed:
        audio, coeffs = speed(audio, coeffs, rng, c.speed)
    if rng.random() < c.p_silence:
        audio, coeffs = insert_silence(audio, coeffs, rng, c.silence_hops)
    if rng.random() < c.p_pitch:
        audio = pitch_shift(audio, rng, c.semitones)
    if c.p_colour > 0 and rng.random() < c.p_colour:  # no draw when off: old recipes unchanged
        audio = colour(audio, rng, c.tilt_db_per_octave, c.ripple_db)
    if rng.random() < c.p_reverb:
        audio = reverb(audio, rng, c.rt60_s)
    if rng.random() < c.p_band:
        audio = band_limit(audio, rng)
    if rng.random() < c.p_noise:
        audio = add_noise(audio, rng, c.snr_db)
    if rng.random() < c.p_gain:
        audio = gain(audio, rng, c.gain_db)
    return np.clip(audio, -1.0, 1.0).astype(np.float32), coeffs
