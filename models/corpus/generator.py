"""The generated talking-face corpus (DESIGN §4), written in the VOCASET layout.

    out_dir/
      wav/{ID}.wav            16 kHz mono int16
      vertices_npy/{ID}.npy   (T, V*3) float32, 30 fps; frame k depicts t = k / fps
      weights_npy/{ID}.npy    (T, 51) float32 ARKit weights (RIG_NAMES order)
      phonemes/{ID}.json      text, voice and phone timings
      templates.pkl           {talker: (V, 3) float32 template}
      masks.npz               lip, upper_face: (V,) bool
      basis.npz               template (V, 3), deltas (51, V, 3), names: the rig's linear basis
      corpus.json             manifest: version, seed, rig, talkers, utterances, splits

IDs are ``T03_U0042``. T = ceil(duration_s * fps). Generation is deterministic: every utterance
draws from its own seed sequence (master seed, talker, utterance), files carry no timestamps and
the manifest is written in a fixed order, so the same config gives byte-identical files whatever
the number of workers.

Talkers: ``talkers - heldout_talkers`` training talkers share ``voices`` voices (several talkers per
voice). Held-out talkers each have a voice no training talker uses. Held-out voices are further
unseen voices with which each training talker speaks its last ``heldout_voice_utterances``
utterances (known style, unknown voice). Held-out synthesiser utterances (``heldout_synth``,
``heldout_synth_utterances`` per training talker, on top of its ``utterances``) are spoken by
Festival (``models.corpus.festival``), an engine the model never trains on, and animated in the
talker's style from Festival's own phone timings: the stand-in for real voices. Flite training
utterances (``train_synth_utterances`` per training talker, after those) are spoken by Flite
(``models.corpus.flite``: voices that would leak into heldout_synth are refused) and join the
``train`` split, so that the model hears a second engine in training. A corpus without either is
byte for byte the corpus this module wrote before they existed.
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing as mp
import pickle
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models.audio import write_wav
from models.corpus.festival import FESTIVAL_RATE_WPM, Festival
from models.corpus.festival import INSTALL_HINT as FESTIVAL_HINT
from models.corpus.flite import FLITE_RATE_WPM, TRAIN_VOICES, Flite
from models.corpus.speech import DEFAULT_LIBRARY, SAMPLE_RATE_HZ, Speech, VoiceSpec, engine
from models.corpus.talkers import Talker, animate, sample_style, sample_talkers, sample_voices
from models.corpus.text import MAX_DURATION_S, MIN_DURATION_S, make_script
from models.errors import DataError
from models.face.rig import RIG_NAMES, FaceRig

log = logging.getLogger(__name__)

# 1.1: talkers sharing a voice keep their own pitch, rate, range. 1.2: espeak-ng's 22.05 kHz
# resampled by scipy's polyphase filter (models.audio, as at serve time), WAVs at the s16 full
# scale 32768.
GENERATOR_VERSION = "1.2"
SPLITS = ("train", "val", "test", "heldout_talker", "heldout_voice")
# Listed in the manifest only when the corpus has it, so that older configs keep their bytes.
SYNTH_SPLIT = "heldout_synth"
TRAIN_SYNTH_ROLE = "train_synth"  # the manifest's voices of the Flite training utterances




@dataclass(frozen=True)
class CorpusConfig:
    talkers: int = 16  # all talkers, held-out ones included
    utterances: int = 120  # per talker
    seed: int = 0
    heldout_talkers: int = 2  # unseen style and unseen voice
    heldout_voices: int = 2  # unseen voices, spoken by training talkers
    heldout_voice_utterances: int = 8  # per training talker, taken from its `utterances`
    voices: int | None = None  # voices shared by training talkers; None = ceil(3/8 * talkers)
    val_fraction: float = 0.1  # of a training talker's own-voice utterances
    test_fraction: float = 0.1
    fps: int = 30
    rig: str = "auto"  # "auto" | "facecap" | "procedural" (see models.face.load.load_rig)
    library: str = DEFAULT_LIBRARY  # espeak-ng shared library
    # Festival utterances per training talker, added after its `utterances` (its style, another
    # synthesiser's voice and timing). 0 writes exactly the corpus of generator 1.2.
    heldout_synth_utterances: int = 0
    festival_voices: tuple[str, ...] = ()  # for heldout_synth; () = every installed English one
    # Flite utterances per training talker in split "train", added after its heldout_synth ones
    # (its style, a second engine heard in training). 0 leaves the corpus as without the field.
    train_synth_utterances: int = 0
    flite_voices: tuple[str, ...] = ()  # for train_synth; () = flite.TRAIN_VOICES (awb, rms)


@dataclass(frozen=True)
class _Task:
    uid: str
    talker: Talker
    voice: VoiceSpec
    split: str
    entropy: tuple[int, ...]
    festival_voice: str | None = None  # heldout_synth: Festival speaks instead of espeak-ng
    flite_voice: str | None = None  # train_synth: Flite speaks instead of espeak-ng

    @property
    def voice_name(self) -> str:
        """The voice as the manifest names it: espeak's ``en-us+f3``, ``festival:NAME`` or
        ``flite:NAME``."""
        if self.festival_voice:
            return f"festival:{self.festival_voice}"
        if self.flite_voice:
            return f"flite:{self.flite_voice}"
        return self.voice.espeak_name

    @property
    def synthesiser_voice(self) -> bool:
        """Spoken by another engine than espeak-ng (its voice is a name, not a VoiceSpec)."""
        return bool(self.festival_voice or self.flite_voice)


def plan(config: CorpusConfig, festival_voices: tuple[str, ...] | None = None,
         ) -> tuple[list[Talker], dict[str, list[VoiceSpec]], list[_Task]]:
    """Talkers, voices by role, and one task per utterance, in ID order.

    ``festival_voices`` (for heldout_synth) defaults to ``config.festival_voices`` or, if that is
    empty, every English voice Festival has installed; Festival is only asked when the config
    wants heldout_synth utterances. Flite's (train_synth) are ``config.flite_voices`` or, if
    that is empty, ``flite.TRAIN_VOICES``; they are checked by ``generate_corpus``.
    """
    n_train = config.talkers - config.heldout_talkers
    if n_train < 1 or config.utterances < 1:
        raise DataError(f"need at least one training talker and one utterance: {config}")
    if config.heldout_synth_utterances < 0 or config.train_synth_utterances < 0:
        raise DataError(f"heldout_synth_utterances and train_synth_utterances must be >= 0: "
                        f"{config}")
    synth = festival_voices or _festival_voices(config)
    flite = config.flite_voices or TRAIN_VOICES
    n_voices = config.voices or max(1, math.ceil(n_train * 3 / 8))
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    voices = sample_voices(n_voices + config.heldout_talkers + config.heldout_voices, rng)
    train_voices = voices[:n_voices]
    talker_voices = voices[n_voices:n_voices + config.heldout_talkers]
    unseen_voices = voices[n_voices + config.heldout_talkers:]
    talkers = sample_talkers(n_train, config.seed, voices=train_voices)
    talkers += [Talker(f"T{n_train + i:02d}", v, sample_style(rng))
                for i, v in enumerate(talker_voices)]
    tasks: list[_Task] = []
    for ti, talker in enumerate(talkers):
        splits = _talker_splits(config, ti, ti >= n_train, bool(unseen_voices))
        for ui, split in enumerate(splits):
            voice = talker.voice
            if split == "heldout_voice":
                voice = unseen_voices[(ti + ui) % len(unseen_voices)]
            tasks.append(_Task(f"{talker.name}_U{ui:04d}", talker, voice, split,
                               (config.seed, ti, ui)))
        for k in range(config.heldout_synth_utterances if ti < n_train else 0):
            ui = config.utterances + k  # after the talker's own: those keep their IDs and seeds
            tasks.append(_Task(f"{talker.name}_U{ui:04d}", talker, talker.voice, SYNTH_SPLIT,
                               (config.seed, ti, ui), synth[(ti + k) % len(synth)]))
        for k in range(config.train_synth_utterances if ti < n_train else 0):
            ui = config.utterances + config.heldout_synth_utterances + k  # after all of those
            tasks.append(_Task(f"{talker.name}_U{ui:04d}", talker, talker.voice, "train",
                               (config.seed, ti, ui), flite_voice=flite[(ti + k) % len(flite)]))
    roles = {"train": train_voices, "heldout_talker": talker_voices,
             "heldout_voice": unseen_voices}
    return talkers, roles, tasks


def _festival_voices(config: CorpusConfig) -> tuple[str, ...]:
    if not config.heldout_synth_utterances:
        return ()
    voices = config.festival_voices or Festival().english_voices()
    if not voices:
        raise DataError(f"Festival has no English voice for the heldout_synth split; "
                        f"{FESTIVAL_HINT}")
    return tuple(voices)


def _talker_splits(config: CorpusConfig, ti: int, heldout: bool, unseen: bool) -> list[str]:
    n = config.utterances
    if heldout:
        return ["heldout_talker"] * n
    n_hv = min(config.heldout_voice_utterances, n - 1) if unseen else 0
    own = n - n_hv
    n_val, n_test = round(config.val_fraction * own), round(config.test_fraction * own)
    splits = np.array(["train"] * own, dtype=object)
    order = np.random.default_rng(np.random.SeedSequence([config.seed, 2, ti])).permutation(own)
    splits[order[:n_val]] = "val"
    splits[order[n_val:n_val + n_test]] = "test"
    return [str(s) for s in splits] + ["heldout_voice"] * n_hv


# --- workers --------------------------------------------------------------------------------

_STATE: dict = {}


def _init_worker(rig: FaceRig, library: str, out_dir: str, fps: int) -> None:
    """Per process: espeak-ng and Flite are global state, so each worker owns one engine each."""
    _STATE.update(rig=rig, engine=engine(library), festival=Festival(), flite=Flite(),
                  out=Path(out_dir), fps=fps)


def _speak(task: _Task, text: str) -> Speech:
    if task.festival_voice:
        return _STATE["festival"].synthesize(text, task.festival_voice)
    if task.flite_voice:
        return _STATE["flite"].synthesize(text, task.flite_voice)
    return _STATE["engine"].synthesize_isolated(text, task.voice)


def _make_utterance(task: _Task) -> dict:
    rig, out, fps = _STATE["rig"], _STATE["out"], _STATE["fps"]
    text_ss, anim_ss = np.random.SeedSequence(task.entropy).spawn(2)
    rng = np.random.default_rng(text_ss)
    rate_wpm = (FESTIVAL_RATE_WPM if task.festival_voice else FLITE_RATE_WPM if task.flite_voice
                else task.voice.rate_wpm)
    for _ in range(50):
        script = make_script(rng, rate_wpm)
        speech = _speak(task, script.text)
        total = speech.duration_s + script.lead_silence_s + script.trail_silence_s
        if MIN_DURATION_S <= total <= MAX_DURATION_S:
            break
    else:
        raise DataError(f"{task.uid}: no script of {MIN_DURATION_S}-{MAX_DURATION_S} s with "
                          f"voice {task.voice_name}")
    speech = speech.padded(script.lead_silence_s, script.trail_silence_s)
    n_samples = len(speech.audio)
    n_frames = -(-n_samples * fps // SAMPLE_RATE_HZ)  # ceil(duration * fps), exact in integers
    weights = animate(speech.phonemes, n_frames, task.talker.style,
                      np.random.default_rng(anim_ss), fps)
    vertices = rig.vertices(weights).reshape(n_frames, -1)
    write_wav(out / "wav" / f"{task.uid}.wav", speech.audio, SAMPLE_RATE_HZ)
    np.save(out / "vertices_npy" / f"{task.uid}.npy", vertices.astype(np.float32))
    np.save(out / "weights_npy" / f"{task.uid}.npy", weights.astype(np.float32))
    voice = task.voice_name if task.synthesiser_voice else task.voice.to_json()
    phones = {"id": task.uid, "text": script.text, "voice": voice,
              "phonemes": [p.to_json() for p in speech.phonemes]}
    _write_json(out / "phonemes" / f"{task.uid}.json", phones)
    return {"id": task.uid, "talker": task.talker.name, "split": task.split, "text": script.text,
            "voice": task.voice_name, "duration_s": n_samples / SAMPLE_RATE_HZ,
            "frames": int(n_frames), "samples": int(n_samples)}


# --- writing --------------------------------------------------------------------------------

def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def write_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez, but with fixed zip timestamps so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, buf.getvalue())


def _config_json(config: CorpusConfig) -> dict:
    """The config as the manifest records it; the heldout_synth and train_synth fields only when
    used, so that corpora without them keep the manifest of generator 1.2 byte for byte."""
    out = asdict(config)
    if not config.heldout_synth_utterances:
        del out["heldout_synth_utterances"], out["festival_voices"]
    if not config.train_synth_utterances:
        del out["train_synth_utterances"], out["flite_voices"]
    return out


def _prepare_out_dir(out_dir: Path) -> None:
    try:
        for sub in ("", "wav", "vertices_npy", "weights_npy", "phonemes"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"cannot write the corpus to {out_dir}: {e.strerror or e}; choose a "
                          f"writable output directory") from None


def generate_corpus(config: CorpusConfig, out_dir: str | Path, workers: int = 2,
                    progress: bool = True) -> Path:
    """Generate the corpus into ``out_dir``; return the path of ``corpus.json``.

    ``workers`` spawned processes (at least one); each initialises espeak-ng once, runs
    Festival for the heldout_synth utterances and Flite for the train_synth ones. Raises
    DataError for an unwritable directory, DataError if espeak-ng (or, with heldout_synth
    utterances, Festival; with train_synth ones, Flite) is missing, a voice is unknown or a
    Flite voice would leak into heldout_synth (checked before any work starts), DataError for a
    bad rig.
    """
    from models.face.load import load_rig

    out = Path(out_dir)
    _prepare_out_dir(out)
    talkers, roles, tasks = plan(config)
    eng = engine(config.library)  # fail early and clearly: library, voices
    for spec in sorted({t.voice for t in tasks}, key=lambda v: json.dumps(v.to_json())):
        eng.set_voice(spec)
    synth_voices = sorted({t.festival_voice for t in tasks if t.festival_voice})
    festival = Festival()
    for name in synth_voices:
        festival.check_voice(name)
    flite_voices = sorted({t.flite_voice for t in tasks if t.flite_voice})
    flite = Flite()
    for name in flite_voices:
        flite.check_voice(name)
    rig = load_rig(config.rig)
    if rig.blendshape_names != RIG_NAMES:
        raise DataError(f"rig {rig.name!r} does not have the 51 ARKit blendshapes")
    args = (rig, config.library, str(out), config.fps)
    bar = tqdm(total=len(tasks), desc="corpus", unit="utt", file=sys.stderr, disable=not progress)
    # Always worker processes, even for one: synthesize_isolated needs a clean engine.
    with mp.get_context("spawn").Pool(max(1, workers), _init_worker, args) as pool:
        metas = []
        for m in pool.imap(_make_utterance, tasks, chunksize=4):
            metas.append(m)
            bar.update()
    bar.close()
    with (out / "templates.pkl").open("wb") as f:
        pickle.dump({t.name: rig.template.astype(np.float32) for t in talkers}, f, protocol=4)
    write_npz_deterministic(out / "masks.npz", {k: rig.masks[k].astype(bool)
                                                for k in ("lip", "upper_face")})
    write_npz_deterministic(out / "basis.npz", {"template": rig.template.astype(np.float32),
                                                "deltas": rig.deltas.astype(np.float32),
                                                "names": np.array(RIG_NAMES)})
    manifest: dict[str, Any] = {
        "generator": "models.corpus.generator", "generator_version": GENERATOR_VERSION,
        "seed": config.seed, "config": _config_json(config), "fps": config.fps,
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "rig": {"name": rig.name, "vertex_count": rig.vertex_count,
                "mouth_open": list(rig.mouth_open)},
        "blendshapes": list(RIG_NAMES),
        "talkers": [dict(t.to_json(), role="heldout_talker"
                         if any(m["talker"] == t.name and m["split"] == "heldout_talker"
                                for m in metas) else "train") for t in talkers],
        "voices": {role: [v.to_json() for v in vs] for role, vs in roles.items()},
        "utterances": metas,
        "splits": {s: [m["id"] for m in metas if m["split"] == s] for s in SPLITS},
    }
    if synth_voices:  # only then: a corpus without the split keeps its 1.2 manifest
        manifest["voices"][SYNTH_SPLIT] = [f"festival:{name}" for name in synth_voices]
        manifest["splits"][SYNTH_SPLIT] = [m["id"] for m in metas if m["split"] == SYNTH_SPLIT]
    if flite_voices:  # likewise
        manifest["voices"][TRAIN_SYNTH_ROLE] = [f"flite:{name}" for name in flite_voices]
    path = out / "corpus.json"
    _write_json(path, manifest)
    log.info("wrote %d utterances to %s", len(metas), out)
    return path
