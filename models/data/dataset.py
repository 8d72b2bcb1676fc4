"""Talking-face datasets: our generated corpus and real VOCASET/BIWI-style folders, one API.

Motion is represented in a linear basis of the template (DESIGN §5): vertices = template + B . c.
Our corpus uses the rig's 51 ARKit deltas (c = blendshape weights); a vertex-only folder gets a
PCA basis fitted on its training offsets.

Folder conventions read by ``TalkingFaceDataset.load``:
- ``corpus.json`` present (``models.corpus.generator``): talkers, splits and the rig come from
  it; the basis is ``basis.npz`` if present, else the rig named in the manifest
  (``models.face.load.load_rig``).
- otherwise (VOCASET/BIWI as prepared for FaceFormer): ``wav/*.wav`` (any rate, resampled to
  16 kHz), ``vertices_npy/*.npy`` (T, V*3) at the source frame rate (VOCASET 60 fps, BIWI 25 fps;
  inferred from the audio length unless given) resampled to ``fps`` by linear interpolation,
  ``templates.pkl`` keyed by subject. The subject is the file name minus its trailing sentence
  number (``FaceTalk_170725_00137_TA_sentence01`` -> ``FaceTalk_170725_00137_TA``; ``F1_e03``
  -> ``F1``). Splits follow FaceFormer's BIWI convention by sentence number: 1-32 train,
  33-36 val, 37 and above test; every subject is a training talker.
Masks (``lip``, ``upper_face``) come from ``masks.npz`` in the folder or the ``masks`` argument;
triangles from ``faces.npy`` (F, 3) when the folder has it (the viewer needs them to draw the mesh).
Every utterance keeps its subject's template: coefficients are offsets from it (``coeffs``).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.audio import pcm16_to_float, read_wav, resample
from models.corpus.phonemes import Phone
from models.errors import DataError
from models.face.basis import MotionBasis

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
SENTENCE_SPLITS = ((1, 32, "train"), (33, 36, "val"), (37, 10**9, "test"))  # FaceFormer BIWI
_NAME = re.compile(r"^(?P<subject>.+?)_(?P<prefix>[A-Za-z]*?)(?P<number>\d+)$")
_COMMON_FPS = (24.0, 25.0, 30.0, 50.0, 60.0)




@dataclass(frozen=True)
class Utterance:
    """One sequence. Arrays may be read-only memory maps: copy before writing."""

    id: str
    talker: str
    split: str
    pcm: np.ndarray  # (N,) int16 or float32 at 16 kHz; see ``audio``
    vertices: np.ndarray  # (T, V, 3) float32 at ``fps``; frame k depicts t = k / fps
    template: np.ndarray  # (V, 3) this talker's neutral face
    weights: np.ndarray | None = None  # (T, K) ARKit weights when the corpus has them
    fps: float = 30.0
    phones: tuple[Phone, ...] = ()  # timed phones when the corpus has them (articulation metrics)

    @property
    def audio(self) -> np.ndarray:
        """(N,) float32 in [-1, 1] at 16 kHz."""
        if self.pcm.dtype == np.int16:
            return pcm16_to_float(self.pcm)
        return np.asarray(self.pcm, np.float32)

    @property
    def frames(self) -> int:
        return int(self.vertices.shape[0])


class TalkingFaceDataset:
    """Utterances with splits, the training talkers and the motion basis."""

    def __init__(self, utterances: list[Utterance], talkers: list[str], basis: MotionBasis,
                 fps: float, lip_pair: tuple[int, int] | None = None) -> None:
        self._utts = utterances
        self.talkers = sorted(talkers)  # training talker names; index = identity index
        self.basis = basis
        self.fps = fps
        self.lip_pair = lip_pair  # (upper, lower) lip centre vertices, when the rig names them

    def utterances(self, split: str | None = None) -> list[Utterance]:
        return [u for u in self._utts if split is None or u.split == split]

    def templates(self) -> dict[str, np.ndarray]:
        """Each talker's neutral face, (V, 3) float32 by name (training talkers and others)."""
        return {u.talker: np.asarray(u.template, np.float32) for u in self._utts}

    def coeffs(self, utt: Utterance) -> np.ndarray:
        """(T, K) coefficients of the utterance in ``basis``."""
        if self.basis.kind == "arkit" and utt.weights is not None:
            return np.asarray(utt.weights, np.float32)
        return self.basis.encode(utt.vertices, utt.template)

    def windows(self, split: str, window_frames: int, rng: np.random.Generator
                ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """One random window per utterance of ``split`` (shuffled; shorter ones skipped):
        (audio (M,) float32, coeffs (window_frames, K), talker index or -1 if not training).

        Frames [k, k+n) pair with samples [round(k*16000/fps), round((k+n)*16000/fps)); audio
        past the end is zero. M may differ by one sample between windows.
        """
        utts = [u for u in self.utterances(split) if u.frames >= window_frames]
        index = {t: i for i, t in enumerate(self.talkers)}
        for i in rng.permutation(len(utts)):
            u = utts[i]
            k = int(rng.integers(0, u.frames - window_frames + 1))
            a = round(k * SAMPLE_RATE_HZ / u.fps)
            b = round((k + window_frames) * SAMPLE_RATE_HZ / u.fps)
            audio = np.zeros(b - a, np.float32)
            chunk = u.pcm[a:b]
            audio[:len(chunk)] = (pcm16_to_float(chunk) if chunk.dtype == np.int16
                                  else chunk.astype(np.float32))
            if u.weights is not None and self.basis.kind == "arkit":
                coeffs = np.asarray(u.weights[k:k + window_frames], np.float32)
            else:
                coeffs = self.basis.encode(u.vertices[k:k + window_frames], u.template)
            yield audio, coeffs, index.get(u.talker, -1)

    # --- loading --------------------------------------------------------------------------
    @staticmethod
    def load(path: str | Path, fps: float = 30.0, masks: str | Path | None = None,
             source_fps: float | None = None, pca_components: int = 64) -> TalkingFaceDataset:
        """Read our corpus (``corpus.json``) or a VOCASET/BIWI-style folder (module docstring)."""
        root = Path(path)
        if not root.is_dir():
            raise DataError(f"dataset folder {root} does not exist")
        mask_arrays = _load_masks(Path(masks) if masks else root / "masks.npz")
        if (root / "corpus.json").is_file():
            return _load_corpus(root, fps, mask_arrays)
        return _load_vertex_folder(root, fps, mask_arrays, source_fps, pca_components)


def _load_masks(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        log.warning("no vertex masks at %s: lip/upper-face metrics need them (pass masks=)", path)
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].astype(bool) for k in z.files}


