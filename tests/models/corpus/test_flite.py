"""Flite speech (models.corpus.flite), with the real libflite and its awb and rms voices
(scripts/setup_system.sh installs them): no mocks."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.audio import read_wav
from models.corpus.festival import FESTIVAL_TO_ESPEAK
from models.corpus.flite import (
    FLITE_RATE_WPM,
    LEAKING_VOICES,
    TRAIN_VOICES,
    Flite,
    FliteConfig,
    flite_text,
)
from models.corpus.generator import CorpusConfig, plan
from models.corpus.phonemes import is_known, is_pause, is_vowel, visemes_of
from models.corpus.speech import check_timings
from models.corpus.text import make_script
from models.errors import DataError
from talker.cli import main as talker_main

TEXT = "Bob bought a puppy."
ESPEAK_SYMBOLS = set(FESTIVAL_TO_ESPEAK.values())


@pytest.fixture(scope="module")
def flite() -> Flite:
    return Flite()


def _rms(audio: np.ndarray, start_s: float, end_s: float) -> float:
    chunk = audio[int(start_s * 16000):int(end_s * 16000)].astype(np.float64)
    return float(np.sqrt(np.mean(chunk ** 2)))


def test_training_voices_are_awb_and_rms() -> None:
    assert TRAIN_VOICES == ("awb", "rms")
    assert set(LEAKING_VOICES) == {"kal", "kal16", "slt"}


@pytest.mark.parametrize("voice", TRAIN_VOICES)
def test_phones_tile_the_audio_with_bilabials_stress_and_words(flite: Flite, voice: str) -> None:
    s = flite.synthesize(TEXT, voice)
    assert s.sample_rate == 16000 and s.audio.dtype == np.float32 and s.text == TEXT
    assert 0.05 < np.abs(s.audio).max() <= 1.0 and 0.8 < s.duration_s < 3.0
    check_timings(s)  # contiguous, monotonic, exactly [0, duration]
    phones = s.phonemes
    assert all(p.symbol in ESPEAK_SYMBOLS and is_known(p.symbol) for p in phones)
    assert is_pause(phones[0].symbol) and is_pause(phones[-1].symbol)
    assert [p.symbol for p in phones if not is_pause(p.symbol)] == [
        "b", "A:", "b", "b", "A:", "t", "@", "p", "V", "p", "i:"]  # Bob bought a puppy
    assert [p.symbol for p in phones if visemes_of(p.symbol) == ("PP",)] == ["b", "b", "b", "p",
                                                                             "p"]
    for i, p in enumerate(phones):
        if p.symbol == "p":  # the closure is (nearly) silent; the vowel after it is not
            nxt = phones[i + 1]
            closure = _rms(s.audio, p.start_s + 0.25 * p.duration_s,
                           p.start_s + 0.6 * p.duration_s)
            vowel = _rms(s.audio, nxt.start_s + 0.25 * nxt.duration_s,
                         nxt.end_s - 0.25 * nxt.duration_s)
            assert closure < 0.2 * vowel, (p, nxt, closure, vowel)
    vowels = [(p.symbol, p.stressed) for p in phones if is_vowel(p.symbol)]
    assert vowels == [("A:", True), ("A:", True), ("@", False), ("V", True), ("i:", False)]
    assert not any(p.stressed for p in phones if not is_vowel(p.symbol))
    words = [p.word_index for p in phones if not is_pause(p.symbol)]
    assert words == sorted(words) and sorted(set(words)) == [0, 1, 2, 3]  # four words
    assert all(p.word_index == -1 for p in phones if is_pause(p.symbol))


def test_words_follow_flites_word_relation(flite: Flite) -> None:
    """Like Festival's: "it's" is two words ("it", "'s"), "12" one ("twelve")."""
    s = flite.synthesize("Didn't he say it's 12?", "rms")
    assert [(p.symbol, p.word_index) for p in s.phonemes if not is_pause(p.symbol)] == [
        ("d", 0), ("I", 0), ("d", 0), ("n", 0), ("t", 0), ("h", 1), ("i:", 1), ("s", 2),
        ("eI", 2), ("I", 3), ("t", 3), ("s", 4), ("t", 5), ("w", 5), ("E", 5), ("l", 5),
        ("v", 5)]


def test_same_text_and_voice_give_the_same_samples_in_any_order(flite: Flite) -> None:
    a = flite.synthesize("Hello there, Peter.", "awb")
    flite.synthesize("Something else entirely, spoken first.", "rms")
    flite.synthesize("And another thing.", "awb")
    b = flite.synthesize("Hello there, Peter.", "awb")
    c = Flite().synthesize("Hello there, Peter.", "awb")  # another engine, same process
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes
    assert np.array_equal(a.audio, c.audio) and a.phonemes == c.phonemes


