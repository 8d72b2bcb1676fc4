"""Visemes -> ARKit weight curves, with Cohen-Massaro coarticulation.

Each phone becomes one or two *segments* (diphthongs glide between two visemes). A segment has a
target pose (ARKit weights) and a dominance over time, a negative exponential around its centre:

    D_s(t) = alpha_s * exp(-|t - c_s| / tau_s)   (tau_s differs before and after the centre)

and every mouth channel is the dominance-weighted mean of the targets (Cohen & Massaro 1993):

    w_k(t) = sum_s D_s,k(t) * target_s,k / sum_s D_s,k(t)

Dominance is per viseme and per channel group (jaw / lips): tongue consonants (t, k, n, ...) barely
dominate, so the jaw and lips take their shape from the neighbouring vowels; bilabials (p, b, m)
and labiodentals (f, v) dominate strongly and narrowly, so the lips close (or touch the teeth)
even in fast speech. A final *lip seal* step makes the closure exact: where bilabial dominance
holds the share ``s`` of the total, ``mouthClose`` moves a share ``s`` of the way to ``jawOpen``
(ARKit's convention for closed lips with an open jaw) and the lip-parting channels shrink by
``1 - s``. Silence is a segment too (mouth at rest, lips together), cut into short chunks so that
it holds through long pauses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.corpus.phonemes import Phone, is_pause, is_vowel, visemes_of
from models.face.rig import RIG_NAMES

VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR",
                            "aa", "E", "I", "O", "U")
_K = len(RIG_NAMES)
_INDEX = {n: i for i, n in enumerate(RIG_NAMES)}


def _lr(name: str, value: float) -> dict[str, float]:
    """Both sides of a paired ARKit channel: _lr("mouthSmile", .2) -> {mouthSmileLeft: .2, ...}."""
    return {name + "Left": value, name + "Right": value}


# Target poses (ARKit weights in [0, 1]) for a neutral talker at full (stressed) articulation.
VISEME_TARGETS: dict[str, dict[str, float]] = {
    "sil": {},
    "PP": {"jawOpen": 0.05, "mouthClose": 0.05, **_lr("mouthPress", 0.35),
           "mouthRollLower": 0.12, "mouthRollUpper": 0.08},
    "FF": {"jawOpen": 0.08, "mouthRollLower": 0.5, **_lr("mouthUpperUp", 0.18),
           **_lr("mouthPress", 0.1), "mouthShrugUpper": 0.1},
    "TH": {"jawOpen": 0.14, **_lr("mouthLowerDown", 0.12), **_lr("mouthStretch", 0.08)},
    "DD": {"jawOpen": 0.14, **_lr("mouthLowerDown", 0.1), **_lr("mouthStretch", 0.1)},
    "kk": {"jawOpen": 0.16, **_lr("mouthLowerDown", 0.08), **_lr("mouthStretch", 0.06)},
    "CH": {"jawOpen": 0.1, "mouthFunnel": 0.45, "mouthPucker": 0.2, **_lr("mouthUpperUp", 0.2),
           **_lr("mouthLowerDown", 0.2), "mouthShrugUpper": 0.15},
    "SS": {"jawOpen": 0.06, **_lr("mouthStretch", 0.3), **_lr("mouthSmile", 0.08),
           **_lr("mouthUpperUp", 0.1), **_lr("mouthLowerDown", 0.15)},
    "nn": {"jawOpen": 0.12, **_lr("mouthStretch", 0.08), **_lr("mouthLowerDown", 0.06)},
    "RR": {"jawOpen": 0.12, "mouthFunnel": 0.3, "mouthPucker": 0.3, **_lr("mouthUpperUp", 0.08)},
    "aa": {"jawOpen": 0.6, **_lr("mouthLowerDown", 0.3), **_lr("mouthUpperUp", 0.1),
           **_lr("mouthStretch", 0.1)},
    "E": {"jawOpen": 0.36, **_lr("mouthStretch", 0.28), **_lr("mouthSmile", 0.08),
          **_lr("mouthLowerDown", 0.2), **_lr("mouthUpperUp", 0.08)},
    "I": {"jawOpen": 0.2, **_lr("mouthStretch", 0.35), **_lr("mouthSmile", 0.22),
          **_lr("mouthUpperUp", 0.12), **_lr("mouthLowerDown", 0.1)},
    "O": {"jawOpen": 0.42, "mouthFunnel": 0.55, "mouthPucker": 0.2,
          **_lr("mouthLowerDown", 0.12)},
    "U": {"jawOpen": 0.14, "mouthPucker": 0.7, "mouthFunnel": 0.35},
}


@dataclass(frozen=True)
class Dominance:
    """Cohen-Massaro dominance of one viseme: strength per channel group, decay times."""

    alpha_jaw: float  # strength on jawOpen / mouthClose
    alpha_lips: float  # strength on the other mouth channels
    tau_before_s: float  # decay time before the centre (anticipatory coarticulation)
    tau_after_s: float  # decay time after the centre (carry-over coarticulation)


DOMINANCE: dict[str, Dominance] = {
    "sil": Dominance(3.0, 3.0, 0.04, 0.04),
    "PP": Dominance(40.0, 40.0, 0.022, 0.022),  # closure must win: strong and narrow
    "FF": Dominance(6.0, 20.0, 0.025, 0.025),  # lower lip to the teeth
    "TH": Dominance(0.5, 0.4, 0.04, 0.04),
    "DD": Dominance(0.3, 0.3, 0.035, 0.035),  # tongue sounds: the face follows the vowels
    "kk": Dominance(0.3, 0.3, 0.035, 0.035),
    "nn": Dominance(0.3, 0.3, 0.035, 0.035),
    "CH": Dominance(1.2, 3.0, 0.04, 0.04),  # lip protrusion is visible and early
    "SS": Dominance(1.2, 1.5, 0.035, 0.035),  # teeth nearly together
    "RR": Dominance(0.8, 1.5, 0.045, 0.045),
    "aa": Dominance(1.0, 1.0, 0.06, 0.06),
    "E": Dominance(1.0, 1.0, 0.06, 0.06),
    "I": Dominance(1.0, 1.0, 0.06, 0.06),
    "O": Dominance(1.0, 1.3, 0.06, 0.07),
    "U": Dominance(1.0, 1.6, 0.07, 0.07),  # rounding spreads to neighbours
}

MOUTH_CHANNELS: tuple[str, ...] = tuple(n for n in RIG_NAMES if n.startswith(("jaw", "mouth")))
_JAW = np.array([n in ("jawOpen", "mouthClose") for n in RIG_NAMES])
_MOUTH = np.array([n in MOUTH_CHANNELS for n in RIG_NAMES])
_PARTING = np.array([n.startswith(("mouthLowerDown", "mouthUpperUp", "mouthFunnel"))
                     for n in RIG_NAMES])  # channels that part the lips
DIPHTHONG_SPLIT = 0.55  # a glide's first target holds for this share of the phone
UNSTRESSED_GAIN = 0.8  # vowels without primary stress articulate less
SILENCE_CHUNK_S = 0.06  # long pauses become several silence segments this long


def target_vector(viseme: str) -> np.ndarray:
    """(K,) float64 ARKit target of a viseme, in RIG_NAMES order."""
    v = np.zeros(_K)
    for name, w in VISEME_TARGETS[viseme].items():
        v[_INDEX[name]] = w
    return v


@dataclass(frozen=True)
class Segment:
    """One viseme target in time: what the coarticulation blend consumes."""

    viseme: str
    start_s: float
    end_s: float
    target: np.ndarray  # (K,) ARKit weights
    stressed: bool = False
    vowel: bool = False

    @property
    def centre_s(self) -> float:
        return 0.5 * (self.start_s + self.end_s)


def segments(phones: list[Phone]) -> list[Segment]:
    """Phones -> viseme segments: glides split in two, pauses chunked, unstressed vowels reduced."""
    out: list[Segment] = []
    for p in phones:
        if is_pause(p.symbol):
            n = max(1, int(np.ceil(p.duration_s / SILENCE_CHUNK_S)))
            edges = np.linspace(p.start_s, p.end_s, n + 1)
            out += [Segment("sil", a, b, target_vector("sil"))
                    for a, b in zip(edges[:-1], edges[1:], strict=True)]
            continue
        vis = visemes_of(p.symbol)
        vowel = is_vowel(p.symbol)
        gain = 1.0 if (p.stressed or not vowel) else UNSTRESSED_GAIN
        cuts = [p.start_s, p.end_s] if len(vis) == 1 else \
            [p.start_s, p.start_s + DIPHTHONG_SPLIT * p.duration_s, p.end_s]
        for v, a, b in zip(vis, cuts, cuts[1:], strict=False):
            t = target_vector(v)
            if v in ("aa", "E", "I", "O", "U"):
                t = t * gain
            out.append(Segment(v, a, b, t, p.stressed, vowel))
    return out


def dominance(segs: list[Segment], times_s: np.ndarray) -> np.ndarray:
    """(T, S, K) dominance of each segment on each channel at each time (0 off the mouth)."""
    centres = np.array([s.centre_s for s in segs])  # (S,)
    dom = [DOMINANCE[s.viseme] for s in segs]
    tau_b = np.array([d.tau_before_s for d in dom])
    tau_a = np.array([d.tau_after_s for d in dom])
    dt = times_s[:, None] - centres[None, :]  # (T, S); < 0 before the centre
    base = np.exp(-np.abs(dt) / np.where(dt < 0, tau_b, tau_a))  # (T, S)
    alpha = np.array([np.where(_JAW, d.alpha_jaw, d.alpha_lips) for d in dom])  # (S, K)
    return base[:, :, None] * alpha[None, :, :] * _MOUTH[None, None, :]


def coarticulate(segs: list[Segment], times_s: np.ndarray) -> np.ndarray:
    """(T, K) mouth weights at ``times_s``: dominance-weighted targets plus the lip seal."""
    if not segs:
        return np.zeros((len(times_s), _K))
    d = dominance(segs, times_s)  # (T, S, K)
    targets = np.stack([s.target for s in segs])  # (S, K)
    total = d.sum(1)  # (T, K)
    w = (d * targets[None]).sum(1) / np.maximum(total, 1e-12)  # (T, K)
    bilabial = np.array([s.viseme == "PP" for s in segs])
    jaw = _INDEX["jawOpen"]
    seal = d[:, bilabial, jaw].sum(1) / np.maximum(total[:, jaw], 1e-12)  # (T,) in [0, 1]
    close = _INDEX["mouthClose"]
    w[:, close] += seal * np.maximum(w[:, jaw] - w[:, close], 0.0)
    w[:, _PARTING] *= (1.0 - seal)[:, None]
    return w