def _read_wav(path: Path) -> np.ndarray:
    """Mono float32 audio at 16 kHz (``models.audio``: the resampler the server uses too)."""
    audio, rate = read_wav(path)
    return resample(audio, rate, SAMPLE_RATE_HZ)


def _load_corpus(root: Path, fps: float, masks: dict[str, np.ndarray]) -> TalkingFaceDataset:
    manifest = json.loads((root / "corpus.json").read_text())
    if float(manifest["fps"]) != fps:
        raise DataError(f"{root} is at {manifest['fps']} fps, {fps} asked; regenerate it")
    with (root / "templates.pkl").open("rb") as f:
        templates = pickle.load(f)
    basis = _corpus_basis(root, manifest, masks, fps)
    utts = []
    for m in manifest["utterances"]:
        uid = m["id"]
        verts = np.load(root / "vertices_npy" / f"{uid}.npy", mmap_mode="r")
        weights = np.load(root / "weights_npy" / f"{uid}.npy", mmap_mode="r")
        utts.append(Utterance(uid, m["talker"], m["split"], _read_wav(root / "wav" / f"{uid}.wav"),
                              verts.reshape(len(verts), -1, 3), templates[m["talker"]], weights,
                              fps, _read_phones(root / "phonemes" / f"{uid}.json")))
    talkers = [t["name"] for t in manifest["talkers"] if t.get("role", "train") == "train"]
    pair = manifest["rig"].get("mouth_open")
    return TalkingFaceDataset(utts, talkers, basis, fps,
                              (int(pair[0]), int(pair[1])) if pair else None)


def _read_phones(path: Path) -> tuple[Phone, ...]:
    if not path.is_file():
        return ()
    return tuple(Phone.from_json(p) for p in json.loads(path.read_text())["phonemes"])


