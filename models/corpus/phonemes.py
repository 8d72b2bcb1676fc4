"""espeak-ng phoneme symbols: the timed ``Phone`` record and what each symbol means.

espeak-ng names phonemes with ASCII mnemonics (``'aI``, ``tS``, ``3:``...). This module maps them
to two small vocabularies:
- visemes (``models.corpus.visemes``), the mouth shapes that drive the face, and
- ARPAbet, the 39 phonemes of General American English (CMU dictionary set), used only to check
  that a corpus covers every English phoneme.

Unknown symbols (other dialects, rare allophones) fall back by rules, never by raising: a new
espeak release must not break corpus generation.
"""

from __future__ import annotations

from dataclasses import dataclass

PAUSE = "_"  # our single silence symbol; espeak's "_", "_:", "_!" ... all become this


@dataclass(frozen=True)
class Phone:
    """One phoneme with its time span in the utterance's audio (seconds from the first sample)."""

    symbol: str  # espeak mnemonic without stress marks, or PAUSE
    start_s: float
    end_s: float
    stressed: bool = False  # carries primary lexical stress (vowels only)
    word_index: int = -1  # 0-based word in the text; -1 for pauses

    @property
    def centre_s(self) -> float:
        return 0.5 * (self.start_s + self.end_s)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_json(self) -> dict:
        return {"symbol": self.symbol, "start_s": round(self.start_s, 6),
                "end_s": round(self.end_s, 6), "stressed": self.stressed,
                "word_index": self.word_index}

    @staticmethod
    def from_json(d: dict) -> Phone:
        return Phone(d["symbol"], float(d["start_s"]), float(d["end_s"]), bool(d["stressed"]),
                     int(d["word_index"]))


# espeak mnemonic -> viseme(s). Two visemes = a glide (diphthong or r/l-coloured vowel): the first
# target holds for the first part of the phone, the second for the rest.
_VISEMES: dict[str, tuple[str, ...]] = {
    # consonants
    "p": ("PP",), "b": ("PP",), "m": ("PP",),
    "f": ("FF",), "v": ("FF",),
    "T": ("TH",), "D": ("TH",),
    "t": ("DD",), "d": ("DD",), "t#": ("DD",), "d#": ("DD",), "?": ("DD",),
    "n": ("nn",), "n-": ("nn",), "l": ("nn",), "L": ("nn",), "l/": ("nn",), "l#": ("nn",),
    "k": ("kk",), "g": ("kk",), "N": ("kk",), "x": ("kk",), "h": ("kk",), "j": ("I",),
    "tS": ("CH",), "dZ": ("CH",), "S": ("CH",), "Z": ("CH",),
    "s": ("SS",), "z": ("SS",),
    "r": ("RR",), "r-": ("RR",), "R": ("RR",), "w": ("U",), "W": ("U",),
    # monophthongs
    "a": ("aa",), "aa": ("aa",), "A:": ("aa",), "A": ("aa",), "V": ("aa",), "0": ("O",),
    "O:": ("O",), "O": ("O",), "E": ("E",), "e": ("E",), "E2": ("E",), "E3": ("E",),
    "@": ("E",), "@2": ("E",), "@5": ("E",), "@-": ("E",), "a#": ("E",), "3": ("RR",),
    "3:": ("RR",), "I": ("I",), "I#": ("I",), "I2": ("I",), "i": ("I",), "i:": ("I",),
    "U": ("U",), "u:": ("U",), "u": ("U",),
    # glides
    "eI": ("E", "I"), "aI": ("aa", "I"), "aI@": ("aa", "E"), "aI3": ("aa", "RR"),
    "aU": ("aa", "U"), "aU@": ("aa", "E"), "oU": ("O", "U"), "@U": ("E", "U"), "OI": ("O", "I"),
    "i@": ("I", "E"), "i@3": ("I", "RR"), "e@": ("E", "E"), "U@": ("U", "E"), "A@": ("aa", "RR"),
    "O@": ("O", "RR"), "o@": ("O", "RR"), "@L": ("E", "nn"),
}

_VOWEL_VISEMES = frozenset({"aa", "E", "I", "O", "U"})
_VOWEL_LETTERS = frozenset("aeiouAEIOUV03@")

