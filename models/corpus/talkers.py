"""Talkers: a voice plus a talking style, and the animation of phones into ARKit weight curves.

Several talkers share one voice on purpose (DESIGN §4): the same espeak voice and variant, i.e.
the same timbre, so that the style cannot be read off the voice alone; otherwise personalisation
would show nothing that the audio did not already say. Like people who sound alike, each talker
keeps personal speaking habits on top of the shared voice: a pitch offset, a speaking rate and an
intonation range that grows with how much the talker emphasises stressed syllables (expressive
speakers are expressive in both voice and face). Those habits are what lets the server pick a
talking identity from a few seconds of audio (DESIGN §2), as it would tell real people apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from models.corpus.phonemes import Phone, is_vowel
from models.corpus.speech import VoiceSpec
from models.corpus.visemes import MOUTH_CHANNELS, Segment, coarticulate, segments
from models.face.rig import RIG_NAMES

__all__ = ["TalkerStyle", "Talker", "VoiceSpec", "sample_voices", "sample_talkers", "animate",
           "FPS"]

FPS = 30  # motion frame rate (DESIGN §6); frame k depicts t = k / FPS
_INDEX = {n: i for i, n in enumerate(RIG_NAMES)}
_K = len(RIG_NAMES)


@dataclass(frozen=True)
class TalkerStyle:
    """How one person moves while talking. Neutral = all defaults."""

    jaw_ratio: float = 1.0  # >1 opens the jaw more and moves the lips less; <1 the reverse
    rounding_gain: float = 1.0  # scales funnel/pucker (lip rounding and protrusion)
    articulation_gain: float = 1.0  # scales all mouth motion (mumbler < 1 < over-articulator)
    smile_bias: float = 0.0  # constant smile added everywhere, 0..0.3
    frown_bias: float = 0.0  # constant frown, 0..0.2
    asymmetry: float = 0.0  # left/right imbalance, -0.3..0.3 (>0: left side moves more)
    anticipation_s: float = 0.0  # mouth leads the audio by this much (negative = lags)
    emphasis_gain: float = 0.0  # extra articulation on stressed vowels (0.2 = +20 %)
    brow_raise_on_stress: float = 0.0  # browInnerUp/OuterUp pulse height on stressed vowels
    brow_pulse_prob: float = 0.5  # share of stressed vowels that get a brow pulse
    blink_rate_hz: float = 0.0  # mean blinks per second (humans: 0.2..0.4 while talking)
    squint_with_smile: float = 0.0  # cheekSquint/eyeSquint that accompany the smile
    target_jitter: float = 0.0  # relative s.d. of per-segment target size (token variation)


@dataclass(frozen=True)
class Talker:
    name: str  # "T03"
    voice: VoiceSpec
    style: TalkerStyle = field(default_factory=TalkerStyle)

    def to_json(self) -> dict:
        return {"name": self.name, "voice": self.voice.to_json(),
                "style": {k: round(v, 6) for k, v in asdict(self.style).items()}}


ESPEAK_ENGLISH = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc",
                  "en-gb-x-gbclan", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", None)


def sample_voices(n: int, rng: np.random.Generator) -> list[VoiceSpec]:
    """``n`` distinct voices (voice, variant, pitch, rate) drawn from espeak's English voices."""
    out: list[VoiceSpec] = []
    while len(out) < n:
        spec = VoiceSpec(voice=str(rng.choice(ESPEAK_ENGLISH)),
                         variant=ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))],
                         pitch=int(rng.integers(25, 80)), pitch_range=int(rng.integers(30, 80)),
                         rate_wpm=int(rng.integers(145, 200)),
                         word_gap_10ms=int(rng.integers(0, 3)))
        if all((spec.voice, spec.variant) != (o.voice, o.variant) for o in out):
            out.append(spec)
    return out


