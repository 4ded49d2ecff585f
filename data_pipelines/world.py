"""The embedded world: a small English domain a few-million-parameter model can learn on a CPU.

Everything the scenario generators say comes from here, so this module is also the text corpus
the tokenizer is trained on (`all_texts`). It holds:
  * arithmetic: "what is three plus four" -> "seven" (operands zero to ten, spelled out);
  * facts about eight invented creatures (color, size, food, home, legs, hobby):
    "what color is the zorb" -> "the zorb is blue"; short answers are 1-6 words;
  * long replies (6-14 words) that leave time to be interrupted: descriptions, little stories
    and counting ("count from two to nine" -> "two three four five six seven eight nine");
  * relevant follow-ups about the creature being talked about ("what does it eat"), which
    need the dialogue context to answer, and irrelevant off-topic questions;
  * context-independent interruptions ("stop", "hold on", ... ten phrases), short words that
    must not stop the assistant ("yes", "okay", ...), backchannels ("uh-huh", ... seven),
    third-speaker chatter, enrolment phrases ("my name is anna") and sentences to read aloud;
  * the task prompts (text before block 0; they contain ':' and are never spoken).

Every spoken text passes `voices.check_sayable` and is written so that espeak-ng gives one word
event per word: espeak joins some pairs into one event ("in the", "of the", "for a", ...), so
the templates avoid them (tests synthesize every text to check).

Train vs eval: the knowledge and the phrasings are shared by both splits (an evaluation model
must know the answers, and a model this small does not generalise to unseen phrasings, so a
held-out phrasing would measure only that). The evaluation split differs by voice: its users
and third speakers speak with held-out voices (`voices.voice_sets(...).eval_user` and
`.eval_third`: families of variants nobody uses in training, at pitches and rates of their
own). All sampling is deterministic given a `numpy.random.Generator`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
           "eighteen", "nineteen", "twenty")
MAX_OPERAND = 10
SHORT_MAX_WORDS = 6  # the longest short answer
LONG_MIN_WORDS, LONG_MAX_WORDS = 6, 14  # long replies, interruptible


@dataclasses.dataclass(frozen=True)
class Creature:
    name: str
    color: str
    size: str
    food: str
    home: str  # a place phrase: "near the lake"
    legs: int
    hobby: str  # a verb: "the zorb likes to swim"


CREATURES = (
    Creature("zorb", "blue", "small", "plums", "near the lake", 4, "swim"),
    Creature("blick", "red", "big", "seeds", "by the river", 2, "sing"),
    Creature("florp", "green", "tiny", "leaves", "under the bridge", 6, "dig"),
    Creature("quib", "yellow", "huge", "fish", "at the beach", 8, "jump"),
    Creature("wug", "purple", "small", "honey", "near the cave", 4, "sleep"),
    Creature("dax", "orange", "big", "berries", "under the oak", 2, "climb"),
    Creature("tove", "pink", "tiny", "nuts", "by the tower", 6, "dance"),
    Creature("glim", "gray", "huge", "bread", "near the swamp", 8, "hide"),
)
CREATURE_NAMES = tuple(c.name for c in CREATURES)

# Context-independent barge-in: ten phrases that always stop the assistant.
INTERRUPTIONS = ("stop", "wait", "hold on", "be quiet", "stop talking", "wait a second",
                 "hang on", "please stop", "that is enough", "excuse me")
# Short words heard while the assistant speaks that must not stop it.
NON_STOP_WORDS = ("yes", "okay", "sure", "good", "nice", "fine", "great")
BACKCHANNELS = ("uh-huh", "mm-hmm", "right", "i see", "yeah", "oh really", "got it")
# Off-topic questions: not about the world, so not a reason to stop a reply.
IRRELEVANT_QUESTIONS = (
    "did you lock the front door", "where are my keys", "is it going to rain today",
    "what time is the bus", "did you feed the cat", "who left the window open",
    "have you seen my phone", "can you pass the salt", "is the shop still open",
    "do we have any milk",
)
# Unrelated third-speaker chatter.
CHATTER = (
    "the bus was late this morning", "i will call you back later", "my phone is almost dead",
    "we need more milk", "the game starts at seven", "i left my bag at home",
    "it is cold outside today", "the kids are playing outside", "dinner is almost ready",
    "i think the shop is closed", "let us meet after lunch", "the train is very full today",
)
NAMES = ("anna", "ben", "clara", "david", "emma", "frank", "grace", "henry")
ENROLMENT_TEMPLATES = ("my name is {name}", "hello, my name is {name}", "this is {name} speaking",
                       "hi, i am {name}")

# Task prompts (text before block 0). Dialogue scenarios share one prompt so that the prompt
# never tells the model which dynamics (barge-in, backchannel, ...) to expect.
PROMPT_ASR = "transcribe"
PROMPT_ENHANCE = "repeat what you hear clean"
PROMPT_TARGET = "repeat only the first speaker"
PROMPT_DIALOGUE = "answer the user"
READ_ALOUD_PREFIX = "read aloud: "
READ_ALOUD_MAX_WORDS = 8  # keeps the whole prompt well under ~16 tokens


@dataclasses.dataclass(frozen=True)
class QA:
    """A question and its one correct reply."""

    question: str
    answer: str
    topic: str  # a creature name, "arithmetic" or "counting"
    attribute: str  # what is asked: plus, minus, color, ..., describe, count, ...

    @property
    def answer_words(self) -> int:
        return len(self.answer.split())


# ---- enumerations (the whole world, computed once) ----------------------------------------

# attribute -> (question about the creature by name, the same by pronoun, answer template)
_FACT_TEMPLATES = {
    "color": ("what color is the {name}", "what color is it", "the {name} is {color}"),
    "size": ("how big is the {name}", "how big is it", "the {name} is {size}"),
    "food": ("what does the {name} eat", "what does it eat", "the {name} eats {food}"),
    "home": ("where does the {name} live", "where does it live", "the {name} lives {home}"),
    "legs": ("how many legs does the {name} have", "how many legs does it have",
             "the {name} has {legs} legs"),
    "hobby": ("what does the {name} like to do", "what does it like to do",
              "the {name} likes to {hobby}"),
}
# attribute -> (question, long answer template)
_LONG_TEMPLATES = {
    "describe": ("tell me about the {name}",
                 "the {name} is a {size} {color} animal that lives {home}"),
    "habits": ("what does the {name} do all day",
               "the {name} likes to {hobby} and it eats {food} every day"),
    "body": ("describe the {name}", "the {name} is {color} and {size} and it has {legs} legs"),
    "story": ("tell me a story about the {name}",
              "one day the {name} found some {food} and ate them all"),
    "what": ("what is the {name}", "the {name} is a {size} {color} animal"),
    "look": ("what does the {name} look like", "the {name} is {color} with {legs} legs"),
}


def _fields(creature: Creature) -> dict[str, str]:
    fields = dataclasses.asdict(creature)
    fields["legs"] = NUMBERS[creature.legs]
    return fields


@functools.cache
def arithmetic_qas() -> tuple[QA, ...]:
    out = []
    for a in range(MAX_OPERAND + 1):
        for b in range(MAX_OPERAND + 1):
            out.append(QA(f"what is {NUMBERS[a]} plus {NUMBERS[b]}", NUMBERS[a + b],
                          "arithmetic", "plus"))
            if b <= a:
                out.append(QA(f"what is {NUMBERS[a]} minus {NUMBERS[b]}", NUMBERS[a - b],
                              "arithmetic", "minus"))
    return tuple(out)


@functools.cache
def fact_qas(pronoun: bool = False) -> tuple[QA, ...]:
    """Short questions about the creatures; `pronoun` asks about "it" (a follow-up)."""
    out = []
    for creature in CREATURES:
        fields = _fields(creature)
        for attribute, (by_name, by_pronoun, answer) in _FACT_TEMPLATES.items():
            question = by_pronoun if pronoun else by_name.format(**fields)
            out.append(QA(question, answer.format(**fields), creature.name, attribute))
    return tuple(out)


@functools.cache
def long_qas() -> tuple[QA, ...]:
    """Questions with 6-14 word replies: creature descriptions and counting."""
    out = []
    for creature in CREATURES:
        fields = _fields(creature)
        for attribute, (question, answer) in _LONG_TEMPLATES.items():
            out.append(QA(question.format(**fields), answer.format(**fields), creature.name,
                          attribute))
    for first in range(1, 6):
        for length in range(LONG_MIN_WORDS, LONG_MAX_WORDS + 1):
            last = first + length - 1
            if last < len(NUMBERS):
                out.append(QA(f"count from {NUMBERS[first]} to {NUMBERS[last]}",
                              " ".join(NUMBERS[first:last + 1]), "counting", "count"))
    for top in range(LONG_MIN_WORDS, LONG_MAX_WORDS + 1):
        out.append(QA(f"count down from {NUMBERS[top]}", " ".join(NUMBERS[top:0:-1]),
                      "counting", "count_down"))
    return tuple(out)


def short_qas() -> tuple[QA, ...]:
    return arithmetic_qas() + fact_qas()


def statements() -> tuple[str, ...]:
    """Declarative sentences: fact answers and worked sums ("three plus four is seven")."""
    facts = tuple(qa.answer for qa in fact_qas())
    sums = tuple(f"{qa.question.removeprefix('what is ')} is {qa.answer}"
                 for qa in arithmetic_qas())
    return facts + sums


def enrolments() -> tuple[str, ...]:
    return tuple(t.format(name=n) for n in NAMES for t in ENROLMENT_TEMPLATES)


def read_aloud_prompt(text: str) -> str:
    return READ_ALOUD_PREFIX + text


@functools.cache
def spoken_texts() -> tuple[str, ...]:
    """Every text any voice (user, third speaker or assistant) can say, without duplicates."""
    texts: list[str] = []
    for qa in arithmetic_qas() + fact_qas() + fact_qas(pronoun=True) + long_qas():
        texts += [qa.question, qa.answer]
    texts += statements() + enrolments()
    texts += INTERRUPTIONS + NON_STOP_WORDS + BACKCHANNELS + IRRELEVANT_QUESTIONS + CHATTER
    return tuple(dict.fromkeys(texts))


def prompt_texts() -> tuple[str, ...]:
    reads = tuple(read_aloud_prompt(s) for s in read_aloud_sentences())
    return (PROMPT_ASR, PROMPT_ENHANCE, PROMPT_TARGET, PROMPT_DIALOGUE) + reads


def all_texts() -> list[str]:
    """Every sentence the world can produce, spoken texts and prompts: the tokenizer corpus."""
    return list(spoken_texts() + prompt_texts())


def read_aloud_sentences() -> tuple[str, ...]:
    return tuple(s for s in statements() if len(s.split()) <= READ_ALOUD_MAX_WORDS)


# ---- sampling ------------------------------------------------------------------------------


def pick(rng: np.random.Generator, items: Sequence):
    """One item, uniformly (an index draw, so strings stay `str` and not `numpy.str_`)."""
    if not items:
        raise ValueError("pick from an empty collection")
    return items[int(rng.integers(len(items)))]


def _pick_short(rng, items: Sequence[str], max_words: int) -> str:
    """One of `items` of at most `max_words` words (or one of the shortest there are)."""
    limit = max(max_words, min(len(t.split()) for t in items))
    return pick(rng, [t for t in items if len(t.split()) <= limit])


def arithmetic_qa(rng: np.random.Generator) -> QA:
    return pick(rng, arithmetic_qas())


def fact_qa(rng: np.random.Generator, topic: str | None = None,
            exclude: str | None = None) -> QA:
    """A short question about one creature (`topic`, or any), not asking `exclude`."""
    items = [qa for qa in fact_qas() if topic in (None, qa.topic) and qa.attribute != exclude]
    return pick(rng, items)


def _words(qa: QA) -> int:
    return len(qa.question.split()) + qa.answer_words


def short_qa(rng: np.random.Generator, max_words: int | None = None) -> QA:
    """Arithmetic or a creature fact, half and half; `max_words` bounds question + answer."""
    facts = fact_qas()
    if max_words is not None:
        facts = [qa for qa in facts if _words(qa) <= max_words]
    return arithmetic_qa(rng) if rng.random() < 0.5 or not facts else pick(rng, facts)


def long_qa(rng: np.random.Generator, max_words: int = LONG_MAX_WORDS,
            creatures_only: bool = False) -> QA:
    """A question with a long reply of at most `max_words` words (or the shortest there are)."""
    pool = [qa for qa in long_qas() if not creatures_only or qa.topic in CREATURE_NAMES]
    limit = max(max_words, min(qa.answer_words for qa in pool))
    return pick(rng, [qa for qa in pool if qa.answer_words <= limit])


def follow_up_qa(rng: np.random.Generator, topic: str, exclude: str | None = None,
                 max_words: int | None = None) -> QA:
    """A relevant follow-up about creature `topic`: by pronoun ("what does it eat") or name,
    not asking `exclude`; `max_words` bounds question + answer (the pronoun forms are shorter).
    """
    if topic not in CREATURE_NAMES:
        raise ValueError(f"world: follow-ups are about creatures {CREATURE_NAMES}, not {topic!r}")
    pronoun = rng.random() < 0.7
    for pool in (fact_qas(pronoun=pronoun), fact_qas(pronoun=True)):
        items = [qa for qa in pool if qa.topic == topic and qa.attribute != exclude
                 and (max_words is None or _words(qa) <= max_words)]
        if items:
            return pick(rng, items)
    raise ValueError(f"world: no follow-up about {topic!r} of at most {max_words} words")


def interruption(rng: np.random.Generator) -> str:
    return pick(rng, INTERRUPTIONS)


def non_stop_word(rng: np.random.Generator) -> str:
    return pick(rng, NON_STOP_WORDS)


def backchannel(rng: np.random.Generator) -> str:
    return pick(rng, BACKCHANNELS)


def irrelevant_question(rng: np.random.Generator, max_words: int = 12) -> str:
    return _pick_short(rng, IRRELEVANT_QUESTIONS, max_words)


def chatter(rng: np.random.Generator, max_words: int = 12) -> str:
    return _pick_short(rng, CHATTER, max_words)


def enrolment(rng: np.random.Generator) -> str:
    return pick(rng, enrolments())


def read_aloud_sentence(rng: np.random.Generator,
                        max_words: int = READ_ALOUD_MAX_WORDS) -> str:
    return _pick_short(rng, read_aloud_sentences(), max_words)


def utterance(rng: np.random.Generator, max_words: int = 12) -> str:
    """Any sentence a user might say to be transcribed or repeated: a question or a statement."""
    roll = rng.random()
    if roll < 0.35:
        items = [qa.question for qa in short_qas()]
    elif roll < 0.5:
        items = [qa.question for qa in long_qas()]
    elif roll < 0.9:
        items = list(statements())
    else:
        items = list(CHATTER)
    return _pick_short(rng, items, max_words)
