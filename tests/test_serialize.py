"""Timeline <-> record round trip, and clear errors for corrupt records."""

import numpy as np
import pytest

from data_pipelines import serialize
from data_pipelines import timeline as tl

SR = 16000


def _tone(seconds: float, freq: float, rng) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32)


def make_timeline(seed: int = 0) -> tl.Timeline:
    rng = np.random.default_rng(seed)
    question = tl.AudioEvent(
        role=tl.USER, kind="question", start_s=0.25, audio=_tone(1.2, 220, rng),
        speaker="en-us+m3:p45:r165", text="what is two plus two",
        words=(tl.WordTime("what", 0.0, 0.2), tl.WordTime("is", 0.21, 0.35),
               tl.WordTime("two", 0.4, 0.6), tl.WordTime("plus", 0.62, 0.9),
               tl.WordTime("two", 0.93, 1.19)),
        gain=0.8)
    noise = tl.AudioEvent(role=tl.NOISE, kind="hum", start_s=0.0,
                          audio=_tone(3.0, 50, rng) * 0.1, gain=0.3)
    reply = tl.AssistantTurn(mode=tl.SPEAK, text="two plus two is four", start_s=1.45,
                             audio=_tone(1.0, 330, rng), speaker="en-us+f2:p55:r165",
                             words=(tl.WordTime("two", 0.0, 0.2),
                                    tl.WordTime("four", 0.7, 1.0)),
                             stop_s=2.1)
    transcript = tl.AssistantTurn(mode=tl.TRANSCRIBE, text="what is two plus two",
                                  start_s=0.25, words=(tl.WordTime("what", 0.45, 0.45),))
    return tl.Timeline(scenario="qa", sample_rate=SR, duration_s=3.0,
                       events=(question, noise), turns=(reply, transcript),
                       prompt="answer the question", echo_gain=0.1, echo_delay_s=0.03,
                       meta=dict(topic="arithmetic", gains=(0.1, 1.0), level=np.float32(0.5)))


def test_round_trip_is_exact_up_to_int16():
    timeline = make_timeline()
    record = serialize.serialize(timeline)
    assert record["event_audio"].dtype == np.int16 and record["turn_audio"].dtype == np.int16
    assert record["event_offsets"].tolist() == [0, 1.2 * SR, 4.2 * SR]
    back = serialize.deserialize(record)

    for before, after in zip(timeline.events, back.events, strict=True):
        np.testing.assert_allclose(after.audio, before.audio, atol=0.5 / 32767 + 1e-7)
        assert after.audio.dtype == np.float32
        for field in ("role", "kind", "start_s", "speaker", "text", "words", "gain"):
            assert getattr(after, field) == getattr(before, field), field
    for before, after in zip(timeline.turns, back.turns, strict=True):
        assert (after.audio is None) == (before.audio is None)
        if before.audio is not None:
            np.testing.assert_allclose(after.audio, before.audio, atol=0.5 / 32767 + 1e-7)
        for field in ("mode", "text", "start_s", "words", "stop_s", "speaker"):
            assert getattr(after, field) == getattr(before, field), field
    for field in ("scenario", "sample_rate", "duration_s", "prompt", "echo_gain",
                  "echo_delay_s"):
        assert getattr(back, field) == getattr(timeline, field), field
    # JSON turns tuples into lists and numpy scalars into Python numbers.
    assert back.meta == dict(topic="arithmetic", gains=[0.1, 1.0], level=0.5)
    assert back.events_json() == serialize.deserialize(serialize.serialize(back)).events_json()


def test_int16_conversion_clips_and_keeps_full_scale():
    pcm = serialize.to_int16(np.array([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0], np.float32))
    assert pcm.tolist() == [-32767, -32767, 0, 16384, 32767, 32767]
    np.testing.assert_allclose(serialize.from_int16(pcm)[1:5], [-1.0, 0.0, 0.5, 1.0],
                               atol=1e-4)


@pytest.mark.parametrize("corrupt, field", [
    (lambda r: r.pop("turn_audio"), "turn_audio"),
    (lambda r: r.update(event_audio=r["event_audio"][:-100]), "event_audio"),
    (lambda r: r.update(event_offsets=r["event_offsets"][:-1]), "event_offsets"),
    (lambda r: r.update(turn_offsets=r["turn_offsets"][::-1].copy()), "turn_offsets"),
    (lambda r: r.update(event_audio=r["event_audio"].astype(np.float32)), "event_audio"),
    (lambda r: r.update(info=r["info"][:-5]), "info"),
    (lambda r: r.update(info=r["info"].replace('"version": 1', '"version": 99')), "info"),
    (lambda r: r.update(info=r["info"].replace('"role": "user"', '"role": "alien"')), "info"),
])
def test_corrupt_record_names_record_and_field(corrupt, field):
    record = serialize.serialize(make_timeline())
    corrupt(record)
    with pytest.raises(serialize.RecordError, match=rf"train\[7\]: field '{field}'"):
        serialize.deserialize(record, where="train[7]")


def test_info_may_be_bytes_as_tfds_returns_it():
    record = serialize.serialize(make_timeline())
    record["info"] = record["info"].encode()
    assert serialize.deserialize(record).scenario == "qa"
    assert serialize.scenario_of(record) == "qa"
    assert serialize.scenario_of({"info": b"{broken"}) == "?"
