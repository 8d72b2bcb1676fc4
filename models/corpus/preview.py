"""A picture of one corpus utterance: audio and phones on top, weights and mouth opening below.

Used to check by eye that the mouth moves with the speech (it opens on vowels, closes on p/b/m and
in pauses). Renders with matplotlib's Agg backend, so it works without a display.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.audio import read_wav  # noqa: E402
from models.corpus.phonemes import is_pause  # noqa: E402
from models.face.rig import RIG_NAMES  # noqa: E402

CURVES = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft",
          "mouthSmileRight", "eyeBlinkLeft", "browInnerUp")


def mouth_opening_mm(vertices: np.ndarray, mouth_open: tuple[int, int]) -> np.ndarray:
    """(T, V*3) or (T, V, 3) vertices -> (T,) upper-to-lower lip centre distance in millimetres."""
    v = np.asarray(vertices).reshape(len(vertices), -1, 3)
    return 1000.0 * np.linalg.norm(v[:, mouth_open[0]] - v[:, mouth_open[1]], axis=-1)


def render_preview(corpus_dir: str | Path, utterance_id: str, out_png: str | Path) -> Path:
    """Draw utterance ``utterance_id`` of the corpus at ``corpus_dir`` into ``out_png``."""
    root = Path(corpus_dir)
    manifest = json.loads((root / "corpus.json").read_text())
    fps = float(manifest["fps"])
    audio, rate = read_wav(root / "wav" / f"{utterance_id}.wav")
    phones = json.loads((root / "phonemes" / f"{utterance_id}.json").read_text())
    weights = np.load(root / "weights_npy" / f"{utterance_id}.npy")  # (T, 51)
    vertices = np.load(root / "vertices_npy" / f"{utterance_id}.npy")  # (T, V*3)
    frames_t = np.arange(len(weights)) / fps
    opening = mouth_opening_mm(vertices, tuple(manifest["rig"]["mouth_open"]))

    fig, (ax_a, ax_w, ax_m) = plt.subplots(3, 1, figsize=(14, 8), sharex=True,
                                           gridspec_kw={"height_ratios": [1.2, 2, 1]})
    ax_a.plot(np.arange(len(audio)) / rate, audio, lw=0.4, color="0.3")
    for p in phones["phonemes"]:
        if is_pause(p["symbol"]):
            ax_a.axvspan(p["start_s"], p["end_s"], color="0.9", lw=0)
            continue
        ax_a.axvline(p["start_s"], color="tab:blue", lw=0.4, alpha=0.5)
        label = p["symbol"] + ("'" if p["stressed"] else "")
        ax_a.text(0.5 * (p["start_s"] + p["end_s"]), 1.02, label, ha="center", va="bottom",
                  fontsize=7, transform=ax_a.get_xaxis_transform(), rotation=90)
    ax_a.set_ylabel("audio")
    ax_a.set_title(f"{utterance_id}: {phones['text']}", pad=28, fontsize=10)
    for name in CURVES:
        ax_w.plot(frames_t, weights[:, RIG_NAMES.index(name)], lw=1.2, label=name)
    ax_w.set_ylabel("ARKit weight")
    ax_w.set_ylim(-0.02, 1.02)
    ax_w.legend(ncol=4, fontsize=8, loc="upper right")
    ax_m.plot(frames_t, opening, color="k", lw=1.2)
    ax_m.set_ylabel("lip gap (mm)")
    ax_m.set_xlabel(f"time (s); frame k at k/{fps:g} s; rig {manifest['rig']['name']}")
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def jaw_peak_errors(phones: list, jaw_open: np.ndarray, fps: float, anticipation_s: float = 0.0,
                    min_vowel_s: float = 0.08) -> np.ndarray:
    """Frames between each open monophthong's centre (shifted earlier by the talker's
    anticipation) and the jawOpen peak near it (searched over the vowel's span +- 1 frame).

    Only open vowels (visemes aa, E, O) count: close vowels (i, u) open the jaw no more than the
    consonants around them, so they have no jaw peak to find. Diphthongs (whose peak sits in
    their more open half) and vowels shorter than ``min_vowel_s`` are skipped. Signed frames."""
    from models.corpus.phonemes import visemes_of

    out = []
    for p in phones:
        sym, a, b = (p["symbol"], p["start_s"], p["end_s"]) if isinstance(p, dict) else \
            (p.symbol, p.start_s, p.end_s)
        if visemes_of(sym) not in (('aa',), ('E',), ('O',)) or b - a < min_vowel_s:
            continue
        lo = max(0, int(np.floor((a - anticipation_s) * fps)) - 1)
        hi = min(len(jaw_open), int(np.ceil((b - anticipation_s) * fps)) + 2)
        if hi - lo < 2:
            continue
        peak = lo + int(np.argmax(jaw_open[lo:hi]))
        out.append(peak - (0.5 * (a + b) - anticipation_s) * fps)
    return np.asarray(out)
