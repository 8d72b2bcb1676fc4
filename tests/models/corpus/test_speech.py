"""espeak-ng speech, text coverage, visemes/coarticulation and talkers."""

from __future__ import annotations

import numpy as np
import pytest

from models.corpus.phonemes import ARPABET, Phone, arpabet_of, is_pause, is_vowel, visemes_of
from models.corpus.preview import jaw_peak_errors
from models.corpus.speech import Espeak, VoiceSpec, check_timings, engine
from models.corpus.talkers import TalkerStyle, animate, sample_talkers
from models.corpus.text import MAX_DURATION_S, make_script
from models.errors import DataError
from models.face.rig import RIG_NAMES, FaceRig

J = {n: i for i, n in enumerate(RIG_NAMES)}
FPS = 30


@pytest.fixture(scope="module")
def espeak() -> Espeak:
    return engine()


@pytest.fixture(scope="module")
def spoken(espeak: Espeak) -> list:
    """20 generated utterances, padded like the corpus does, spoken by en-us."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(20):
        script = make_script(rng, 175)
        out.append(espeak.synthesize(script.text, VoiceSpec()).padded(0.4, 0.4))
    return out


def test_synthesize_returns_16k_audio_and_phones_tiling_it(espeak: Espeak) -> None:
    s = espeak.synthesize("My baby, measure the treasure!", VoiceSpec("en-gb-x-rp", "f3", 60))
    assert s.sample_rate == 16000 and s.audio.dtype == np.float32
    assert 0.05 < np.abs(s.audio).max() <= 1.0
    check_timings(s)  # contiguous, monotonic, [0, duration]
    symbols = [p.symbol for p in s.phonemes if not is_pause(p.symbol)]
    assert symbols[:3] == ["m", "aI", "b"]
    assert any(p.stressed for p in s.phonemes if p.symbol == "eI")  # BAby
    words = [p.word_index for p in s.phonemes if p.word_index >= 0]
    assert words == sorted(words) and words[-1] == 4


def test_voice_parameters_change_timing(espeak: Espeak) -> None:
    slow = espeak.synthesize("The quick brown fox.", VoiceSpec(rate_wpm=120))
    fast = espeak.synthesize("The quick brown fox.", VoiceSpec(rate_wpm=300))
    assert slow.duration_s > 1.5 * fast.duration_s


def test_padding_shifts_timings(espeak: Espeak) -> None:
    s = espeak.synthesize("Hello.", VoiceSpec())
    p = s.padded(0.25, 0.5)
    assert p.duration_s == pytest.approx(s.duration_s + 0.75, abs=1e-4)
    first = next(x for x in p.phonemes if not is_pause(x.symbol))
    assert first.start_s == pytest.approx(s.phonemes[1].start_s + 0.25, abs=1e-6)
    assert is_pause(p.phonemes[0].symbol) and is_pause(p.phonemes[-1].symbol)
    check_timings(p)


def test_unknown_voice_names_alternatives(espeak: Espeak) -> None:
    with pytest.raises(DataError, match=r"unknown espeak-ng voice 'xx-nowhere'.*en-us"):
        espeak.synthesize("hi", VoiceSpec("xx-nowhere"))
    with pytest.raises(DataError, match=r"variant 'zz9'"):
        espeak.synthesize("hi", VoiceSpec("en-us", "zz9"))


def test_missing_library_says_how_to_install() -> None:
    with pytest.raises(DataError, match="apt-get install espeak-ng libespeak-ng1"):
        Espeak("/nonexistent/libespeak-ng.so.1")


def test_generated_text_covers_every_english_phoneme(spoken: list) -> None:
    seen = {a for s in spoken for p in s.phonemes for a in arpabet_of(p.symbol)}
    assert set(ARPABET) - seen == set()
    assert all(s.duration_s <= MAX_DURATION_S + 1.0 for s in spoken)
    assert any(is_pause(p.symbol) and 0 < p.start_s and p.end_s < s.duration_s
               for s in spoken for p in s.phonemes)  # pauses inside utterances


def test_phoneme_tables() -> None:
    assert visemes_of("p") == ("PP",) and visemes_of("'aI") == ("aa", "I")
    assert visemes_of("_:") == ("sil",) and visemes_of("zq#") == ("SS",)
    assert is_vowel("a") and is_vowel("oU") and not is_vowel("w") and not is_vowel("_")
    assert arpabet_of("dZ") == ("JH",)


NEUTRAL = TalkerStyle()


def _weights(speech, style: TalkerStyle = NEUTRAL, seed: int = 0) -> np.ndarray:
    n = int(np.ceil(speech.duration_s * FPS))
    return animate(speech.phonemes, n, style, np.random.default_rng(seed), FPS)


def test_jaw_opens_on_vowels_and_peaks_at_their_centres(spoken: list) -> None:
    errors = np.concatenate([jaw_peak_errors(s.phonemes, _weights(s)[:, J["jawOpen"]], FPS)
                             for s in spoken])
    assert len(errors) >= 30
    assert np.mean(np.abs(errors)) < 0.75  # frames
    assert np.mean(np.abs(errors) <= 1.0) > 0.85
    for s in spoken:
        w = _weights(s)
        for p in s.phonemes:
            if visemes_of(p.symbol) == ("aa",) and p.duration_s > 0.08:
                assert w[round(p.centre_s * FPS), J["jawOpen"]] > 0.25, p


def test_anticipation_moves_the_mouth_earlier(spoken: list) -> None:
    style = TalkerStyle(anticipation_s=0.05)
    early = np.concatenate([jaw_peak_errors(s.phonemes, _weights(s, style)[:, J["jawOpen"]],
                                            FPS) for s in spoken])
    shifted = np.concatenate([jaw_peak_errors(s.phonemes, _weights(s, style)[:, J["jawOpen"]],
                                              FPS, anticipation_s=0.05) for s in spoken])
    assert np.mean(early) < -1.0  # 50 ms = 1.5 frames ahead of the audio
    assert np.mean(np.abs(shifted)) < 0.75


def _lip_gap(w: np.ndarray) -> np.ndarray:
    """Lip parting in weight units: jaw drop not cancelled by mouthClose, plus lip raisers."""
    return (w[:, J["jawOpen"]] - w[:, J["mouthClose"]] + w[:, J["mouthLowerDownLeft"]]
            + w[:, J["mouthUpperUpLeft"]])


def test_mouth_closed_in_silence(spoken: list) -> None:
    for s in spoken:
        w = _weights(s)
        t = np.arange(len(w)) / FPS
        for p in s.phonemes:
            if is_pause(p.symbol) and p.duration_s > 0.3:
                inner = (t > p.start_s + 0.12) & (t < p.end_s - 0.12)
                assert (w[inner, J["jawOpen"]] < 0.03).all()
                assert (_lip_gap(w[inner]) < 0.04).all()


def test_bilabials_close_the_lips(spoken: list) -> None:
    n = 0
    for s in spoken:
        w = _weights(s, TalkerStyle(jaw_ratio=1.3, articulation_gain=1.2))
        for p in s.phonemes:
            if visemes_of(p.symbol) == ("PP",):
                k = round(p.centre_s * FPS)
                assert _lip_gap(w[k:k + 1])[0] < 0.06, (p, w[k, J["jawOpen"]])
                n += 1
    assert n > 20


def test_bilabial_closure_on_a_mesh(espeak: Espeak) -> None:
    """On a two-vertex lip rig, the lip centres touch (< 1 mm) at every m/b/p."""
    v_lip = np.zeros((2, 3), np.float32)
    v_lip[1, 1] = -0.0005  # lower lip 0.5 mm below the upper one, lips together at rest
    deltas = np.zeros((len(RIG_NAMES), 2, 3), np.float32)
    deltas[J["jawOpen"], 1, 1] = -0.03
    deltas[J["mouthClose"], 1, 1] = 0.03
    for side in ("Left", "Right"):
        deltas[J["mouthLowerDown" + side], 1, 1] = -0.005
        deltas[J["mouthUpperUp" + side], 0, 1] = 0.005
    rig = FaceRig("tiny", v_lip, np.zeros((0, 3), np.int32), RIG_NAMES, deltas,
                  {"lip": np.ones(2, bool), "upper_face": np.zeros(2, bool)})
    s = espeak.synthesize("Bob's mom bumped my pub bumper.", VoiceSpec())
    verts = rig.vertices(_weights(s))
    gap = np.abs(verts[:, 0, 1] - verts[:, 1, 1])
    for p in s.phonemes:
        if visemes_of(p.symbol) == ("PP",):
            assert gap[round(p.centre_s * FPS)] < 0.001 + 0.0005, p
    assert gap.max() > 0.003  # and it does open in between


def test_talkers_share_voices_and_differ_in_style_and_habits() -> None:
    talkers = sample_talkers(16, seed=3)
    timbres = [t.voice.timbre for t in talkers]
    counts = {v: timbres.count(v) for v in set(timbres)}
    assert 4 <= len(counts) <= 8 and min(counts.values()) >= 2
    assert len({t.style for t in talkers}) == 16
    for timbre in counts:  # talkers who share a voice keep their own pitch and rate
        same = [t.voice for t in talkers if t.voice.timbre == timbre]
        pitches = sorted(v.pitch for v in same)
        rates = sorted(v.rate_wpm for v in same)
        assert min(np.diff(pitches)) >= 5 and min(np.diff(rates)) >= 8, same
    # expressive talkers (emphasis on stressed syllables) speak with a wider intonation range
    emphasis = [t.style.emphasis_gain for t in talkers]
    ranges = [t.voice.pitch_range for t in talkers]
    assert np.corrcoef(emphasis, ranges)[0, 1] > 0.8
    assert sample_talkers(16, seed=3) == talkers


def test_blinks_and_brows() -> None:
    phones = [Phone("_", 0.0, 0.5), Phone("a", 0.5, 0.8, True, 0), Phone("_", 0.8, 60.0)]
    style = TalkerStyle(blink_rate_hz=0.3, brow_raise_on_stress=0.3, brow_pulse_prob=1.0)
    w = animate(phones, 60 * FPS, style, np.random.default_rng(0), FPS)
    blink = w[:, J["eyeBlinkLeft"]]
    onsets = np.flatnonzero((blink[1:] > 0) & (blink[:-1] == 0))
    assert 8 <= len(onsets) <= 35  # ~18 expected in 60 s
    lengths = np.diff(np.flatnonzero(np.diff((blink > 0).astype(int))))[::2]
    assert lengths.max() <= 0.2 * FPS + 1
    brow = w[:, J["browInnerUp"]]
    assert brow[round(0.65 * FPS)] > 0.1 and brow[round(5 * FPS)] == 0


def test_isolated_synthesis_does_not_depend_on_history() -> None:
    """espeak-ng carries state between utterances; synthesize_isolated must not (fresh process)."""
    import subprocess
    import sys

    code = (
        "from models.corpus.speech import engine, VoiceSpec\n"
        "e = engine(); v = VoiceSpec('en-gb-x-rp', 'm3')\n"
        "a = e.synthesize_isolated('Thirsty judges measure it.', v)\n"
        "e.synthesize_isolated('Something else entirely, with pauses.', VoiceSpec('en-us'))\n"
        "b = e.synthesize_isolated('Thirsty judges measure it.', v)\n"
        "assert (a.audio == b.audio).all() and a.phonemes == b.phonemes\n"
        "assert a.phonemes[1].symbol == 'T' and a.phonemes[1].word_index == 0\n"
    )
    root = str(__import__("pathlib").Path(__file__).resolve().parents[3])
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
