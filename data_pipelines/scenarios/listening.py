"""Single-task scenarios: streaming ASR, enhancement, target-speaker extraction, synthesis.

asr: one user says one to three sentences; a TRANSCRIBE turn per sentence.
enhancement: a user sentence in generated noise (white/pink/brown, 0-15 dB SNR), half the time
  in a synthetic reverberant room; the assistant re-speaks the clean utterance itself.
target_speaker: the target enrols ("my name is anna"), then the target and a third speaker talk
  at once; the assistant re-speaks only the target's clean utterance.
tts: the prompt holds the text to read; nobody speaks; the assistant reads it right away.

With a real corpus (`ctx.user_speech`) every user sentence here, the enrolment included, is
one of the corpus speaker's own utterances, and the interferer another corpus speaker's
(`speakers`); the re-spoken target is then the corpus recording. tts has no user.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import timeline, world
from data_pipelines.scenarios import signals, speakers
from data_pipelines.scenarios.base import (ASR_TOKENS_PER_WORD, DoesNotFit, Draft,
                                           ScenarioContext, fit_attempts, lead_in_s, pause_s,
                                           shrink)
from data_pipelines.timeline import AudioEvent, Timeline

MAX_SENTENCES = 3
SNR_DB = (0.0, 15.0)
REVERB_PROB = 0.5
RT60_S = (0.2, 0.6)
REVERB_TAIL_S = 0.25
INTERFERER_GAIN = (0.6, 1.0)
INTERFERER_OFFSET_S = (-0.4, 0.6)  # interferer start relative to the target's


def asr(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    # Room left after a sentence for its last words' transcript tokens.
    lag_s = (ctx.timing.asr_lag_blocks + ASR_TOKENS_PER_WORD) * ctx.block_s

    def attempt(rng, ctx, i):
        draft = Draft(ctx)
        user = speakers.pick_user(rng, ctx)
        wanted = int(rng.integers(1, MAX_SENTENCES + 1))
        t = lead_in_s(rng, i)
        for n in range(wanted):
            mark = draft.mark()
            try:
                text = world.utterance(rng, max_words=shrink(i, 12, 3, ctx))
                said = user.line(rng, text, max_seconds=speakers.room_s(ctx, t, lag_s))
                event = draft.hear(timeline.USER, "utterance", said, t)
                draft.transcribe(event)
            except DoesNotFit:
                if n == 0:
                    raise
                draft.rollback(mark)  # keep the sentences that fit
                break
            t = event.end_s(ctx.sample_rate) + pause_s(rng, i, 0.3, 1.0)
        texts = [turn.text for turn in draft.turns]
        return draft.finish(rng, "asr", world.PROMPT_ASR, dict(transcripts=texts))

    return fit_attempts("asr", attempt, rng, ctx)


def enhancement(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    # The clean speech is heard, then re-spoken: each gets half of what the lead-in leaves.
    longest_s = speakers.room_s(ctx, 0.3, speakers.reply_latency_s(ctx) + ctx.block_s) / 2

    def attempt(rng, ctx, i):
        draft = Draft(ctx)
        user = speakers.pick_user(rng, ctx)
        clean = user.line(rng, world.utterance(rng, max_words=shrink(i, 12, 3, ctx)),
                          max_seconds=longest_s)
        text = clean.text
        speech_start = lead_in_s(rng, i) + 0.2  # noise alone first
        heard_T, rt60 = clean.audio, None
        if rng.random() < REVERB_PROB:
            rt60 = float(rng.uniform(*RT60_S))
            rir_T = signals.room_impulse_response(rng, rt60, ctx.sample_rate)
            heard_T = signals.reverberate(clean.audio, rir_T, REVERB_TAIL_S, ctx.sample_rate)
        speech_end = speech_start + clean.duration_s
        draft.add_event(AudioEvent(timeline.USER, "noisy_speech", speech_start, heard_T,
                                   speaker=clean.voice_id, text=text, words=clean.words))
        # The assistant re-speaks the clean source itself, once the utterance has ended.
        reply = draft.plan_reply(text, speech_end, utterance=clean)
        draft.speak(reply)
        speech_end += draft.delay(rng)  # before the noise, which starts with the dialogue
        # Noise from the start until a while after the speech (into the re-spoken part).
        noise_end = min(draft.busy_until_s,
                        speech_end + REVERB_TAIL_S + float(rng.uniform(0.0, 1.0)))
        color = world.pick(rng, tuple(signals.NOISE_COLORS))
        num_samples = int(noise_end * ctx.sample_rate)
        noise_T, snr_db = signals.noise_at_snr(rng, num_samples, color, clean.audio,
                                               float(rng.uniform(*SNR_DB)))
        draft.add_event(AudioEvent(timeline.NOISE, f"{color}_noise", 0.0, noise_T))
        meta = dict(text=text, noise=color, snr_db=round(snr_db, 2),
                    rt60_s=None if rt60 is None else round(rt60, 3))
        return draft.finish(rng, "enhancement", world.PROMPT_ENHANCE, meta)

    return fit_attempts("enhancement", attempt, rng, ctx)


TARGET_DRAWS = 4  # tries for a target sentence that is not the enrolment again


def target_speaker(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    latency_s = speakers.reply_latency_s(ctx) + ctx.block_s

    def attempt(rng, ctx, i):
        draft = Draft(ctx)
        target = speakers.pick_user(rng, ctx)
        other = speakers.pick_third(rng, ctx, target)
        enrol_text, enrol_start = world.enrolment(rng), lead_in_s(rng, i)
        # An enrolment leaves room for a target sentence as long, heard and re-spoken.
        enrol = draft.hear(timeline.USER, "enrolment",
                           target.line(rng, enrol_text,
                                       speakers.room_s(ctx, enrol_start, latency_s) / 3),
                           enrol_start)
        budget = shrink(i, 10, 3, ctx)
        text = world.utterance(rng, max_words=budget)
        interfering = world.utterance(rng, max_words=budget)
        while interfering == text:
            interfering = world.utterance(rng, max_words=budget)
        t_target = enrol.end_s(ctx.sample_rate) + pause_s(rng, i, 0.3, 0.8)
        t_other = max(enrol.end_s(ctx.sample_rate) + 0.1,
                      t_target + float(rng.uniform(*INTERFERER_OFFSET_S)))
        longest_s = speakers.room_s(ctx, t_target, latency_s) / 2
        for _ in range(TARGET_DRAWS):  # a corpus may hand out the enrolment again
            clean = target.line(rng, text, longest_s)
            if clean.text != enrol.text:
                break
        else:
            raise DoesNotFit(f"speaker {target.speaker_id}: no sentence besides the enrolment")
        spoken = draft.hear(timeline.USER, "target", clean, t_target)
        gain = float(rng.uniform(*INTERFERER_GAIN))
        # The interferer may run on past the target, but not past the re-spoken target.
        other_s = speakers.room_s(ctx, t_other, latency_s + clean.duration_s)
        noise = draft.hear(timeline.THIRD, "interferer", other.line(rng, interfering, other_s),
                           t_other, gain=gain)
        both_end = max(spoken.end_s(ctx.sample_rate), noise.end_s(ctx.sample_rate))
        draft.speak(draft.plan_reply(clean.text, both_end, utterance=clean))
        meta = dict(enrolment=enrol.text, text=clean.text, interferer_text=noise.text)
        return draft.finish(rng, "target_speaker", world.PROMPT_TARGET, meta)

    return fit_attempts("target_speaker", attempt, rng, ctx)


def tts(rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    def attempt(rng, ctx, i):
        draft = Draft(ctx)
        text = world.read_aloud_sentence(rng, max_words=shrink(i, world.READ_ALOUD_MAX_WORDS,
                                                               3, ctx))
        draft.speak(draft.plan_reply(text, float(rng.uniform(0.0, 0.3))))
        # Read right away: nothing is heard, so nothing could tell a later start.
        return draft.finish(rng, "tts", world.read_aloud_prompt(text), dict(text=text),
                            delay=False)

    return fit_attempts("tts", attempt, rng, ctx)
