"""Turn-taking dialogues: one spoken question and answer, and multi-turn exchanges.

qa: the user asks (a short question three times in four, else one with a long reply); the
  assistant answers after the question ends.
pause: the same question, asked in two parts: the user stops for PAUSE_S (0.5-1.5 s) between
  two of its words, then finishes it. The assistant must not take the turn in the pause; it
  answers after the real end. `meta` says `pause_start_s` and `pause_end_s` (the silence
  put in), `question_end_s` (the real end of the turn) and `pause_after_words` (how many
  words come before the pause).
multi_turn: two or three exchanges with one user. A later question may be a follow-up about
  the creature just discussed ("what does it eat"), which needs the earlier turns to answer.
  A long reply may be interrupted by a stop phrase (the assistant stops and the user asks
  again later), by a relevant follow-up (stop, then answer it), or hear a backchannel (keep
  speaking).

With a real corpus (`ctx.user_speech`) each question is one of the corpus user's utterances
(in pause, with the silence cut in at the quietest point near a word boundary),
answered with the corpus reply when it has one and else with the world answer drawn for it;
follow-ups about a creature the assistant talked about, stop phrases and backchannels keep
their words in a stand-in espeak voice (see `speakers`).
"""

from __future__ import annotations

import numpy as np

from data_pipelines import timeline, world
from data_pipelines.scenarios import speakers
from data_pipelines.scenarios.barge_in import draw_kind, interject, qa_meta
from data_pipelines.scenarios.base import (DoesNotFit, Draft, ScenarioContext, fit_attempts,
                                           lead_in_s, pause_s, shrink)
from data_pipelines.scenarios.speakers import Speaker
from data_pipelines.timeline import Timeline

LONG_PROB = 0.25  # questions with a long reply
PAUSE_S = (0.5, 1.5)  # the mid-turn pause of `pause`
FOLLOW_UP_PROB = 0.4  # a later question follows up on the creature just discussed
INTERRUPT_PROB = 0.6  # a long reply in a multi-turn dialogue hears something
MULTI_KINDS = (("trigger", 0.4), ("follow_up", 0.4), ("backchannel", 0.2))
MIN_EXCHANGES, MAX_EXCHANGES = 2, 3


