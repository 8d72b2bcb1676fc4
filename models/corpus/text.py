"""Sentences for the corpus, generated from a small grammar and word lists written for this project.

The word lists are chosen so that every one of the 39 General American phonemes (``ARPABET``)
occurs in many words, the rare ones too (ZH: treasure, vision; OY: boy, noise; UH: book, wood).
Sentences mix statements, questions and exclamations, and clauses joined by commas, so that the
speech has short pauses inside utterances as well as sentence breaks. ``make_script`` adds the
leading/trailing silence that ``Speech.padded`` puts into the audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_DURATION_S = 1.5  # whole utterance, silence included
MAX_DURATION_S = 6.0
LEAD_SILENCE_S = (0.2, 0.8)  # uniform range of silence before the speech
TRAIL_SILENCE_S = (0.2, 0.8)

NAMES = ("Judy", "George", "Thelma", "Hugo", "Bridget", "Roy", "Yvonne", "Chuck", "Martha",
         "Owen", "Zelda", "Shawn", "Vera", "Ahmed", "Peggy", "Ethan", "Nora", "Luke")
ADJECTIVES = ("yellow", "quiet", "purple", "rough", "beige", "smooth", "thick", "cheap", "huge",
              "orange", "wooden", "clever", "shiny", "early", "noisy", "usual", "brown", "tiny",
              "pleasant", "gloomy", "royal", "foggy", "curious", "ancient", "thirsty", "warm",
              "pink", "awkward", "gentle", "hungry")
NOUNS = ("treasure", "garage", "vision", "boy", "book", "house", "kitchen", "cheese", "bridge",
         "judge", "mouth", "cloud", "voice", "coin", "sugar", "leisure", "television", "weather",
         "feather", "path", "thumb", "north", "king", "song", "morning", "wolf", "foot", "bird",
         "jacket", "puzzle", "oyster", "window", "tower", "engine", "measure", "village",
         "mirror", "banjo", "cushion", "goose", "pillow", "boat", "chair", "earth", "yacht",
         "zebra", "violin", "ocean", "toy", "machine", "cookie", "hour", "tune", "pear")
VERBS_PAST = ("found", "pushed", "bought", "watched", "measured", "painted", "enjoyed",
              "carried", "joined", "fixed", "heard", "thanked", "wanted", "borrowed", "caught",
              "showed", "noticed", "pulled", "chose", "loved", "visited", "hid", "threw",
              "stood behind", "looked at", "talked about", "thought about", "took")
VERBS_BASE = ("find", "push", "buy", "watch", "measure", "paint", "enjoy", "carry", "join",
              "fix", "hear", "choose", "borrow", "catch", "show", "throw", "bring", "hug")
ADVERBS = ("quickly", "usually", "loudly", "together", "with joy", "on purpose", "at noon",
           "in the evening", "by the shore", "without a word", "very gently", "this year",
           "over there", "at the zoo", "in the garage", "through the fog")
TIMES = ("Yesterday", "Later that month", "On Thursday", "Every morning", "Last June",
         "Sometimes", "Now and then", "Before the show", "After lunch", "Usually")
DETERMINERS = ("the", "a", "my", "your", "their", "this", "that", "our", "his", "her")
CONNECTORS = ("and", "but", "so", "while", "because", "although")
PRONOUNS = ("she", "he", "they", "we", "I", "you")  # lower case: capitalised when first


def _article(det: str, word: str) -> str:
    vowel_sound = word[0] in "aeio" or (word[0] == "u" and not word.startswith("us"))
    return "an" if det == "a" and vowel_sound else det


def _noun_phrase(rng: np.random.Generator) -> str:
    words = [str(rng.choice(NOUNS))]
    if rng.uniform() < 0.5:
        words.insert(0, str(rng.choice(ADJECTIVES)))
    return " ".join([_article(str(rng.choice(DETERMINERS)), words[0]), *words])


def _clause(rng: np.random.Generator) -> str:
    subject = str(rng.choice(NAMES)) if rng.uniform() < 0.5 else str(rng.choice(PRONOUNS))
    out = f"{subject} {rng.choice(VERBS_PAST)} {_noun_phrase(rng)}"
    if rng.uniform() < 0.4:
        out += f" {rng.choice(ADVERBS)}"
    return out


def sentence(rng: np.random.Generator, target_words: int = 8) -> str:
    """One sentence of about ``target_words`` words (statement, question or exclamation)."""
    kind = rng.uniform()
    if kind < 0.15:
        s = f"Did {rng.choice(NAMES)} {rng.choice(VERBS_BASE)} {_noun_phrase(rng)}"
        s += f" {rng.choice(ADVERBS)}?" if rng.uniform() < 0.5 else "?"
        return s
    if kind < 0.22:
        thing = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
        return f"What {_article('a', thing)} {thing} that was!"
    s = _clause(rng)
    if rng.uniform() < 0.3:
        s = f"{rng.choice(TIMES)}, {s}"
    while len(s.split()) < target_words - 2:
        s += f", {rng.choice(CONNECTORS)} {_clause(rng)}"
    return s[0].upper() + s[1:] + "."  # pronouns start clauses in lower case


def utterance_text(rng: np.random.Generator, target_words: int) -> str:
    """One or two sentences totalling about ``target_words`` words."""
    if target_words >= 9 and rng.uniform() < 0.35:
        first = int(rng.integers(4, target_words - 3))
        return f"{sentence(rng, first)} {sentence(rng, target_words - first)}"
    return sentence(rng, target_words)


@dataclass(frozen=True)
class Script:
    """What to say and how much silence to put around it."""

    text: str
    lead_silence_s: float
    trail_silence_s: float


def make_script(rng: np.random.Generator, rate_wpm: float) -> Script:
    """A script whose spoken length should land in [MIN_DURATION_S, MAX_DURATION_S] at this
    speaking rate (the caller checks the real duration and asks again if it does not)."""
    lead, trail = rng.uniform(*LEAD_SILENCE_S), rng.uniform(*TRAIL_SILENCE_S)
    speech_s = rng.uniform(max(0.6, MIN_DURATION_S - lead - trail),
                           MAX_DURATION_S - lead - trail - 0.6)
    words = max(3, int(round(speech_s * rate_wpm / 60.0 * 0.85)))  # pauses take time too
    return Script(utterance_text(rng, words), float(round(lead, 4)), float(round(trail, 4)))
