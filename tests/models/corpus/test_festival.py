"""Festival speech (models.corpus.festival) and the corpus's heldout_synth split, with the real
``festival`` binary and Debian's English voices (scripts/setup_system.sh installs them)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.corpus.festival import FESTIVAL_TO_ESPEAK, Festival, FestivalConfig, scheme_string
from models.corpus.generator import SYNTH_SPLIT, CorpusConfig, generate_corpus, plan
from models.corpus.phonemes import Phone, arpabet_of, is_known, is_pause, visemes_of
from models.corpus.speech import check_timings
from models.corpus.talkers import animate
from models.data.dataset import TalkingFaceDataset
from models.errors import DataError
from talker.cli import main as talker_main

VOICES = ("cmu_us_slt_arctic_hts", "kal_diphone", "ked_diphone")  # Debian's English voices
BILABIAL_TEXT = "Peggy put a purple paper map in the pot."
BILABIALS = ["p", "p", "p", "p", "p", "p", "m", "p", "p"]  # Peggy put purple paper map pot
SYNTH = CorpusConfig(talkers=3, utterances=4, heldout_talkers=1, heldout_voices=0,
                     heldout_synth_utterances=2, seed=4)


@pytest.fixture(scope="module")
def festival() -> Festival:
    return Festival()


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rms(audio: np.ndarray, start_s: float, end_s: float) -> float:
    chunk = audio[int(start_s * 16000):int(end_s * 16000)].astype(np.float64)
    return float(np.sqrt(np.mean(chunk ** 2)))


def test_english_voices_are_installed(festival: Festival) -> None:
    assert festival.english_voices() == VOICES
    assert all(festival.voices()[v] == "english" for v in VOICES)


@pytest.mark.parametrize("voice", VOICES)
def test_bilabials_are_timed_where_the_lips_close(festival: Festival, voice: str) -> None:
    s = festival.synthesize(BILABIAL_TEXT, voice)
    assert s.sample_rate == 16000 and s.audio.dtype == np.float32 and s.text == BILABIAL_TEXT
    assert 0.05 < np.abs(s.audio).max() <= 1.0
    check_timings(s)  # contiguous, monotonic, exactly [0, duration]
    assert all(is_known(p.symbol) for p in s.phonemes)
    assert [p.symbol for p in s.phonemes if visemes_of(p.symbol) == ("PP",)] == BILABIALS
    phones = s.phonemes
    for i, p in enumerate(phones):
        if p.symbol not in ("p", "m"):
            continue
        assert 0.02 <= p.duration_s <= 0.3, p
        if p.symbol == "p":  # the closure is (nearly) silent; the vowel after it is not
            nxt = phones[i + 1]
            closure = _rms(s.audio, p.start_s + 0.25 * p.duration_s,
                           p.start_s + 0.6 * p.duration_s)
            vowel = _rms(s.audio, nxt.start_s + 0.25 * nxt.duration_s,
                         nxt.end_s - 0.25 * nxt.duration_s)
            assert closure < 0.2 * vowel, (p, nxt, closure, vowel)
    words = [p.word_index for p in phones if not is_pause(p.symbol)]
    assert words == sorted(words) and words[0] == 0 and words[-1] == 8
    assert next(p for p in phones if p.symbol == "E").stressed  # PEGgy
    assert is_pause(phones[0].symbol) and is_pause(phones[-1].symbol)


def test_same_text_and_voice_give_the_same_samples(festival: Festival) -> None:
    a = festival.synthesize("Hello there.", "kal_diphone")
    b = festival.synthesize("Hello there.", "kal_diphone")
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes


def test_every_festival_phone_is_a_known_espeak_symbol() -> None:
    for name, symbol in FESTIVAL_TO_ESPEAK.items():
        assert is_known(symbol), name
        if name.upper() in ("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW B CH D DH F G HH JH "
                            "K L M N NG P R S SH T TH V W Y Z ZH").split():
            assert arpabet_of(symbol) == (name.upper(),), name  # same phoneme both ways
    assert {FESTIVAL_TO_ESPEAK[p] for p in ("pau", "h#", "#", "brth")} == {"_"}
    assert arpabet_of(FESTIVAL_TO_ESPEAK["dx"]) == ("T",)
    assert arpabet_of(FESTIVAL_TO_ESPEAK["axr"]) == ("ER",)


def test_scheme_string_escapes_quotes_and_backslashes(festival: Festival) -> None:
    assert scheme_string('say "hi" \\ now\n') == '"say \\"hi\\" \\\\ now "'
    with pytest.raises(DataError, match="ASCII"):
        scheme_string("caf\u00e9")
    s = festival.synthesize('Bob said "stop" \\ (and left).', "kal_diphone")
    # the quotes and the backslash reach Festival intact: it reads "\\" aloud as a word
    assert max(p.word_index for p in s.phonemes) == 5  # Bob said stop backslash and left


def test_missing_voice_names_the_package(festival: Festival) -> None:
    with pytest.raises(DataError, match="'nobody_diphone' is not installed.*apt-get install"):
        festival.synthesize("Hello.", "nobody_diphone")
    with pytest.raises(DataError, match="not a Festival voice name"):
        festival.synthesize("Hello.", "kal_diphone) (quit")


def test_missing_festival_says_how_to_install() -> None:
    engine = Festival(FestivalConfig(binary="/nonexistent/festival"))
    with pytest.raises(DataError, match="apt-get install festival festvox"):
        engine.synthesize("Hello.", "kal_diphone")


# --- the heldout_synth split --------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    generate_corpus(SYNTH, out, workers=2, progress=False)
    return out


def test_plan_adds_synth_utterances_after_each_training_talkers_own() -> None:
    _, _, without = plan(replace(SYNTH, heldout_synth_utterances=0))
    _, _, tasks = plan(SYNTH, festival_voices=VOICES)
    synth = [t for t in tasks if t.split == SYNTH_SPLIT]
    assert [t for t in tasks if t.split != SYNTH_SPLIT] == without  # same IDs, seeds, voices
    assert [(t.uid, t.festival_voice) for t in synth] == [
        ("T00_U0004", VOICES[0]), ("T00_U0005", VOICES[1]),  # round robin by talker + index
        ("T01_U0004", VOICES[1]), ("T01_U0005", VOICES[2])]
    assert all(t.voice == t.talker.voice for t in synth)  # the talker's own style and habits


def test_corpus_has_a_heldout_synth_split_spoken_by_festival(synth_corpus: Path) -> None:
    manifest = json.loads((synth_corpus / "corpus.json").read_text())
    by_id = {u["id"]: u for u in manifest["utterances"]}
    synth = manifest["splits"][SYNTH_SPLIT]
    assert synth == ["T00_U0004", "T00_U0005", "T01_U0004", "T01_U0005"]
    assert [by_id[i]["voice"] for i in synth] == [
        "festival:cmu_us_slt_arctic_hts", "festival:kal_diphone", "festival:kal_diphone",
        "festival:ked_diphone"]
    assert manifest["voices"][SYNTH_SPLIT] == [f"festival:{v}" for v in VOICES]
    assert manifest["config"]["heldout_synth_utterances"] == 2
    for split, ids in manifest["splits"].items():
        if split != SYNTH_SPLIT:
            assert not any(by_id[i]["voice"].startswith("festival:") for i in ids), split
    for uid in synth:
        doc = json.loads((synth_corpus / "phonemes" / f"{uid}.json").read_text())
        assert doc["voice"] == by_id[uid]["voice"]
        phones = doc["phonemes"]
        assert all(is_known(p["symbol"]) for p in phones)
        assert phones[0]["start_s"] == 0 and phones[0]["symbol"] == "_"
        assert phones[-1]["end_s"] == pytest.approx(by_id[uid]["duration_s"])
        assert 1.5 <= by_id[uid]["duration_s"] <= 6.0
        weights = np.load(synth_corpus / "weights_npy" / f"{uid}.npy")
        assert weights.shape == (by_id[uid]["frames"], 51) and weights.any()


def test_synth_motion_is_the_talkers_animation_of_festivals_phones(synth_corpus: Path) -> None:
    """The same ground truth as espeak utterances: ``animate`` in the talker's style."""
    _, _, tasks = plan(SYNTH, festival_voices=VOICES)
    for task in (t for t in tasks if t.split == SYNTH_SPLIT):
        doc = json.loads((synth_corpus / "phonemes" / f"{task.uid}.json").read_text())
        weights = np.load(synth_corpus / "weights_npy" / f"{task.uid}.npy")
        anim_ss = np.random.SeedSequence(task.entropy).spawn(2)[1]
        again = animate([Phone.from_json(p) for p in doc["phonemes"]], len(weights),
                        task.talker.style, np.random.default_rng(anim_ss), SYNTH.fps)
        np.testing.assert_allclose(weights, again, atol=1e-4)  # JSON keeps times to 1 us


def test_synth_corpus_is_deterministic(synth_corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_corpus(SYNTH, again, workers=1, progress=False)
    assert _digests(again) == _digests(synth_corpus)


def test_dataset_loads_heldout_synth_apart_from_training(synth_corpus: Path) -> None:
    data = TalkingFaceDataset.load(synth_corpus)
    synth = data.utterances(SYNTH_SPLIT)
    assert len(synth) == 4 and {u.talker for u in synth} == {"T00", "T01"}
    assert set(data.talkers) == {"T00", "T01"}  # training talkers: known identities
    train_ids = {u.id for u in data.utterances("train")}
    assert train_ids and not train_ids & {u.id for u in synth}


def test_cli_checks_festival_voices_only_when_asked(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = ["corpus", "--out", str(tmp_path / "c"), "--talkers", "3", "--utterances", "1",
            "--quiet"]
    assert talker_main([*args, "--heldout-synth", "1", "--festival-voices", "nobody"]) == 2
    assert "Festival voice 'nobody' is not installed" in capsys.readouterr().err
    assert talker_main([*args, "--festival-voices", "kal_diphone"]) == 2
    assert "--festival-voices needs --heldout-synth" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        talker_main([*args, "--heldout-synth", "-1"])
