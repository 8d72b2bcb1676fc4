"""Speech with phoneme timings from espeak-ng, through its C API (ctypes).

espeak-ng keeps all of its state in globals: one ``Espeak`` per *process* (``engine()`` returns the
process's instance). Corpus workers are separate processes for that reason; never share an engine
between threads.

Synthesis is synchronous: espeak calls our callback with blocks of 16-bit samples at 22050 Hz and
the events inside them. Phoneme events (asked for with ``espeakINITIALIZE_PHONEME_EVENTS``) carry
the mnemonic phoneme name in ``id.string`` and their absolute sample position. Lexical stress is
not in the events, so it is read from ``espeak_TextToPhonemes`` (the same mnemonics with ``'`` on
primary-stressed vowels) and aligned onto the timed phones.
"""

from __future__ import annotations

import ctypes
import difflib
import logging
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.audio import pcm16_to_float, resample
from models.corpus.phonemes import PAUSE, Phone, clean_symbol, is_pause
from models.errors import DataError

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000  # the project's audio rate (DESIGN §6)
DEFAULT_LIBRARY = "libespeak-ng.so.1"
INSTALL_HINT = "install espeak-ng: apt-get install espeak-ng libespeak-ng1"

# speak_lib.h constants (espeak-ng 1.50+; the ABI has been stable since eSpeak 1.48)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 3, 4, 7
_EE_OK = 0




class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


class _Voice(ctypes.Structure):  # espeak_VOICE
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p),
                ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte),
                ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte),
                ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


@dataclass(frozen=True)
class VoiceSpec:
    """An espeak-ng voice: language voice + optional variant + prosody. Equal specs sound equal."""

    voice: str = "en-us"  # espeak voice name: "en-us", "en", "en-gb-x-rp", ...
    variant: str | None = None  # espeak variant file: "f3", "m2", "klatt" ... (None = default)
    pitch: int = 50  # base pitch, espeak scale 0..99
    pitch_range: int = 50  # intonation range, 0 (monotone)..99
    rate_wpm: int = 175  # words per minute, 80..450
    word_gap_10ms: int = 0  # extra pause between words, in units of 10 ms

    @property
    def timbre(self) -> tuple[str, str | None]:
        """What talkers who "share a voice" share: the espeak voice and variant."""
        return self.voice, self.variant

    @property
    def espeak_name(self) -> str:
        return self.voice + (f"+{self.variant}" if self.variant else "")

    def to_json(self) -> dict:
        return {"voice": self.voice, "variant": self.variant, "pitch": self.pitch,
                "pitch_range": self.pitch_range, "rate_wpm": self.rate_wpm,
                "word_gap_10ms": self.word_gap_10ms}


@dataclass(frozen=True)
class Speech:
    """Synthesised speech: mono float32 audio in [-1, 1] and phones that tile [0, duration]."""

    audio: np.ndarray  # (N,) float32
    phonemes: list[Phone]
    sample_rate: int = SAMPLE_RATE_HZ
    text: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    def padded(self, lead_s: float, trail_s: float) -> Speech:
        """Add silence before and after; timings shift by the (sample-rounded) lead."""
        n_lead, n_trail = round(lead_s * self.sample_rate), round(trail_s * self.sample_rate)
        audio = np.concatenate([np.zeros(n_lead, np.float32), self.audio,
                                np.zeros(n_trail, np.float32)])
        shift = n_lead / self.sample_rate
        phones = [replace(p, start_s=p.start_s + shift, end_s=p.end_s + shift)
                  for p in self.phonemes]
        phones = _tile(phones, len(audio) / self.sample_rate)
        return replace(self, audio=audio, phonemes=phones)


def _tile(phones: list[Phone], duration_s: float) -> list[Phone]:
    """Make phones cover [0, duration] without gaps: pad with pauses, merge adjacent pauses."""
    out: list[Phone] = []

    def push(p: Phone) -> None:
        if p.end_s <= p.start_s:
            return
        if out and is_pause(out[-1].symbol) and is_pause(p.symbol):
            out[-1] = replace(out[-1], end_s=p.end_s)
        else:
            out.append(p)

    t = 0.0
    for p in phones:
        if p.start_s > t:
            push(Phone(PAUSE, t, p.start_s))
        push(replace(p, start_s=max(p.start_s, t)))
        t = max(t, p.end_s)
    if duration_s > t:
        push(Phone(PAUSE, t, duration_s))
    return out