def qa(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    def attempt(rng, ctx, i):
        draft = Draft(ctx)
        user = speakers.pick_user(rng, ctx, asks=True)
        pair = _draw_qa(rng, ctx, i)
        question, pair = speakers.ask(rng, draft, user, pair, lead_in_s(rng, i))
        draft.speak(draft.plan_reply(pair.answer, question.end_s(ctx.sample_rate)))
        return draft.finish(rng, "qa", world.PROMPT_DIALOGUE, qa_meta(pair))

    return fit_attempts("qa", attempt, rng, ctx)


def _draw_qa(rng: np.random.Generator, ctx: ScenarioContext, attempt: int) -> world.QA:
    """qa's question: short three times in four, else one with a long reply (shorter on
    later attempts)."""
    if rng.random() < LONG_PROB:
        return world.long_qa(rng, max_words=shrink(attempt, world.LONG_MAX_WORDS,
                                                   world.LONG_MIN_WORDS, ctx))
    return world.short_qa(rng)


def pause(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    def attempt(rng, ctx, i):
        draft = Draft(ctx)
        user = speakers.pick_user(rng, ctx, asks=True)
        pair = _draw_qa(rng, ctx, i)
        gap_s = float(rng.uniform(*PAUSE_S))
        start_s = lead_in_s(rng, i)
        said, pair = speakers.question(rng, draft, user, pair, start_s, extra_s=gap_s)
        paused, cut_s = speakers.with_pause(rng, said, gap_s)
        question = draft.hear(timeline.USER, "question", paused, start_s)
        draft.speak(draft.plan_reply(pair.answer, question.end_s(ctx.sample_rate)))
        draft.delay(rng)  # now, so that the times in meta are the finished dialogue's
        (question,) = draft.events
        gap_s = (paused.audio.size - said.audio.size) / ctx.sample_rate
        meta = dict(qa_meta(pair), pause_start_s=question.start_s + cut_s,
                    pause_end_s=question.start_s + cut_s + gap_s,
                    question_end_s=question.end_s(ctx.sample_rate),
                    pause_after_words=sum(w.end_s <= cut_s for w in paused.words))
        return draft.finish(rng, "pause", world.PROMPT_DIALOGUE, meta)

    return fit_attempts("pause", attempt, rng, ctx)


def _next_question(rng: np.random.Generator, ctx: ScenarioContext, attempt: int,
                   last: world.QA | None) -> tuple[world.QA, bool]:
    """The next QA and whether it follows up on `last` (its words then matter). Later
    attempts draw shorter exchanges: fewer words, and no long replies."""
    budget = shrink(attempt, 14, 6, ctx)  # words of question + answer
    if (last is not None and last.topic in world.CREATURE_NAMES
            and rng.random() < FOLLOW_UP_PROB and budget >= 8):
        return world.follow_up_qa(rng, last.topic, exclude=last.attribute,
                                  max_words=budget), True
    if rng.random() < LONG_PROB and attempt < ctx.max_attempts // 2:
        return world.long_qa(rng, max_words=shrink(attempt, 12, world.LONG_MIN_WORDS,
                                                    ctx)), False
    return world.short_qa(rng, max_words=budget), False


def _exchange(rng, draft: Draft, attempt: int, user: Speaker, start_s: float,
              last: world.QA | None) -> tuple[list[dict], world.QA, float]:
    """One question and what follows it; returns records, the topic QA and the end time."""
    ctx = draft.ctx
    pair, follows_up = _next_question(rng, ctx, attempt, last)
    if follows_up:  # about what the assistant just said: these words, said by the user
        question = draft.hear(timeline.USER, "question", user.say(pair.question), start_s)
    else:
        question, pair = speakers.ask(rng, draft, user, pair, start_s)
    reply = draft.plan_reply(pair.answer, question.end_s(ctx.sample_rate))
    record = dict(qa_meta(pair), should_stop=False, interruption_kind="none")
    records = [record]
    kind = "none"
    if pair.answer_words >= world.LONG_MIN_WORDS and rng.random() < INTERRUPT_PROB:
        kind = draw_kind(rng, MULTI_KINDS)
        if kind == "follow_up" and pair.topic not in world.CREATURE_NAMES:
            kind = "trigger"
    record["interruption_kind"] = kind
    if kind == "none":
        return records, pair, draft.turn_end_s(draft.speak(reply))
    if kind == "backchannel":
        record["interruption"] = world.backchannel(rng)
        interject(rng, draft, reply, timeline.USER, kind, user.say(record["interruption"]),
                  plan_delay=False)
        return records, pair, draft.turn_end_s(draft.speak(reply))
    record["should_stop"] = True
    if kind == "trigger":
        record["interruption"] = world.interruption(rng)
        event = interject(rng, draft, reply, timeline.USER, kind,
                          user.say(record["interruption"]), plan_delay=False)
        draft.speak(reply, stop_s=event.end_s(ctx.sample_rate))
        return records, pair, event.end_s(ctx.sample_rate)
    follow = world.follow_up_qa(rng, pair.topic)
    record["interruption"] = follow.question
    event = interject(rng, draft, reply, timeline.USER, kind, user.say(follow.question),
                      latest_fraction=0.5, plan_delay=False)
    end_s = event.end_s(ctx.sample_rate)
    draft.speak(reply, stop_s=end_s)
    answer = draft.speak(draft.plan_reply(follow.answer, end_s))
    records.append(dict(qa_meta(follow), should_stop=False, interruption_kind="none"))
    return records, follow, draft.turn_end_s(answer)


def multi_turn(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    def attempt(rng, ctx, i):
        draft = Draft(ctx)
        user = speakers.pick_user(rng, ctx, asks=True)
        wanted = int(rng.integers(MIN_EXCHANGES, MAX_EXCHANGES + 1))
        exchanges: list[dict] = []
        last, t = None, lead_in_s(rng, i)
        while len(exchanges) < wanted:
            mark = draft.mark()
            try:
                records, last, end_s = _exchange(rng, draft, i, user, t, last)
            except DoesNotFit:
                if len(exchanges) < MIN_EXCHANGES:
                    raise
                draft.rollback(mark)  # keep the exchanges that fit
                break
            exchanges += records
            t = end_s + pause_s(rng, i)
        meta = dict(exchanges=exchanges,
                    should_stop=any(e["should_stop"] for e in exchanges))
        return draft.finish(rng, "multi_turn", world.PROMPT_DIALOGUE, meta)

    return fit_attempts("multi_turn", attempt, rng, ctx)
