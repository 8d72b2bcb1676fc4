"""Corpus generation: layout, determinism, splits, errors, preview."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

import models.corpus.generator as corpus
from models.corpus.generator import CorpusConfig, generate_corpus, plan
from models.corpus.preview import render_preview
from models.corpus.speech import VoiceSpec
from models.errors import DataError

TINY = CorpusConfig(talkers=2, utterances=2, heldout_talkers=0, heldout_voices=0, seed=5)
TINY_FLITE = replace(TINY, train_synth_utterances=1)  # + one Flite utterance per talker
# The manifest of generator 1.2, which a corpus without heldout_synth or train_synth keeps.
MANIFEST_KEYS = {"generator", "generator_version", "seed", "config", "fps", "sample_rate_hz",
                 "rig", "blendshapes", "talkers", "voices", "utterances", "splits"}
CONFIG_KEYS = {"talkers", "utterances", "seed", "heldout_talkers", "heldout_voices",
               "heldout_voice_utterances", "voices", "val_fraction", "test_fraction", "fps", "rig",
               "library"}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    generate_corpus(TINY, out, workers=2, progress=False)
    return out


def test_same_config_gives_identical_files(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_corpus(TINY, again, workers=1, progress=False)  # other worker count, same bytes
    first, second = _digests(tiny), _digests(again)
    assert len(first) == 4 * 4 + 4  # 4 files per utterance + templates, masks, basis, manifest
    assert first == second


def test_layout_and_frame_count(tiny: Path) -> None:
    manifest = json.loads((tiny / "corpus.json").read_text())
    assert manifest["fps"] == 30 and manifest["generator_version"] == corpus.GENERATOR_VERSION
    v = manifest["rig"]["vertex_count"]
    templates = pickle.loads((tiny / "templates.pkl").read_bytes())
    assert sorted(templates) == ["T00", "T01"] and templates["T00"].shape == (v, 3)
    with np.load(tiny / "masks.npz") as m:
        assert m["lip"].shape == (v,) and m["lip"].any() and m["upper_face"].any()
    for u in manifest["utterances"]:
        rate, pcm = wavfile.read(tiny / "wav" / f"{u['id']}.wav")
        assert rate == 16000 and pcm.dtype == np.int16 and pcm.ndim == 1
        duration = len(pcm) / 16000
        assert 1.5 <= duration <= 6.0 and duration == u["duration_s"]
        verts = np.load(tiny / "vertices_npy" / f"{u['id']}.npy")
        weights = np.load(tiny / "weights_npy" / f"{u['id']}.npy")
        assert verts.shape == (math.ceil(duration * 30), v * 3) and verts.dtype == np.float32
        assert weights.shape == (len(verts), 51)
        phones = json.loads((tiny / "phonemes" / f"{u['id']}.json").read_text())["phonemes"]
        assert phones[0]["start_s"] == 0 and phones[-1]["end_s"] == pytest.approx(duration)
        assert phones[0]["symbol"] == "_" and phones[0]["end_s"] >= 0.2  # leading silence
        assert phones[1]["word_index"] == 0  # the first word's phones are all there
    assert "heldout_synth" not in manifest["splits"] and "heldout_synth" not in manifest["voices"]
    assert not {"heldout_synth_utterances", "festival_voices"} & set(manifest["config"])  # as 1.2
    assert set(manifest) == MANIFEST_KEYS and set(manifest["config"]) == CONFIG_KEYS
    assert set(manifest["voices"]) == {"train", "heldout_talker", "heldout_voice"}
    ids = sorted(i for s in manifest["splits"].values() for i in s)
    assert ids == ["T00_U0000", "T00_U0001", "T01_U0000", "T01_U0001"]
    talkers = manifest["talkers"]
    v0, v1 = talkers[0]["voice"], talkers[1]["voice"]  # 2 talkers, one shared voice ...
    assert (v0["voice"], v0["variant"]) == (v1["voice"], v1["variant"])
    assert (v0["pitch"], v0["rate_wpm"]) != (v1["pitch"], v1["rate_wpm"])  # ... own habits


def test_default_plan_shares_voices_and_holds_out_talkers_and_voices() -> None:
    talkers, roles, tasks = plan(CorpusConfig())
    assert len(talkers) == 16 and len(tasks) == 16 * 120
    train = [t for t in talkers if t.name < "T14"]
    counts = {}
    for t in train:
        counts[t.voice.timbre] = counts.get(t.voice.timbre, 0) + 1
    assert len(counts) == 6 and min(counts.values()) >= 2
    seen = set(roles["train"])
    assert not seen & set(roles["heldout_talker"]) and not seen & set(roles["heldout_voice"])
    by_split = {}
    for t in tasks:
        by_split.setdefault(t.split, []).append(t)
    assert len(by_split["heldout_talker"]) == 2 * 120
    assert len(by_split["heldout_voice"]) == 14 * 8
    assert all(t.voice in roles["heldout_voice"] for t in by_split["heldout_voice"])
    assert len(by_split["val"]) == len(by_split["test"]) == 14 * 11
    assert plan(CorpusConfig())[2] == tasks


def test_unwritable_out_dir_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DataError, match=f"cannot write the corpus to {blocker / 'out'}"):
        generate_corpus(TINY, blocker / "out", progress=False)


def test_missing_espeak_says_how_to_install(tmp_path: Path) -> None:
    cfg = CorpusConfig(talkers=1, utterances=1, heldout_talkers=0, heldout_voices=0,
                       library="/nonexistent/libespeak-ng.so.1")
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        generate_corpus(cfg, tmp_path / "c", progress=False)


def test_unknown_voice_fails_before_any_work(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "sample_voices", lambda n, rng: [VoiceSpec("xx-nowhere")] * n)
    with pytest.raises(DataError, match="unknown espeak-ng voice 'xx-nowhere'"):
        generate_corpus(TINY, tmp_path / "c", progress=False)
    assert not list((tmp_path / "c" / "wav").iterdir())


def test_preview_renders(tiny: Path, tmp_path: Path) -> None:
    out = render_preview(tiny, "T00_U0000", tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20000


def test_flite_utterances_join_train_and_leave_the_rest_unchanged(tiny: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "flite"
    generate_corpus(TINY_FLITE, out, workers=1, progress=False)
    manifest = json.loads((out / "corpus.json").read_text())
    assert set(manifest) == MANIFEST_KEYS
    assert set(manifest["config"]) == CONFIG_KEYS | {"train_synth_utterances", "flite_voices"}
    assert manifest["config"]["train_synth_utterances"] == 1
    assert manifest["voices"]["train_synth"] == ["flite:awb", "flite:rms"]
    assert "heldout_synth" not in manifest["splits"]
    by_id = {u["id"]: u for u in manifest["utterances"]}
    assert [(i, by_id[i]["voice"]) for i in ("T00_U0002", "T01_U0002")] == [
        ("T00_U0002", "flite:awb"), ("T01_U0002", "flite:rms")]  # round robin by talker
    assert {"T00_U0002", "T01_U0002"} <= set(manifest["splits"]["train"])
    for uid in ("T00_U0002", "T01_U0002"):
        doc = json.loads((out / "phonemes" / f"{uid}.json").read_text())
        assert doc["voice"] == by_id[uid]["voice"]
        phones = doc["phonemes"]
        assert phones[0]["symbol"] == "_" and phones[0]["start_s"] == 0
        assert phones[-1]["end_s"] == pytest.approx(by_id[uid]["duration_s"])
        assert any(p["stressed"] for p in phones) and max(p["word_index"] for p in phones) > 0
        assert 1.5 <= by_id[uid]["duration_s"] <= 6.0
        weights = np.load(out / "weights_npy" / f"{uid}.npy")
        assert weights.shape == (by_id[uid]["frames"], 51) and weights.any()
    # the espeak utterances keep their IDs, seeds and bytes
    same = {k: v for k, v in _digests(tiny).items() if "/" in k}  # the per-utterance files
    after = _digests(out)
    assert {k: after.get(k) for k in same} == same