def check_timings(speech: Speech, tol_s: float = 1e-6) -> None:
    """Raise DataError unless phones are contiguous, monotonic and cover the audio exactly."""
    ph = speech.phonemes
    if not ph:
        raise DataError("espeak-ng returned no phonemes")
    if abs(ph[0].start_s) > tol_s or abs(ph[-1].end_s - speech.duration_s) > tol_s:
        raise DataError(f"phones span {ph[0].start_s:.3f}..{ph[-1].end_s:.3f} s but the audio "
                          f"lasts {speech.duration_s:.3f} s")
    for a, b in zip(ph, ph[1:], strict=False):
        if b.start_s < a.start_s or abs(b.start_s - a.end_s) > tol_s or a.end_s <= a.start_s:
            raise DataError(f"non-monotonic phone timings: {a} then {b}")


class Espeak:
    """The process's espeak-ng engine. Construct once per process (see ``engine()``)."""

    def __init__(self, library: str = DEFAULT_LIBRARY) -> None:
        try:
            self._lib = ctypes.CDLL(library)
        except OSError as e:
            raise DataError(f"cannot load espeak-ng library {library!r} ({e}); "
                              f"{INSTALL_HINT}") from None
        lib = self._lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                              ctypes.c_int]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        self.native_rate_hz = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                    _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if self.native_rate_hz <= 0:
            raise DataError(f"espeak-ng failed to initialise (no voice data?); {INSTALL_HINT}")
        self._samples: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, str]] = []  # (type, sample, number, name)
        self._callback = _SynthCallback(self._on_synth)  # keep a reference: C holds a pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voices: tuple[str, ...] | None = None
        self._current: VoiceSpec | None = None
        self._has_synthesized = False  # see synthesize_isolated

    # --- voices ---------------------------------------------------------------------------
    def voices(self) -> tuple[str, ...]:
        """Names espeak accepts in ``VoiceSpec.voice`` (language tags and voice file names)."""
        if self._voices is None:
            names: set[str] = set()
            arr = self._lib.espeak_ListVoices(None)
            i = 0
            while arr[i]:
                v = arr[i].contents
                names.update(_language_names(v.languages))
                if v.identifier:
                    names.add(os.path.basename(v.identifier.decode()))
                if v.name:
                    names.add(v.name.decode())
                i += 1
            self._voices = tuple(sorted(names))
        return self._voices

    def variants(self) -> tuple[str, ...]:
        data = ctypes.c_char_p()
        self._lib.espeak_Info(ctypes.byref(data))
        folder = Path((data.value or b"").decode()) / "voices" / "!v"
        return tuple(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else ()

    def set_voice(self, spec: VoiceSpec) -> None:
        """Select a voice and its prosody; raise DataError naming alternatives if unknown."""
        if spec == self._current:
            return
        if spec.variant is not None and spec.variant not in self.variants():
            raise DataError(f"unknown espeak-ng voice variant {spec.variant!r}; available "
                              f"e.g. {', '.join(self.variants()[:12])}")
        rc = self._lib.espeak_SetVoiceByName(spec.espeak_name.encode())
        if rc != _EE_OK:
            english = sorted({v.lower() for v in self.voices() if v.startswith("en")})[:12]
            raise DataError(f"unknown espeak-ng voice {spec.espeak_name!r}; available e.g. "
                              f"{', '.join(english)} (espeak-ng --voices lists all)")
        for param, value in ((_PARAM_RATE, spec.rate_wpm), (_PARAM_PITCH, spec.pitch),
                             (_PARAM_RANGE, spec.pitch_range),
                             (_PARAM_WORDGAP, spec.word_gap_10ms)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._current = spec

    # --- synthesis ------------------------------------------------------------------------
    def _on_synth(self, wav, n, events) -> int:  # called by espeak inside espeak_Synth
        if n > 0:
            self._samples.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            name = bytes(e.id.string).split(b"\0")[0].decode("utf-8", "replace") \
                if e.type == _EVENT_PHONEME else ""
            number = e.id.number if e.type == _EVENT_WORD else 0
            self._events.append((e.type, e.sample, number, name))
            i += 1
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: VoiceSpec) -> Speech:
        """Speak ``text``; return 16 kHz float32 audio and phones tiling the audio."""
        self.set_voice(voice)
        self._has_synthesized = True
        self._samples, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        rc = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                    None, None)
        if rc != _EE_OK:
            raise DataError(f"espeak_Synth failed with code {rc} for text {text[:40]!r}")
        native = np.concatenate(self._samples) if self._samples else np.zeros(0, np.int16)
        phones = self._timed_phones(len(native))
        _apply_stress(phones, self.stress_marks(text))
        audio = resample(pcm16_to_float(native), self.native_rate_hz, SAMPLE_RATE_HZ)
        speech = Speech(audio=np.clip(audio, -1.0, 1.0), text=text,
                        phonemes=_tile(phones, len(audio) / SAMPLE_RATE_HZ))
        check_timings(speech)
        return speech

    def synthesize_isolated(self, text: str, voice: VoiceSpec) -> Speech:
        """Like ``synthesize``, but the result depends only on (text, voice), not on history.

        espeak-ng carries state from one utterance to the next (e.g. the phase of its pitch
        flutter), which moves samples and phone boundaries by a few samples. A forked child of a
        process whose engine has never synthesised starts from the same state every time, so
        the output is reproducible whatever was spoken before (about 5 ms per call). POSIX only.
        """
        if self._has_synthesized:
            raise DataError("synthesize_isolated needs an engine that has not synthesised in "
                              "this process; create it in a fresh (spawned) worker")
        # The parent never touches espeak here: after a few hundred voice switches without
        # synthesis, espeak-ng 1.51 drops the first events of the next utterance. The child
        # selects the voice itself (errors come back as DataError) and is thrown away.
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: synthesise, send the result, exit without cleanup handlers
            os.close(read_fd)
            self._current = None
            try:
                payload = pickle.dumps((True, self.synthesize(text, voice)))
            except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
                message = str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}"
                payload = pickle.dumps((False, message))
            with os.fdopen(write_fd, "wb") as f:
                f.write(payload)
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
        if not data:
            raise DataError(f"espeak-ng worker died while speaking {text[:40]!r}")
        ok, value = pickle.loads(data)
        if not ok:
            raise DataError(value)
        return value

    def _timed_phones(self, n_native: int) -> list[Phone]:
        marks: list[tuple[int, str, int]] = []  # (sample, symbol, word_index)
        word = -1
        for etype, sample, number, name in self._events:
            if etype == _EVENT_WORD:
                word = number - 1
            elif etype == _EVENT_PHONEME:
                sym = clean_symbol(name)
                marks.append((sample, sym, -1 if sym == PAUSE else word))
        for (s0, a, _), (s1, b, _) in zip(marks, marks[1:], strict=False):
            if s1 < s0:
                raise DataError(f"espeak-ng phoneme events go back in time: {a}@{s0} {b}@{s1}")
        spoken = [m for m in marks if m[1] != PAUSE]
        if spoken and spoken[0][2] != 0:
            raise DataError("espeak-ng lost the first word's events (first phone "
                              f"{spoken[0][1]!r} has no word); re-create the engine")
        sr = float(self.native_rate_hz)
        ends = [m[0] for m in marks[1:]] + [n_native]
        return [Phone(sym, s / sr, min(e, n_native) / sr, False, w)
                for (s, sym, w), e in zip(marks, ends, strict=True)]

    def stress_marks(self, text: str) -> list[tuple[str, bool]]:
        """(symbol, primary stress) for each phoneme of ``text`` in the current voice."""
        buf = ctypes.create_string_buffer(text.encode("utf-8") + b"\0")
        ptr = ctypes.c_char_p(ctypes.addressof(buf))
        out: list[tuple[str, bool]] = []
        separator = ord("|") << 8  # bits 8..23 of phonememode: a separator between phonemes
        while ptr.value:
            chunk = self._lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, separator)
            for token in (chunk or b"").decode("utf-8", "replace").replace(" ", "|").split("|"):
                if token:
                    out.append((clean_symbol(token), "'" in token))
        return out


