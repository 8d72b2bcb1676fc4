"""Losses on vertices, computed through the linear motion basis (DESIGN §5).

vertices = template + c @ B with B (K, V*3). For a coefficient error d (K,), the summed squared
vertex error over a vertex set S is d^T (B_S B_S^T) d: a K x K Gram matrix replaces the (V, 3)
decode, so losses cost O(K^2) per frame instead of O(K V). Errors are *mean squared distance per
vertex*, divided by ``scale`` (the mean per-coefficient vertex energy), so that values are unit-free
and of order 1 whatever the basis units (metres, millimetres, PCA).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class VertexGram(nn.Module):
    """Gram matrices of the basis over all vertices and over the lip vertices."""

    def __init__(self, basis: torch.Tensor, lip_mask: torch.Tensor):
        super().__init__()
        K, V, _ = basis.shape  # (K, V, 3)
        flat = basis.reshape(K, V * 3).double()
        lip = basis[:, lip_mask].reshape(K, -1).double()
        scale = (flat.square().sum() / (K * V)).clamp(min=1e-30)
        self.register_buffer("full", (flat @ flat.T / V / scale).float(), persistent=False)
        n_lip = max(int(lip_mask.sum()), 1)
        self.register_buffer("lip", (lip @ lip.T / n_lip / scale).float(), persistent=False)

    @staticmethod
    def quad(d: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        """(..., K) -> (...,) d^T G d."""
        return ((d @ gram) * d).sum(-1)


class LipGap(nn.Module):
    """The vertical lip opening as a linear function of the coefficients: the upper minus the lower
    lip centre's height, gap(c) = rest + c . direction (metres, like the basis)."""

    def __init__(self, basis: torch.Tensor, template: torch.Tensor, pair: tuple[int, int]):
        super().__init__()
        upper, lower = pair
        self.register_buffer("direction", (basis[:, upper, 1] - basis[:, lower, 1]).float(),
                             persistent=False)  # (K,)
        self.rest = float(template[upper, 1] - template[lower, 1])

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        """(..., K) raw coefficients -> (...) lip gap, metres (not floored: pressed lips < 0)."""
        return self.rest + coeffs @ self.direction


CONTACT_M = 1e-3  # lips "touch" at or below 1 mm between the lip centre vertices (also the
#                   articulation metrics' closure, models.training.articulation)


def lip_gap_loss(pred: torch.Tensor, target: torch.Tensor, gap: LipGap,
                 mask: torch.Tensor | None, closed_boost: float) -> torch.Tensor:
    """Squared lip-gap error in mm^2, frames where the truth's lips touch weighted
    1 + ``closed_boost``: a closure missed by 2 mm is a small vertex MSE but a visible fault."""
    g_pred, g_true = gap(pred), gap(target)
    weight = 1.0 + closed_boost * (g_true <= CONTACT_M).to(pred.dtype)
    return masked_mean(weight * ((g_pred - g_true) / 1e-3).square(), mask)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def motion_losses(pred: torch.Tensor, target: torch.Tensor, gram: VertexGram,
                  mask: torch.Tensor | None = None, gap: LipGap | None = None,
                  closed_boost: float = 0.0) -> dict[str, torch.Tensor]:
    """pred, target (B, T, K) coefficients; mask (B, T) valid frames ->
    {"rec": vertex MSE, "lip": lip-vertex MSE, "vel": MSE of frame-to-frame vertex velocity,
    and with ``gap`` "gap": ``lip_gap_loss``}."""
    d = pred - target  # (B, T, K)
    dv = d[:, 1:] - d[:, :-1]  # (B, T-1, K)
    mv = None if mask is None else mask[:, 1:] & mask[:, :-1]
    terms = {"rec": masked_mean(gram.quad(d, gram.full), mask),
             "lip": masked_mean(gram.quad(d, gram.lip), mask),
             "vel": masked_mean(gram.quad(dv, gram.full), mv)}
    if gap is not None:
        terms["gap"] = lip_gap_loss(pred, target, gap, mask, closed_boost)
    return terms