def sample_style(rng: np.random.Generator) -> TalkerStyle:
    """A random plausible talking style."""
    u = rng.uniform
    return TalkerStyle(
        jaw_ratio=float(np.exp(u(-0.35, 0.35))), rounding_gain=float(np.exp(u(-0.4, 0.4))),
        articulation_gain=float(np.exp(u(-0.3, 0.25))), smile_bias=float(u(0.0, 0.3)) ** 1.5,
        frown_bias=float(u(0.0, 0.15)) if u() < 0.4 else 0.0, asymmetry=float(u(-0.25, 0.25)),
        anticipation_s=float(u(-0.03, 0.06)), emphasis_gain=float(u(0.0, 0.5)),
        brow_raise_on_stress=float(u(0.0, 0.45)), brow_pulse_prob=float(u(0.25, 0.8)),
        blink_rate_hz=float(u(0.15, 0.45)), squint_with_smile=float(u(0.0, 0.6)),
        target_jitter=float(u(0.03, 0.08)))


def sample_talkers(n: int, seed: int, n_voices: int | None = None,
                   voices: list[VoiceSpec] | None = None) -> list[Talker]:
    """``n`` talkers named T00.. over ``n_voices`` voices (default ceil(3/8 * n)), or over the
    given ``voices``; each voice is shared by at least two talkers whenever there are at least
    twice as many talkers as voices. Deterministic in ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A1C]))
    if voices is None:
        voices = sample_voices(n_voices or max(1, math.ceil(n * 3 / 8)), rng)
    owner = [i % len(voices) for i in range(n)]
    rng.shuffle(owner)
    styles = [sample_style(rng) for _ in range(n)]
    habits = _speaking_habits(owner, voices, styles, rng)
    return [Talker(f"T{i:02d}", replace(voices[owner[i]], **habits[i]), styles[i])
            for i in range(n)]


PITCH_SPREAD = 24  # espeak pitch units between the lowest and highest talker of one voice
RATE_SPREAD_WPM = 40  # words per minute between the slowest and fastest talker of one voice


def _speaking_habits(owner: list[int], voices: list[VoiceSpec], styles: list[TalkerStyle],
                     rng: np.random.Generator) -> list[dict]:
    """Per talker (``owner[i]``: its voice's index): pitch and rate spread evenly (in shuffled
    order, with jitter) around the shared voice's own, and an intonation range that follows the
    talker's emphasis."""
    out: list[dict] = [{} for _ in owner]
    for v in sorted(set(owner)):
        members = [i for i, o in enumerate(owner) if o == v]
        k = len(members)
        grid = np.linspace(-0.5, 0.5, k) if k > 1 else np.zeros(1)
        pitch_order, rate_order = rng.permutation(k), rng.permutation(k)
        for j, i in enumerate(members):
            pitch = voices[v].pitch + grid[pitch_order[j]] * PITCH_SPREAD + rng.uniform(-2, 2)
            rate = voices[v].rate_wpm + grid[rate_order[j]] * RATE_SPREAD_WPM \
                + rng.uniform(-4, 4)
            expressive = 30 + 100 * styles[i].emphasis_gain + rng.uniform(-5, 5)
            out[i] = {"pitch": int(np.clip(round(pitch), 5, 95)),
                      "rate_wpm": int(np.clip(round(rate), 120, 230)),
                      "pitch_range": int(np.clip(round(expressive), 20, 90))}
    return out


# --- animation ------------------------------------------------------------------------------

def _mask(*prefixes: str) -> np.ndarray:
    return np.array([n.startswith(prefixes) for n in RIG_NAMES])


_ROUNDING = _mask("mouthFunnel", "mouthPucker")
_LIPS = _mask("mouthLowerDown", "mouthUpperUp", "mouthStretch", "mouthRoll", "mouthShrug",
              "mouthPress", "mouthSmile")
_MOUTH = np.array([n in MOUTH_CHANNELS for n in RIG_NAMES])
_LEFT = np.array([n.endswith("Left") for n in RIG_NAMES])
_RIGHT = np.array([n.endswith("Right") for n in RIG_NAMES])