# espeak mnemonic -> ARPAbet phoneme(s), for coverage checks only.
_ARPABET: dict[str, tuple[str, ...]] = {
    "p": ("P",), "b": ("B",), "t": ("T",), "t#": ("T",), "d": ("D",), "d#": ("D",),
    "k": ("K",), "g": ("G",), "f": ("F",), "v": ("V",), "T": ("TH",), "D": ("DH",),
    "s": ("S",), "z": ("Z",), "S": ("SH",), "Z": ("ZH",), "h": ("HH",), "tS": ("CH",),
    "dZ": ("JH",), "m": ("M",), "n": ("N",), "n-": ("N",), "N": ("NG",), "l": ("L",),
    "L": ("L",), "r": ("R",), "r-": ("R",), "w": ("W",), "j": ("Y",),
    "A:": ("AA",), "0": ("AA",), "aa": ("AA",), "A@": ("AA", "R"), "a": ("AE",),
    "V": ("AH",), "@": ("AH",), "a#": ("AH",), "@-": ("AH",), "@2": ("AH",), "@5": ("AH",),
    "@L": ("AH", "L"), "O:": ("AO",), "O": ("AO",), "O@": ("AO", "R"), "o@": ("AO", "R"),
    "aU": ("AW",), "aU@": ("AW", "ER"), "aI": ("AY",), "aI@": ("AY", "ER"), "aI3": ("AY", "ER"),
    "E": ("EH",), "e": ("EH",), "e@": ("EH", "R"), "3:": ("ER",), "3": ("ER",), "eI": ("EY",),
    "I": ("IH",), "I#": ("IH",), "I2": ("IH",), "i@": ("IH", "R"), "i@3": ("IH", "ER"),
    "i:": ("IY",), "i": ("IY",), "oU": ("OW",), "@U": ("OW",), "OI": ("OY",), "U": ("UH",),
    "U@": ("UH", "R"), "u:": ("UW",), "u": ("UW",),
}

#: The 39 phonemes of General American English (CMU pronouncing dictionary set).
ARPABET: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW",
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH",
    "T", "TH", "V", "W", "Y", "Z", "ZH",
)


def is_pause(symbol: str) -> bool:
    return symbol.startswith("_") or symbol == ""


def clean_symbol(symbol: str) -> str:
    """Strip stress/length marks espeak may attach: ``'aI`` -> ``aI``; any pause -> PAUSE."""
    s = symbol.strip().lstrip("',%=")
    return PAUSE if is_pause(s) else s


def _lookup(table: dict[str, tuple[str, ...]], symbol: str) -> tuple[str, ...] | None:
    s = clean_symbol(symbol)
    if s in table:
        return table[s]
    trimmed = s.rstrip(":#-/0123456789;")  # dialect suffixes: "o:", "e#", "l/2" ...
    return table.get(trimmed) or table.get(trimmed[:1])


def is_known(symbol: str) -> bool:
    """True for pauses and for symbols with their own entry in both the viseme and the ARPAbet
    table, i.e. that no fallback rule has to guess (other synthesisers' phone maps check this)."""
    s = clean_symbol(symbol)
    return is_pause(s) or (s in _VISEMES and s in _ARPABET)


def visemes_of(symbol: str) -> tuple[str, ...]:
    """Viseme class(es) of an espeak symbol: ("sil",) for pauses, 1 or 2 names otherwise."""
    if is_pause(clean_symbol(symbol)):
        return ("sil",)
    found = _lookup(_VISEMES, symbol)
    if found:
        return found
    return ("E",) if any(c in _VOWEL_LETTERS for c in symbol) else ("kk",)


def is_vowel(symbol: str) -> bool:
    """True for vowels and diphthongs (the syllable nuclei that open the jaw)."""
    s = clean_symbol(symbol)
    if is_pause(s) or s in ("j", "w", "r", "r-", "R", "W"):
        return False
    return visemes_of(s)[0] in _VOWEL_VISEMES


def arpabet_of(symbol: str) -> tuple[str, ...]:
    """ARPAbet phoneme(s) of an espeak symbol; () for pauses and unknown symbols."""
    if is_pause(clean_symbol(symbol)):
        return ()
    return _lookup(_ARPABET, symbol) or ()