def _corpus_basis(root: Path, manifest: dict, masks: dict[str, np.ndarray],
                  fps: float) -> MotionBasis:
    names = tuple(manifest["blendshapes"])
    if (root / "basis.npz").is_file():
        with np.load(root / "basis.npz", allow_pickle=False) as z:
            template, deltas = z["template"], z["deltas"]
            faces = z["faces"] if "faces" in z.files else np.zeros((0, 3), np.int32)
    else:
        from models.face.load import load_rig

        rig = load_rig(manifest["rig"]["name"])
        template, deltas, faces = rig.template, rig.deltas, rig.faces
    if template.shape[0] != manifest["rig"]["vertex_count"]:
        raise DataError(f"rig {manifest['rig']['name']!r} has {template.shape[0]} vertices but "
                        f"{root} was made with {manifest['rig']['vertex_count']}")
    return MotionBasis(template.astype(np.float32), deltas.astype(np.float32), names,
                       np.asarray(faces, np.int32), masks, fps, "arkit")


def parse_name(stem: str) -> tuple[str, int]:
    """``FaceTalk_170725_00137_TA_sentence01`` -> (``FaceTalk_170725_00137_TA``, 1)."""
    m = _NAME.match(stem)
    if not m:
        raise DataError(f"cannot read subject and sentence number from file name {stem!r} "
                           f"(expected SUBJECT_sentenceNN or SUBJECT_NN)")
    return m["subject"], int(m["number"])


def sentence_split(number: int) -> str:
    return next(s for lo, hi, s in SENTENCE_SPLITS if lo <= number <= hi) if number >= 1 \
        else "train"


def _resample_frames(v: np.ndarray, src_fps: float, fps: float) -> np.ndarray:
    """(T, ...) -> (T', ...) by linear interpolation at k / fps, never past the last frame."""
    if src_fps == fps:
        return v
    n_out = int(np.floor((len(v) - 1) * fps / src_fps + 1e-9)) + 1
    pos = np.arange(n_out) * (src_fps / fps)
    i0 = np.minimum(np.floor(pos).astype(int), len(v) - 1)
    i1 = np.minimum(i0 + 1, len(v) - 1)
    a = (pos - i0).reshape(-1, *([1] * (v.ndim - 1)))
    return ((1 - a) * v[i0] + a * v[i1]).astype(np.float32)


def _load_vertex_folder(root: Path, fps: float, masks: dict[str, np.ndarray],
                        source_fps: float | None, k: int) -> TalkingFaceDataset:
    for need in ("wav", "vertices_npy", "templates.pkl"):
        if not (root / need).exists():
            raise DataError(f"{root} has neither corpus.json nor {need}: not a dataset folder")
    with (root / "templates.pkl").open("rb") as f:
        templates = pickle.load(f, encoding="latin1")  # VOCASET's file comes from Python 2
    raw = []
    for npy in sorted((root / "vertices_npy").glob("*.npy")):
        wav = root / "wav" / f"{npy.stem}.wav"
        if not wav.is_file():
            log.warning("skipping %s: no %s", npy.name, wav)
            continue
        subject, number = parse_name(npy.stem)
        if subject not in templates:
            raise DataError(f"templates.pkl has no subject {subject!r} (for {npy.name})")
        raw.append((npy.stem, subject, number, np.load(npy), _read_wav(wav)))
    if not raw:
        raise DataError(f"no vertices_npy/*.npy with a matching wav/*.wav in {root}")
    if source_fps is None:  # frames per second of audio, rounded to a usual capture rate
        ratio = float(np.median([len(v) / (len(a) / SAMPLE_RATE_HZ) for _, _, _, v, a in raw]))
        source_fps = min(_COMMON_FPS, key=lambda f: abs(f - ratio))
        log.info("%s: vertices at %.1f frames per audio second -> %g fps", root, ratio,
                 source_fps)
    utts = []
    for stem, subject, number, v, audio in raw:
        template = np.asarray(templates[subject], np.float32).reshape(-1, 3)
        verts = _resample_frames(v.reshape(len(v), -1, 3).astype(np.float32), source_fps, fps)
        utts.append(Utterance(stem, subject, sentence_split(number), audio, verts, template,
                              None, fps))
    train = [u for u in utts if u.split == "train"] or utts
    offsets = np.concatenate([u.vertices - u.template for u in train])
    some = next(iter(templates.values()))
    faces = np.load(root / "faces.npy") if (root / "faces.npy").is_file() else None
    basis = MotionBasis.fit_pca(offsets, k, np.asarray(some, np.float32).reshape(-1, 3), masks,
                                faces, fps)
    return TalkingFaceDataset(utts, sorted({u.talker for u in train}), basis, fps)
