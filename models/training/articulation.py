"""Articulation metrics: what people notice in lips, measured on vertices against the ground truth.

LVE says how far the lips are from the truth on average; it cannot tell "mumbling" (lips damped
toward an average) from lips that move fully but late. These metrics can. They work on the *lip
gap*: how far the upper lip centre is above the lower lip centre (the rig's ``mouth_open`` pair;
faces are y-up), in metres per frame, 0 when the lips touch or press into each other (pressed lips
put the upper centre slightly *below* the lower one); frame k depicts t = k / fps.

- bilabial closure rate: of the p/b/m phones (phone times from the corpus), the share where the
  lips touch (gap <= ``CONTACT_M``, 1 mm) in some frame within the phone +- 1 frame;
- vowel opening: the largest gap within each vowel, mean over vowels (pred and truth);
- p90 gap: per utterance the 90th percentile of the gap, median over utterances; the ratio
  predicted / truth is the amplitude headline (1 = full opening, 0.5 = half);
- lag: the shift of the predicted gap signal against the truth that maximises their
  cross-correlation (mean removed, summed over utterances, parabolic sub-frame peak), in ms;
  positive = the prediction is late.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.corpus.phonemes import Phone, is_vowel, visemes_of
from models.net.losses import CONTACT_M  # the lip-gap loss's contact, so both mean the same

MAX_LAG_FRAMES = 10  # cross-correlation search range, +-333 ms at 30 fps


@dataclass(frozen=True)
class LipTrack:
    """One utterance's lip gap, predicted and true, with its phones."""

    pred: np.ndarray  # (T,) metres
    true: np.ndarray  # (T,) metres
    phones: Sequence[Phone]


def lip_gap(vertices: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """(T, V, 3) -> (T,) vertical opening between the lip centres (upper y - lower y), metres,
    floored at 0 (pressed lips)."""
    v = np.asarray(vertices, np.float64)
    return np.maximum(v[:, pair[0], 1] - v[:, pair[1], 1], 0.0)


def _span(phone: Phone, fps: float, n: int, pad: int) -> slice:
    """Frames whose time lies in the phone, widened by ``pad`` frames on both sides."""
    first = int(np.ceil(phone.start_s * fps - 1e-9)) - pad
    last = int(np.floor(phone.end_s * fps + 1e-9)) + pad
    return slice(max(0, first), min(n, last + 1))


def bilabial_closures(gap: np.ndarray, phones: Sequence[Phone], fps: float) -> tuple[int, int]:
    """(closed, total) p/b/m phones: lips within ``CONTACT_M`` somewhere in the phone +- 1 frame."""
    closed = total = 0
    for p in phones:
        if visemes_of(p.symbol)[0] != "PP":
            continue
        span = gap[_span(p, fps, len(gap), 1)]
        if len(span):
            total += 1
            closed += bool(span.min() <= CONTACT_M)
    return closed, total


def vowel_openings(gap: np.ndarray, phones: Sequence[Phone], fps: float) -> list[float]:
    """The largest gap within each vowel phone (no padding), metres."""
    out = []
    for p in phones:
        if is_vowel(p.symbol):
            span = gap[_span(p, fps, len(gap), 0)]
            if len(span):
                out.append(float(span.max()))
    return out


def lag_ms(tracks: Sequence[LipTrack], fps: float, max_lag: int = MAX_LAG_FRAMES) -> float | None:
    """Lag of the predicted gap behind the true one (ms, + = late), from the summed normalised
    cross-correlation over utterances; None when nothing moves."""
    lags = np.arange(-max_lag, max_lag + 1)
    total = np.zeros(len(lags))
    for t in tracks:
        a, b = t.pred - t.pred.mean(), t.true - t.true.mean()
        norm = np.sqrt((a * a).sum() * (b * b).sum())
        if norm <= 0 or len(a) <= max_lag:
            continue
        for i, lag in enumerate(lags):  # pred[k + lag] against true[k]
            if lag >= 0:
                total[i] += (a[lag:] * b[:len(b) - lag]).sum() / norm
            else:
                total[i] += (a[:lag] * b[-lag:]).sum() / norm
    if not total.any():
        return None
    i = int(np.argmax(total))
    shift = 0.0
    if 0 < i < len(lags) - 1:  # parabola through the peak and its neighbours
        y0, y1, y2 = total[i - 1], total[i], total[i + 1]
        denom = y0 - 2 * y1 + y2
        shift = 0.5 * (y0 - y2) / denom if denom < 0 else 0.0
    return float((lags[i] + shift) * 1000.0 / fps)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def articulation(tracks: Sequence[LipTrack], fps: float) -> dict[str, Any]:
    """The articulation block of one row (model x split x identity): module docstring."""
    if not tracks:
        raise ValueError("articulation needs at least one utterance")
    out: dict[str, Any] = {"n_sequences": len(tracks), "contact_m": CONTACT_M}
    for side in ("pred", "true"):
        gaps = [getattr(t, side) for t in tracks]
        closed = total = 0
        openings: list[float] = []
        for g, t in zip(gaps, tracks, strict=True):
            c, n = bilabial_closures(g, t.phones, fps)
            closed, total = closed + c, total + n
            openings += vowel_openings(g, t.phones, fps)
        out[side] = {
            "bilabial_closure": closed / total if total else None,
            "bilabials": total,
            "vowel_opening_m": float(np.mean(openings)) if openings else None,
            "p90_gap_m": float(np.median([np.percentile(g, 90) for g in gaps])),
        }
    p, t = out["pred"], out["true"]
    out["p90_gap_ratio"] = _ratio(p["p90_gap_m"], t["p90_gap_m"])
    out["vowel_opening_ratio"] = _ratio(p["vowel_opening_m"], t["vowel_opening_m"])
    out["lag_ms"] = lag_ms(tracks, fps)
    return out
