"""Scenarios where something is heard while the assistant gives a long reply.

Each starts with a user question whose reply is long (6-14 words), then:
  barge_in_ci: the user says a stop phrase ("hold on": stop), a short non-stop word ("okay":
    keep speaking) or nothing (keep speaking).
  barge_in_echo: the same while the microphone hears the assistant's own voice at a fixed echo
    gain of 0, 0.1 or 1.0 and a 10-60 ms delay (`meta["echo_fixed"]`).
  barge_in_cd: the user asks a relevant follow-up about the creature being described (stop,
    then answer it), the user asks an off-topic question (keep speaking), or a third speaker
    asks a relevant follow-up (keep speaking: only the user may take the turn).
  backchannel: the user says one or two backchannels ("uh-huh"): keep speaking.
  third_speaker: a third voice chats about something else: keep speaking.

`stop_s` of a stopped reply is the end of the interrupting utterance. `meta` says
`should_stop`, `interruption_kind` and the `interruption` text heard (None when nothing is).

When things happen: the interruption's time in the finished dialogue is uniform over all the
times it can have, and its place spreads over the reply (`interject`, `base.place_in_reply`,
which plans the dialogue's delay with it): over a split, neither the question's end nor the
interruption's is near one fixed time.

With a real corpus (`ctx.user_speech`) the user's question and third-speaker chatter are
corpus utterances; the reply is the corpus's when it has a usable one, else the world's long
reply; stop phrases, non-stop words, backchannels and follow-ups keep their words in a
stand-in espeak voice (see `speakers`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_pipelines import timeline, voices, world
from data_pipelines.scenarios import speakers
from data_pipelines.scenarios.base import (Draft, Reply, ScenarioContext, fit_attempts,
                                           lead_in_s, pick_voice, place_in_reply, shrink)
from data_pipelines.scenarios.speakers import Speaker
from data_pipelines.timeline import AudioEvent, Timeline

CI_KINDS = (("trigger", 0.5), ("non_stop", 0.3), ("none", 0.2))
CD_KINDS = (("relevant", 0.5), ("irrelevant", 0.25), ("third_speaker", 0.25))
ECHO_GAINS = (0.0, 0.1, 1.0)
ECHO_DELAY_S = (0.010, 0.060)
THIRD_GAIN = (0.4, 1.0)
# A relevant follow-up comes in the first part of the reply, leaving time to answer it.
FOLLOW_UP_LATEST_FRACTION = 0.5


def draw_kind(rng: np.random.Generator, kinds: tuple[tuple[str, float], ...]) -> str:
    names, weights = zip(*kinds)
    return names[int(rng.choice(len(names), p=np.asarray(weights) / sum(weights)))]


def ask_long(rng: np.random.Generator, ctx: ScenarioContext, attempt: int,
             creatures_only: bool = False, stopped: bool = False
             ) -> tuple[Draft, Speaker, world.QA, Reply]:
    """A new dialogue in which a user asks a question with a long reply: (the draft, the
    user, the question, the planned reply). Later attempts draw shorter replies, unless the
    reply is `stopped` (then its length is moot). `creatures_only`: the reply describes a
    world creature (follow-ups ask about it)."""
    draft = Draft(ctx)
    user = speakers.pick_user(rng, ctx, asks=True)
    longest = world.LONG_MAX_WORDS
    max_words = longest if stopped else shrink(attempt, longest, world.LONG_MIN_WORDS, draft.ctx)
    qa = world.long_qa(rng, max_words=max_words, creatures_only=creatures_only)
    question, qa = speakers.ask(rng, draft, user, qa, lead_in_s(rng, attempt),
                                reply_words=(world.LONG_MIN_WORDS, max_words),
                                about_world=creatures_only)
    return draft, user, qa, draft.plan_reply(qa.answer, question.end_s(ctx.sample_rate))


def interject(rng: np.random.Generator, draft: Draft, reply: Reply, role: str, kind: str,
              utterance: voices.Utterance, gain: float = 1.0, latest_fraction: float = 1.0,
              stops: bool = False, after_s: float = 0.0, plan_delay: bool = True
              ) -> AudioEvent:
    """`utterance` is heard while `reply` is being spoken; returns the event. Its time in
    the finished dialogue is drawn uniformly, the draft's delay with it (`place_in_reply`:
    `stops` when the reply stops at its end, `after_s` seconds to fit after), unless
    `plan_delay` is False (more turns follow: the delay is drawn at the end)."""
    start_s = place_in_reply(rng, reply, utterance.duration_s, latest_fraction,
                             draft=draft if plan_delay else None, stops=stops,
                             after_s=after_s)
    return draft.hear(role, kind, utterance, start_s, gain)


def qa_meta(qa: world.QA) -> dict[str, Any]:
    return dict(question=qa.question, answer=qa.answer, topic=qa.topic)


def _context_independent(rng, ctx: ScenarioContext, attempt: int, kind: str, echo: bool,
                         scenario: str) -> Timeline:
    draft, user, qa, reply = ask_long(rng, ctx, attempt, stopped=kind == "trigger")
    meta = dict(qa_meta(qa), should_stop=kind == "trigger", interruption_kind=kind,
                interruption=None)
    stop_s = None
    if kind != "none":
        text = world.interruption(rng) if kind == "trigger" else world.non_stop_word(rng)
        event = interject(rng, draft, reply, timeline.USER, kind, user.say(text),
                          stops=kind == "trigger")
        meta["interruption"] = text
        if kind == "trigger":
            stop_s = event.end_s(ctx.sample_rate)
    draft.speak(reply, stop_s=stop_s)
    echo_gain = echo_delay_s = 0.0
    if echo:
        echo_gain = ECHO_GAINS[int(rng.integers(len(ECHO_GAINS)))]
        echo_delay_s = float(rng.uniform(*ECHO_DELAY_S))
        meta.update(echo_fixed=True, echo_gain=echo_gain)
    return draft.finish(rng, scenario, world.PROMPT_DIALOGUE, meta, echo_gain=echo_gain,
                        echo_delay_s=echo_delay_s)


def barge_in_ci(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    kind = draw_kind(rng, CI_KINDS)  # once, so that retries to fit do not skew the mixture
    return fit_attempts(
        "barge_in_ci",
        lambda rng, ctx, i: _context_independent(rng, ctx, i, kind, False, "barge_in_ci"),
        rng, ctx)


def barge_in_echo(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    kind = draw_kind(rng, CI_KINDS)
    return fit_attempts(
        "barge_in_echo",
        lambda rng, ctx, i: _context_independent(rng, ctx, i, kind, True, "barge_in_echo"),
        rng, ctx)


def barge_in_cd(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    kind = draw_kind(rng, CD_KINDS)  # once, so that retries to fit do not skew the mixture

    def attempt(rng, ctx, i):
        draft, user, qa, reply = ask_long(rng, ctx, i, creatures_only=True,
                                          stopped=kind == "relevant")
        follow = world.follow_up_qa(rng, qa.topic, max_words=shrink(i, 12, 8, ctx))
        meta = dict(qa_meta(qa), should_stop=kind == "relevant", interruption_kind=kind)
        if kind == "irrelevant":
            text = world.irrelevant_question(rng, max_words=shrink(i, 6, 4, ctx))
            interject(rng, draft, reply, timeline.USER, kind, user.say(text))
            draft.speak(reply)
        elif kind == "third_speaker":
            # A scripted follow-up: an espeak third voice, also with a corpus.
            text = follow.question
            third = pick_voice(rng, ctx.third_voices)
            gain = float(rng.uniform(*THIRD_GAIN))
            interject(rng, draft, reply, timeline.THIRD, kind, ctx.synth.say(text, third),
                      gain=gain)
            draft.speak(reply)
        else:
            text = follow.question
            answer_s = ctx.synth.say(follow.answer, ctx.assistant_voice).duration_s
            event = interject(rng, draft, reply, timeline.USER, kind, user.say(text),
                              latest_fraction=FOLLOW_UP_LATEST_FRACTION, stops=True,
                              after_s=speakers.reply_latency_s(ctx) + answer_s + ctx.block_s)
            end_s = event.end_s(ctx.sample_rate)
            draft.speak(reply, stop_s=end_s)
            draft.speak(draft.plan_reply(follow.answer, end_s))
            meta["follow_up_answer"] = follow.answer
        meta["interruption"] = text
        return draft.finish(rng, "barge_in_cd", world.PROMPT_DIALOGUE, meta)

    return fit_attempts("barge_in_cd", attempt, rng, ctx)


def backchannel(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    def attempt(rng, ctx, i):
        draft, user, qa, reply = ask_long(rng, ctx, i)
        said = []
        first = world.backchannel(rng)
        event = interject(rng, draft, reply, timeline.USER, "backchannel", user.say(first),
                          latest_fraction=0.5)
        said.append(first)
        second = world.backchannel(rng)
        start_s = event.end_s(ctx.sample_rate) + float(rng.uniform(0.3, 0.8))
        second_said = user.say(second)
        end_s = start_s + second_said.duration_s
        if rng.random() < 0.5 and end_s < reply.speech_end_s - 0.3:
            draft.hear(timeline.USER, "backchannel", second_said, start_s)
            said.append(second)
        draft.speak(reply)
        meta = dict(qa_meta(qa), should_stop=False, interruption_kind="backchannel",
                    interruption=first, backchannels=said)
        return draft.finish(rng, "backchannel", world.PROMPT_DIALOGUE, meta)

    return fit_attempts("backchannel", attempt, rng, ctx)


def third_speaker(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    def attempt(rng, ctx, i):
        draft, user, qa, reply = ask_long(rng, ctx, i)
        text = world.chatter(rng, max_words=shrink(i, 8, 3, ctx))
        # The chatter starts while the assistant speaks and may run on after it finishes.
        start_s = float(rng.uniform(reply.speech_start_s + 0.25, reply.speech_end_s - 0.5))
        third = speakers.pick_third(rng, ctx, user)
        gain = float(rng.uniform(*THIRD_GAIN))
        chatter = draft.hear(timeline.THIRD, "chatter",
                             third.line(rng, text, speakers.room_s(ctx, start_s)), start_s,
                             gain=gain)
        draft.speak(reply)
        meta = dict(qa_meta(qa), should_stop=False, interruption_kind="third_speaker",
                    interruption=chatter.text)
        return draft.finish(rng, "third_speaker", world.PROMPT_DIALOGUE, meta)

    return fit_attempts("third_speaker", attempt, rng, ctx)
