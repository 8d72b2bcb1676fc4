"""Evaluation metrics on vertices, exactly as DESIGN §2 defines them (the reference-code versions).

All take vertex arrays (T, V, 3) per sequence (a list of them for corpus-level numbers) and boolean
vertex masks; every result dict names the masks it used, because LVE and FDD mean nothing without.

- LVE: for each frame, the max over lip vertices of the squared L2 error; mean over *all frames*
  of all sequences (frames pooled, as the reference code averages per frame).
- FDD: per sequence, dyn(GT) - dyn(pred), where dyn = mean over upper-face vertices of the temporal
  std (population, ddof=0) of the squared displacement |v_t - template|^2; signed; mean over
  sequences.
- MVE: mean over frames and vertices of the L2 error (not squared), metres if the mesh is.
- diversity: mean over pairs of samples (same audio, other seeds/identities) of the mean per-vertex
  L2 distance.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

Seqs = list[np.ndarray] | np.ndarray


def _as_list(x: Seqs) -> list[np.ndarray]:
    if isinstance(x, np.ndarray) and x.ndim == 3:
        return [x]
    return [np.asarray(s, dtype=np.float64) for s in x]


def _check(pred: list[np.ndarray], gt: list[np.ndarray]) -> None:
    if len(pred) != len(gt) or not pred:
        raise ValueError(f"need the same non-zero number of sequences, got {len(pred)}, {len(gt)}")
    for p, g in zip(pred, gt, strict=False):
        if p.shape != g.shape:
            raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")


def lip_max_errors(pred: np.ndarray, gt: np.ndarray, lip_mask: np.ndarray) -> np.ndarray:
    """(T, V, 3) x2 -> (T,) max over lip vertices of the squared L2 error of each frame."""
    sq = np.square(np.asarray(pred, np.float64) - gt).sum(-1)  # (T, V)
    return sq[:, lip_mask].max(axis=1)


def lve(pred: Seqs, gt: Seqs, lip_mask: np.ndarray) -> float:
    p, g = _as_list(pred), _as_list(gt)
    _check(p, g)
    return float(np.concatenate([lip_max_errors(a, b, lip_mask)
                                 for a, b in zip(p, g, strict=True)]).mean())


def upper_face_dynamics(vertices: np.ndarray, template: np.ndarray,
                        upper_mask: np.ndarray) -> float:
    """Mean over upper-face vertices of the temporal std of |v_t - template|^2."""
    disp = np.square(np.asarray(vertices, np.float64) - template).sum(-1)  # (T, V)
    return float(disp[:, upper_mask].std(axis=0).mean())


def fdd(pred: Seqs, gt: Seqs, template: np.ndarray | list[np.ndarray],
        upper_mask: np.ndarray) -> float:
    """Signed mean over sequences of dyn(GT) - dyn(pred); templates: one (V, 3) or one per seq."""
    p, g = _as_list(pred), _as_list(gt)
    _check(p, g)
    temps = template if isinstance(template, list) else [template] * len(p)
    return float(np.mean([upper_face_dynamics(b, tp, upper_mask)
                          - upper_face_dynamics(a, tp, upper_mask)
                          for a, b, tp in zip(p, g, temps, strict=False)]))


def mve(pred: Seqs, gt: Seqs) -> float:
    p, g = _as_list(pred), _as_list(gt)
    _check(p, g)
    return float(np.concatenate([np.linalg.norm(a - b, axis=-1).reshape(-1)
                                 for a, b in zip(p, g, strict=False)]).mean())


def diversity(samples: Seqs) -> float:
    """Samples (N, T, V, 3) of one audio -> mean pairwise mean per-vertex L2 distance."""
    s = [np.asarray(x, np.float64) for x in samples]
    if len(s) < 2:
        raise ValueError("diversity needs at least two samples")
    return float(np.mean([np.linalg.norm(a - b, axis=-1).mean() for a, b in combinations(s, 2)]))


def evaluate(pred: Seqs, gt: Seqs, template: np.ndarray | list[np.ndarray],
             masks: dict[str, np.ndarray], mask_source: str) -> dict[str, Any]:
    """LVE, FDD, MVE of a set of sequences, with the masks named ("<source>:lip (N vertices)")."""
    p, g = _as_list(pred), _as_list(gt)
    lip, upper = np.asarray(masks["lip"], bool), np.asarray(masks["upper_face"], bool)
    return {"lve": lve(p, g, lip), "fdd": fdd(p, g, template, upper), "mve": mve(p, g),
            "n_sequences": len(p), "n_frames": int(sum(len(x) for x in p)),
            "masks": {"lip": f"{mask_source}:lip ({int(lip.sum())} vertices)",
                      "upper_face": f"{mask_source}:upper_face ({int(upper.sum())} vertices)"}}