def test_samples_and_timings_equal_the_flite_command(flite: Flite, tmp_path: Path) -> None:
    """Parity: the ctypes path (wave struct, Segment relation) against ``flite -psdur -o``."""
    text = "Peggy put a purple paper map in the pot."
    wav = tmp_path / "cli.wav"
    done = subprocess.run(["flite", "-voice", "rms", "-psdur", "-t", text, "-o", str(wav)],
                          capture_output=True, text=True, check=True, timeout=60)
    cli_audio, rate = read_wav(wav)
    ours = flite.synthesize(text, "rms")
    assert rate == 16000 and np.array_equal(ours.audio, cli_audio)
    cli = [tok.rsplit(":", 1) for tok in done.stdout.split()]  # "name:end_s" per segment
    spoken = [(FESTIVAL_TO_ESPEAK[name], float(end)) for name, end in cli if name != "pau"]
    mine = [(p.symbol, p.end_s) for p in ours.phonemes if not is_pause(p.symbol)]
    assert [s for s, _ in mine] == [s for s, _ in spoken]
    np.testing.assert_allclose([e for _, e in mine], [e for _, e in spoken], atol=0.0006)


def test_speaking_rate_is_near_flite_rate_wpm(flite: Flite) -> None:
    """What make_script plans for (FLITE_RATE_WPM) is Flite's real rate on corpus scripts."""
    rng = np.random.default_rng(0)
    texts = [make_script(rng, FLITE_RATE_WPM).text for _ in range(8)]
    for voice in TRAIN_VOICES:
        rates = [len(t.split()) * 60 / flite.synthesize(t, voice).duration_s for t in texts]
        assert 0.8 * FLITE_RATE_WPM < float(np.median(rates)) < 1.2 * FLITE_RATE_WPM, rates


@pytest.mark.parametrize("voice", sorted(LEAKING_VOICES))
def test_voices_that_leak_into_heldout_synth_are_refused(flite: Flite, voice: str) -> None:
    with pytest.raises(DataError, match=f"'{voice}' cannot speak training.*heldout_synth"):
        flite.synthesize("Hello.", voice)
    with pytest.raises(DataError, match="heldout_synth"):
        flite.check_voice(voice)


def test_unknown_voice_and_non_ascii_text_are_data_errors(flite: Flite) -> None:
    with pytest.raises(DataError, match="unknown Flite training voice 'nobody'.*awb, rms"):
        flite.synthesize("Hello.", "nobody")
    with pytest.raises(DataError, match="ASCII"):
        flite.synthesize("caf\u00e9", "rms")
    assert flite_text("a\x00b\nc") == b"a b c"  # a NUL would end the C string early


def test_missing_flite_says_how_to_install() -> None:
    engine = Flite(FliteConfig(library="/nonexistent/libflite.so.1"))
    with pytest.raises(DataError, match="apt-get install flite"):
        engine.synthesize("Hello.", "rms")
    with pytest.raises(DataError, match="apt-get install flite"):
        engine.check_voice("awb")


# --- the corpus's train_synth utterances ----------------------------------------------------

def test_plan_adds_flite_training_utterances_after_the_festival_ones() -> None:
    base = CorpusConfig(talkers=3, utterances=4, heldout_talkers=1, heldout_voices=0,
                        heldout_synth_utterances=1, seed=4)
    _, _, without = plan(base, festival_voices=("kal_diphone",))
    config = replace(base, train_synth_utterances=2)
    _, _, tasks = plan(config, festival_voices=("kal_diphone",))
    flite = [t for t in tasks if t.flite_voice]
    assert [t for t in tasks if not t.flite_voice] == without  # same IDs, seeds, voices
    assert [(t.uid, t.split, t.voice_name) for t in flite] == [
        ("T00_U0005", "train", "flite:awb"), ("T00_U0006", "train", "flite:rms"),
        ("T01_U0005", "train", "flite:rms"), ("T01_U0006", "train", "flite:awb")]
    assert all(t.voice == t.talker.voice and t.entropy[2] == int(t.uid[-4:]) for t in flite)
    _, _, chosen = plan(replace(config, flite_voices=("rms",)), festival_voices=("kal_diphone",))
    assert {t.flite_voice for t in chosen if t.flite_voice} == {"rms"}


def test_cli_checks_flite_voices_only_when_asked(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = ["corpus", "--out", str(tmp_path / "c"), "--talkers", "3", "--utterances", "1",
            "--quiet"]
    assert talker_main([*args, "--train-flite", "1", "--flite-voices", "slt"]) == 2
    assert "'slt' cannot speak training utterances" in capsys.readouterr().err
    assert talker_main([*args, "--train-flite", "1", "--flite-voices", "nobody"]) == 2
    assert "unknown Flite training voice 'nobody'" in capsys.readouterr().err
    assert talker_main([*args, "--flite-voices", "awb"]) == 2
    assert "--flite-voices needs --train-flite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        talker_main([*args, "--train-flite", "-1"])