def _language_names(ptr: int | None) -> list[str]:
    """Parse espeak_VOICE.languages: (priority byte, NUL-terminated name)*, then a 0 byte."""
    if not ptr:
        return []
    raw = ctypes.cast(ctypes.c_void_p(ptr), ctypes.POINTER(ctypes.c_ubyte))
    names, j = [], 0
    while raw[j] != 0:  # a priority byte; 0 ends the list
        j += 1
        name = bytearray()
        while raw[j] != 0:
            name.append(raw[j])
            j += 1
        names.append(name.decode("utf-8", "replace"))
        j += 1
    return names


def _apply_stress(phones: list[Phone], marks: list[tuple[str, bool]]) -> None:
    """Copy stress from the (untimed) phoneme transcription onto matching timed phones."""
    idx = [i for i, p in enumerate(phones) if not is_pause(p.symbol)]
    timed = [phones[i].symbol for i in idx]
    matcher = difflib.SequenceMatcher(a=timed, b=[m[0] for m in marks], autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            if marks[block.b + k][1]:
                i = idx[block.a + k]
                phones[i] = replace(phones[i], stressed=True)


_ENGINES: dict[str, Espeak] = {}


def engine(library: str = DEFAULT_LIBRARY) -> Espeak:
    """This process's espeak-ng engine (created on first use)."""
    if library not in _ENGINES:
        _ENGINES[library] = Espeak(library)
    return _ENGINES[library]


def synthesize(text: str, voice: VoiceSpec = VoiceSpec(), library: str = DEFAULT_LIBRARY
               ) -> Speech:
    """Convenience: ``engine(library).synthesize(text, voice)``."""
    return engine(library).synthesize(text, voice)
