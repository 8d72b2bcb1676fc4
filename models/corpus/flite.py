"""Speech with phone timings from CMU Flite: a second synthesiser the model trains on.

The training corpus is otherwise spoken by espeak-ng alone, and the model learns espeak's voice
as much as speech. Flite's clustergen voices (``awb``, ``rms``: CMU ARCTIC speakers, statistical
parametric synthesis) give training utterances another engine's prosody, timbre and segment
durations, with the same ground truth as espeak's (phone timings -> ``talkers.animate`` -> rig
vertices). Their phones are given in espeak mnemonics through Festival's table
(``festival.FESTIVAL_TO_ESPEAK``: Flite's US English voices use the same ``radio`` phone set), so
everything downstream reads them as it reads espeak's.

Voices that would leak into ``heldout_synth`` are refused (``LEAKING_VOICES``): Flite's ``kal``
and ``kal16`` are Festival's ``kal_diphone`` database, and ``slt`` is the speaker of Festival's
``cmu_us_slt_arctic_hts``. Training on them would make the held-out split no longer held out.

libflite is driven in-process through ctypes (no headers needed; the signatures below are
flite 2.2's, ``include/*.h``): ``flite_synth_text`` returns an utterance whose Segment relation
holds each phone's name and end time, its syllable's stress and (through SylStructure) its word.
The audio is the utterance's ``cst_wave``, 16-bit samples at the voice's rate (16 kHz for awb and
rms), read in place. One sentence takes about 0.05 s.

Determinism: clustergen's mixed excitation draws noise from libc's ``rand()``, whose state is
process-global, so each synthesis first calls ``srand(1)`` (glibc's initial seed): equal
(text, voice) give equal samples in any process and in any order, the same samples as the
``flite`` command prints (tests/models/corpus/test_flite.py compares them). Flite and libc's
``rand`` are process-global state: use a ``Flite`` from one thread only (the corpus uses one per
worker process). Flite ends the process on an internal error (``cst_error`` calls ``exit``);
text is restricted to printable ASCII, which its English front end handles.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass

import numpy as np

from models.audio import pcm16_to_float, resample
from models.corpus.festival import radio_phones
from models.corpus.speech import SAMPLE_RATE_HZ, Speech, _tile, check_timings
from models.errors import DataError

__all__ = ["FLITE_RATE_WPM", "INSTALL_HINT", "LEAKING_VOICES", "TRAIN_VOICES", "VOICE_LIBRARIES",
           "Flite", "FliteConfig", "flite_text"]

INSTALL_HINT = "install Flite and its voices: apt-get install flite (scripts/setup_system.sh does)"

# Flite voice (``flite -voice NAME``) -> the shared library that registers it (package libflite1,
# pulled in by flite). Only voices fit for training are listed.
VOICE_LIBRARIES = {"awb": "libflite_cmu_us_awb.so.1", "rms": "libflite_cmu_us_rms.so.1"}
TRAIN_VOICES = tuple(sorted(VOICE_LIBRARIES))  # the default: every voice fit for training

# Voices that Flite has but that must not speak training utterances: why, for the error.
_HELDOUT = "would leak into the heldout_synth split"
LEAKING_VOICES = {
    "kal": f"shares its diphone database with Festival's kal_diphone: it {_HELDOUT}",
    "kal16": f"shares its diphone database with Festival's kal_diphone: it {_HELDOUT}",
    "slt": f"is the speaker of Festival's cmu_us_slt_arctic_hts (CMU ARCTIC slt): it {_HELDOUT}",
}

# Words per minute that ``text.make_script`` plans for (pauses included; Flite speaks at its own
# rate whatever the talker's habit): words / duration over 30 corpus scripts, median 164 (awb)
# and 148 (rms).
FLITE_RATE_WPM = 155

_RAND_SEED = 1  # glibc's initial seed: the `flite` command's samples
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class FliteConfig:
    library: str = "libflite.so.1"  # the Flite runtime (dlopen lookup); voices load beside it


class _Wave(ctypes.Structure):  # cst_wave (include/cst_wave.h)
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int),
                ("num_samples", ctypes.c_int), ("num_channels", ctypes.c_int),
                ("samples", ctypes.POINTER(ctypes.c_short))]


def flite_text(text: str) -> bytes:
    """``text`` as the C string Flite reads: ASCII, control characters (NUL included) as spaces.
    Non-ASCII text raises DataError (the English front end would spell out the bytes)."""
    if not text.isascii():
        raise DataError(f"Flite speaks ASCII text only, got {text[:40]!r}")
    return _CONTROL.sub(" ", text).encode("ascii")


class Flite:
    """libflite as a speech engine. Loads the library and each voice on first use, so that
    constructing one costs nothing where Flite is not installed (and not needed)."""

    def __init__(self, config: FliteConfig = FliteConfig()) -> None:
        self.config = config
        self._lib: ctypes.CDLL | None = None
        self._libc = ctypes.CDLL(None)  # the process's libc: Flite's rand() state
        self._libc.srand.argtypes = [ctypes.c_uint]
        self._libc.srand.restype = None
        self._voices: dict[str, int] = {}  # name -> cst_voice*, registered once per process
        self._voice_libs: list[ctypes.CDLL] = []  # keep the libraries the voices live in

    # --- voices ---------------------------------------------------------------------------
    def check_voice(self, voice: str) -> None:
        """Raise DataError unless ``voice`` is a training voice that loads: a voice that would
        leak into heldout_synth says why; a missing Flite says how to install it."""
        self._voice(voice)

    def _voice(self, voice: str) -> int:
        if voice in self._voices:
            return self._voices[voice]
        if voice in LEAKING_VOICES:
            raise DataError(f"Flite voice {voice!r} cannot speak training utterances: it "
                            f"{LEAKING_VOICES[voice]}; use {', '.join(TRAIN_VOICES)}")
        if voice not in VOICE_LIBRARIES:
            raise DataError(f"unknown Flite training voice {voice!r}; available: "
                            f"{', '.join(TRAIN_VOICES)}")
        self._library()
        name = VOICE_LIBRARIES[voice]
        try:
            vlib = ctypes.CDLL(name)
        except OSError as e:
            raise DataError(f"cannot load Flite voice {voice!r} ({name}: {e}); "
                            f"{INSTALL_HINT}") from None
        register = getattr(vlib, f"register_cmu_us_{voice}")
        register.argtypes = [ctypes.c_char_p]  # cst_voice *register_X(const char *voxdir)
        register.restype = ctypes.c_void_p
        handle = register(None)
        if not handle:
            raise DataError(f"Flite could not register voice {voice!r}; {INSTALL_HINT}")
        self._voice_libs.append(vlib)
        self._voices[voice] = handle
        return handle

    def _library(self) -> ctypes.CDLL:
        """libflite with the signatures this module calls (pointers as c_void_p)."""
        if self._lib is not None:
            return self._lib
        try:
            lib = ctypes.CDLL(self.config.library)
        except OSError as e:
            raise DataError(f"cannot load the Flite library {self.config.library!r} ({e}); "
                            f"{INSTALL_HINT}") from None
        ptr, text = ctypes.c_void_p, ctypes.c_char_p
        for fn, restype, argtypes in (
                ("flite_init", ctypes.c_int, []),
                ("flite_synth_text", ptr, [text, ptr]),  # (text, cst_voice*) -> cst_utterance*
                ("delete_utterance", None, [ptr]),
                ("utt_relation", ptr, [ptr, text]),  # (utt, name) -> cst_relation*
                ("utt_wave", ptr, [ptr]),  # utt -> cst_wave*
                ("relation_head", ptr, [ptr]),  # -> cst_item*
                ("item_next", ptr, [ptr]),
                ("item_feat_string", text, [ptr, text]),
                ("item_feat_float", ctypes.c_float, [ptr, text]),
                ("ffeature_string", text, [ptr, text]),  # "0" where the path leads nowhere
                ("path_to_item", ptr, [ptr, text])):  # NULL where the path leads nowhere
            getattr(lib, fn).restype = restype
            getattr(lib, fn).argtypes = argtypes
        lib.flite_init()
        self._lib = lib
        return lib

    # --- synthesis ------------------------------------------------------------------------
    def synthesize(self, text: str, voice: str) -> Speech:
        """Speak ``text`` with ``voice``: 16 kHz float32 audio and phones tiling it, in espeak
        mnemonics. Raises DataError for a missing library or voice, a voice that would leak into
        heldout_synth, non-ASCII text or a phone outside ``FESTIVAL_TO_ESPEAK``."""
        handle = self._voice(voice)
        data = flite_text(text)
        lib = self._library()
        self._libc.srand(_RAND_SEED)
        utt = lib.flite_synth_text(data, handle)
        if not utt:
            raise DataError(f"Flite voice {voice} failed to speak {text[:40]!r}")
        try:
            native, rate = self._samples(utt)
            segments = self._segments(utt)
        finally:
            lib.delete_utterance(utt)
        audio = np.clip(resample(pcm16_to_float(native), rate, SAMPLE_RATE_HZ), -1.0, 1.0)
        duration_s = len(audio) / SAMPLE_RATE_HZ
        phones = radio_phones(segments, f"Flite voice {voice}", duration_s)
        speech = Speech(audio=audio, phonemes=_tile(phones, duration_s), text=text)
        check_timings(speech)
        return speech

    def _samples(self, utt: int) -> tuple[np.ndarray, int]:
        """The utterance's wave: (n,) int16 (a copy) and its rate in Hz."""
        wave_ptr = self._library().utt_wave(utt)
        if not wave_ptr:
            raise DataError("Flite returned an utterance without audio")
        wave = ctypes.cast(wave_ptr, ctypes.POINTER(_Wave)).contents
        if wave.num_channels != 1 or wave.sample_rate <= 0:
            raise DataError(f"Flite returned {wave.num_channels}-channel audio at "
                            f"{wave.sample_rate} Hz; expected mono")
        if wave.num_samples <= 0:
            return np.zeros(0, np.int16), wave.sample_rate
        return np.ctypeslib.as_array(wave.samples, (wave.num_samples,)).copy(), wave.sample_rate

    def _segments(self, utt: int) -> list[tuple[str, float, str, int | None]]:
        """(phone, end_s, syllable stress, word index or None) per item of the Segment relation;
        the word index is the segment's word's place in the Word relation."""
        lib = self._library()
        words: dict[int, int] = {}
        item = lib.relation_head(lib.utt_relation(utt, b"Word"))
        while item:
            words[item] = len(words)
            item = lib.item_next(item)
        rows = []
        item = lib.relation_head(lib.utt_relation(utt, b"Segment"))
        while item:
            word = lib.path_to_item(item, b"R:SylStructure.parent.parent.R:Word")
            rows.append((lib.item_feat_string(item, b"name").decode("ascii", "replace"),
                         float(lib.item_feat_float(item, b"end")),
                         lib.ffeature_string(item, b"R:SylStructure.parent.stress").decode(),
                         words.get(word) if word else None))
            item = lib.item_next(item)
        return rows