def _style_target(seg: Segment, style: TalkerStyle) -> Segment:
    t = seg.target.copy()
    jaw = _INDEX["jawOpen"]
    t[jaw] *= style.jaw_ratio
    t[_INDEX["mouthClose"]] *= style.jaw_ratio  # keeps p/b/m closure consistent with the jaw
    t[_LIPS] *= max(0.0, 2.0 - style.jaw_ratio)
    t[_ROUNDING] *= style.rounding_gain
    t *= style.articulation_gain
    if seg.vowel and seg.stressed:
        t *= 1.0 + style.emphasis_gain
    return replace(seg, target=t)


def _blinks(times_s: np.ndarray, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """(T,) eyelid closure: Poisson blinks, 100-200 ms, fast close and slower open."""
    out = np.zeros_like(times_s)
    if rate_hz <= 0 or len(times_s) == 0:
        return out
    t = float(rng.exponential(1.0 / rate_hz)) - 0.5  # may start mid-blink-interval
    end = float(times_s[-1])
    while t < end:
        dur = float(rng.uniform(0.1, 0.2))
        x = (times_s - t) / dur  # 0..1 over the blink
        close = np.clip(x / 0.4, 0, 1)  # closing: 40 % of the blink
        opening = np.clip((1 - x) / 0.6, 0, 1)
        shape = np.sin(0.5 * np.pi * np.minimum(close, opening)) ** 2
        out = np.maximum(out, np.where((x >= 0) & (x <= 1), shape, 0.0))
        t += dur + float(rng.exponential(1.0 / rate_hz))
    return out


def _brows(phones: list[Phone], times_s: np.ndarray, style: TalkerStyle,
           rng: np.random.Generator) -> np.ndarray:
    """(T,) brow raise: Gaussian pulses (sigma 0.12 s) on some stressed vowels."""
    out = np.zeros_like(times_s)
    if style.brow_raise_on_stress <= 0:
        return out
    for p in phones:
        if p.stressed and is_vowel(p.symbol) and rng.uniform() < style.brow_pulse_prob:
            height = style.brow_raise_on_stress * rng.uniform(0.5, 1.0)
            out = np.maximum(out, height * np.exp(-0.5 * ((times_s - p.centre_s) / 0.12) ** 2))
    return out


def animate(phones: list[Phone], n_frames: int, style: TalkerStyle, rng: np.random.Generator,
            fps: float = FPS) -> np.ndarray:
    """(T, K) float32 ARKit weights (RIG_NAMES order) for phones; frame k depicts t = k / fps.

    Draws from ``rng`` in a fixed order (target jitter, blinks, brows), so a seeded generator
    gives identical curves. The mouth channels are exactly ``coarticulate`` for a neutral
    style; style moves the targets, shifts time by ``anticipation_s`` and adds biases.
    """
    times = np.arange(n_frames) / fps  # (T,)
    segs = [_style_target(s, style) for s in segments(phones)]
    jitter = style.target_jitter * rng.standard_normal(len(segs))  # token-to-token variation
    segs = [replace(s, target=s.target * (1.0 + j) if s.viseme != "sil" else s.target)
            for s, j in zip(segs, jitter, strict=True)]
    w = coarticulate(segs, times + style.anticipation_s)  # (T, K)
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        w[:, _INDEX["mouthSmile" + side]] += style.smile_bias
        w[:, _INDEX["mouthFrown" + side]] += style.frown_bias
        w[:, _INDEX["cheekSquint" + side]] += style.squint_with_smile * style.smile_bias
        w[:, _INDEX["eyeSquint" + side]] += 0.5 * style.squint_with_smile * style.smile_bias
        side_mask = (_LEFT if sign > 0 else _RIGHT) & _MOUTH
        w[:, side_mask] *= 1.0 + sign * style.asymmetry
    blink = _blinks(times, style.blink_rate_hz, rng)
    w[:, _INDEX["eyeBlinkLeft"]] = blink
    w[:, _INDEX["eyeBlinkRight"]] = blink
    brow = _brows(phones, times, style, rng)
    w[:, _INDEX["browInnerUp"]] += brow
    w[:, _INDEX["browOuterUpLeft"]] += 0.6 * brow
    w[:, _INDEX["browOuterUpRight"]] += 0.6 * brow
    return np.clip(w, 0.0, 1.0).astype(np.float32)
