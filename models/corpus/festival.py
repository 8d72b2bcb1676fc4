"""Speech with phone timings from Festival: a second synthesiser the model never trains on.

The corpus's held-out-synthesiser split (``heldout_synth``) stands in for real voices: another
engine's prosody, timbre and segment durations, with the same ground truth as the espeak-ng corpus
(phone timings -> ``talkers.animate`` -> rig vertices). So Festival's phones are given in espeak
mnemonics (``FESTIVAL_TO_ESPEAK``), and everything downstream reads them as it reads espeak's.

Each call runs the ``festival`` binary once in batch mode with a generated Scheme script: select
the voice, synthesise the text, save the wave, and print the Word relation (item ids) and the
Segment relation (phone name, end time, syllable stress, word id) to stdout. Festival is
deterministic: equal (text, voice) give equal bytes, in any process. One short sentence takes
about 0.2-0.3 s, most of it Festival starting up.

Phones: the English voices of Debian (``kal_diphone``, ``ked_diphone``, ``cmu_us_slt_arctic_hts``)
all use the ``radio`` phone set, lower-case ARPAbet plus TIMIT's flap and syllabic consonants.
A phone outside the table raises DataError rather than falling back to a guess, so a voice with
another phone set fails loudly. ``stressed`` is Festival's syllable stress (the CMU lexicon's
primary and secondary stress alike) on vowels; ``word_index`` is the word's place in Festival's
Word relation (the text's words for plain text; numbers and abbreviations expand to several).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.audio import read_wav, resample
from models.corpus.phonemes import PAUSE, Phone, is_vowel
from models.corpus.speech import SAMPLE_RATE_HZ, Speech, _tile, check_timings
from models.errors import DataError

__all__ = ["FESTIVAL_RATE_WPM", "FESTIVAL_TO_ESPEAK", "INSTALL_HINT", "VOICE_PACKAGES", "Festival",
           "FestivalConfig", "radio_phones", "scheme_string"]

# The Debian package of each English voice, for the install hint.
VOICE_PACKAGES = {"kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k",
                  "cmu_us_slt_arctic_hts": "festvox-us-slt-hts"}
INSTALL_HINT = ("install Festival and its English voices: apt-get install festival "
                + " ".join(sorted(VOICE_PACKAGES.values())) + " (scripts/setup_system.sh does)")

# Festival ``radio`` phone -> espeak-ng mnemonic: for each ARPAbet phoneme the symbol that espeak's
# en-us voice itself uses, so both synthesisers give one symbol per phoneme (phonemes.py tables).
FESTIVAL_TO_ESPEAK: dict[str, str] = {
    # vowels: stressed AH is espeak's "V", the reduced schwa "@" (espeak keeps them apart too)
    "aa": "A:", "ae": "a", "ah": "V", "ao": "O:", "aw": "aU", "ax": "@", "axr": "3",
    "ay": "aI", "eh": "E", "er": "3:", "ey": "eI", "ih": "I", "iy": "i:", "ow": "oU",
    "oy": "OI", "uh": "U", "uw": "u:",
    # consonants
    "b": "b", "ch": "tS", "d": "d", "dh": "D", "f": "f", "g": "g", "hh": "h", "jh": "dZ",
    "k": "k", "l": "l", "m": "m", "n": "n", "ng": "N", "p": "p", "r": "r", "s": "s", "sh": "S",
    "t": "t", "th": "T", "v": "v", "w": "w", "y": "j", "z": "z", "zh": "Z",
    # TIMIT extras: voiced h, the flap (espeak's en-us flap is "t#"), syllabic l/n/m, nasal flap
    "hv": "h", "dx": "t#", "el": "@L", "en": "n-", "em": "m", "nx": "n",
    # silences: Festival's pause, the TIMIT/HTS edge silences, a breath (lips at rest)
    "pau": PAUSE, "h#": PAUSE, "#": PAUSE, "brth": PAUSE, "sil": PAUSE,
}

# Words per minute that ``text.make_script`` plans for (pauses included, Festival speaks at its
# own rate whatever the talker's habit): measured 140-175 over the three voices.
FESTIVAL_RATE_WPM = 160

_VOICE_NAME = re.compile(r"^[A-Za-z0-9_]+$")  # a Scheme symbol we can splice into `(voice_NAME)`
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class FestivalConfig:
    binary: str = "festival"  # the Festival executable (PATH lookup)
    timeout_s: float = 60.0  # per call; a sentence takes ~0.3 s, start-up included


def scheme_string(text: str) -> str:
    """``text`` as a Scheme string literal: quoted, with ``\\`` and ``"`` escaped and control
    characters as spaces. Non-ASCII text raises DataError (Festival's English front end reads
    bytes, and would spell out UTF-8 sequences letter by letter)."""
    if not text.isascii():
        raise DataError(f"Festival speaks ASCII text only, got {text[:40]!r}")
    body = _CONTROL.sub(" ", text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{body}"'


class Festival:
    """The ``festival`` binary as a speech engine; holds no state besides the voice list."""

    def __init__(self, config: FestivalConfig = FestivalConfig()) -> None:
        self.config = config
        self._voices: dict[str, str] | None = None  # name -> language, read once

    # --- voices ---------------------------------------------------------------------------
    def voices(self) -> dict[str, str]:
        """Installed voices and their language (``{"kal_diphone": "english", ...}``), by name."""
        if self._voices is None:
            script = ("(mapcar (lambda (v) (format t \"@V\\t%s\\t%s\\n\" v (cadr (assoc "
                      "'language (cadr (voice.description v)))))) (voice.list))\n")
            out = self._run(script, "listing voices")
            rows = [line.split("\t") for line in out.splitlines() if line.startswith("@V\t")]
            self._voices = dict(sorted((r[1], r[2]) for r in rows if len(r) == 3))
        return dict(self._voices)

    def english_voices(self) -> tuple[str, ...]:
        """Installed English voices, sorted (the held-out split's default)."""
        return tuple(name for name, lang in self.voices().items() if lang == "english")

    def check_voice(self, voice: str) -> None:
        """Raise DataError unless ``voice`` names an installed voice (its phones are checked
        when it speaks: ``FESTIVAL_TO_ESPEAK`` covers the ``radio`` phone set)."""
        if not _VOICE_NAME.match(voice):
            raise DataError(f"not a Festival voice name: {voice!r}")
        installed = self.voices()
        if voice in installed:
            return
        package = VOICE_PACKAGES.get(voice)
        hint = f"apt-get install {package}" if package else INSTALL_HINT
        raise DataError(f"Festival voice {voice!r} is not installed (installed: "
                        f"{', '.join(installed) or 'none'}); {hint}")

    # --- synthesis ------------------------------------------------------------------------
    def synthesize(self, text: str, voice: str) -> Speech:
        """Speak ``text`` with ``voice``: 16 kHz float32 audio and phones tiling it, in espeak
        mnemonics. Raises DataError for a missing binary or voice, non-ASCII text, a phone
        outside ``FESTIVAL_TO_ESPEAK`` or a failed run."""
        self.check_voice(voice)
        with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
            wav = Path(tmp) / "speech.wav"
            out = self._run(_synthesis_script(text, voice, wav), f"speaking {text[:40]!r}")
            if not wav.is_file():
                raise DataError(f"Festival wrote no audio for {text[:40]!r} with {voice}")
            native, rate = read_wav(wav)
        audio = np.clip(resample(native, rate, SAMPLE_RATE_HZ), -1.0, 1.0)
        duration_s = len(audio) / SAMPLE_RATE_HZ
        phones = _parse_segments(out, voice, duration_s)
        speech = Speech(audio=audio, phonemes=_tile(phones, duration_s), text=text)
        check_timings(speech)
        return speech

    def _run(self, script: str, what: str) -> str:
        """Run ``festival --batch`` on ``script``; return its stdout."""
        cfg = self.config
        with tempfile.NamedTemporaryFile("w", suffix=".scm", encoding="ascii") as f:
            f.write(script)
            f.flush()
            try:
                done = subprocess.run([cfg.binary, "--batch", f.name], capture_output=True,
                                      timeout=cfg.timeout_s, stdin=subprocess.DEVNULL)
            except FileNotFoundError:
                raise DataError(f"cannot run Festival ({cfg.binary!r} not found); "
                                f"{INSTALL_HINT}") from None
            except subprocess.TimeoutExpired:
                raise DataError(f"Festival took over {cfg.timeout_s:g} s {what}") from None
        stdout = done.stdout.decode("ascii", "replace")
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise DataError(f"Festival failed {what} (exit {done.returncode}): "
                            f"{err[0] if err else 'no message'}")
        return stdout


def _synthesis_script(text: str, voice: str, wav: Path) -> str:
    """Scheme for one utterance; ``voice`` is a checked name (``Festival.check_voice``)."""
    seg_feats = " ".join(f"(item.feat s '{f})" for f in (
        "end", "R:SylStructure.parent.stress", "R:SylStructure.parent.parent.id"))
    return "\n".join([
        f"(voice_{voice})",
        f"(set! utt (utt.synth (Utterance Text {scheme_string(text)})))",
        f"(utt.save.wave utt {scheme_string(str(wav))} 'riff)",
        "(mapcar (lambda (w) (format t \"@W\\t%s\\n\" (item.feat w 'id)))"
        " (utt.relation.items utt 'Word))",
        f"(mapcar (lambda (s) (format t \"@S\\t%s\\t%s\\t%s\\t%s\\n\" (item.name s) {seg_feats}))"
        " (utt.relation.items utt 'Segment))",
        "",
    ])


def _parse_segments(stdout: str, voice: str, duration_s: float) -> list[Phone]:
    """Phones from the script's ``@W``/``@S`` lines (see ``radio_phones``)."""
    rows = [line.split("\t") for line in stdout.splitlines()]
    words = {r[1]: i for i, r in enumerate(r for r in rows if r[0] == "@W")}
    segs = [(name, float(end), stress, words.get(word_id))
            for name, end, stress, word_id in (r[1:] for r in rows if r[0] == "@S" and len(r) == 5)]
    return radio_phones(segs, f"Festival voice {voice}", duration_s)


def radio_phones(segments: list[tuple[str, float, str, int | None]], who: str,
                 duration_s: float) -> list[Phone]:
    """Phones in espeak mnemonics from a synthesiser's ``radio`` segments (name, end time,
    syllable stress, word index or None), as Festival and Flite give them: start = the previous
    phone's end, ends clipped to the audio; a phone outside any word (Festival's post-lexical
    linking /r/ in ked) takes the word of the phone before it. ``who`` names the voice in
    errors."""
    if not segments:
        raise DataError(f"{who} returned no phones")
    phones: list[Phone] = []
    start, word = 0.0, -1
    for name, end, stress, word_index in segments:
        symbol = FESTIVAL_TO_ESPEAK.get(name)
        if symbol is None:
            raise DataError(f"{who} uses phone {name!r}, which has no espeak equivalent "
                            f"(models.corpus.festival.FESTIVAL_TO_ESPEAK)")
        end_s = min(end, duration_s)
        if symbol == PAUSE:
            phones.append(Phone(PAUSE, start, end_s))
        else:
            word = word if word_index is None else word_index
            phones.append(Phone(symbol, start, end_s, is_vowel(symbol) and stress == "1",
                                max(word, 0)))
        start = max(start, end_s)
    return phones
