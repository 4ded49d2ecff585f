"""Full-Duplex-Bench v1 scoring (omni_jax.evaluation.fdb_metrics with fdb_samples and
fdb_speech, omni_jax.serving.fdb_score)
on synthetic folders written here: tone bursts at known times stand for the model's speech,
so every takeover, latency, backchannel count, frequency, JSD and interval has a known
answer."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from omni_jax.evaluation import fdb_metrics as fm
from omni_jax.evaluation import fdb_speech as fs
from omni_jax.evaluation import metrics
from omni_jax.serving import fdb_score

REPO = Path(__file__).resolve().parents[1]
SR = 16000
DURATION = 6.0
FAST = fm.ScoreSettings(bootstrap=200)


def speech(spans, duration=DURATION, amplitude=0.3):
    """Silence with a 220 Hz tone over each (start_s, end_s) span."""
    audio = np.zeros(int(round(duration * SR)), np.float32)
    for start, end in spans:
        i0, i1 = int(round(start * SR)), int(round(end * SR))
        t = np.arange(i1 - i0) / SR
        audio[i0:i1] = amplitude * np.sin(2 * np.pi * 220.0 * t)
    return audio


def write_sample(root, rel, spans=(), *, meta=None, output_json=None, duration=DURATION,
                 write_wav=True):
    """INPUT root/in/REL/{input.wav, annotation files}, OUTPUT root/out/REL/{output.*}."""
    inp, out = Path(root) / "in" / rel, Path(root) / "out" / rel
    inp.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    sf.write(inp / "input.wav", speech([(0.2, 1.0)], duration), SR, subtype="PCM_16")
    for name, content in (meta or {}).items():
        (inp / name).write_text(json.dumps(content))
    if write_wav:
        sf.write(out / "output.wav", speech(spans, duration), SR, subtype="PCM_16")
    if output_json is not None:
        (out / "output.json").write_text(json.dumps(output_json))
    return inp, out


def turn_end(t):
    return {"turn_taking.json": [{"text": "[TURN-TAKING]", "timestamp": [t, t + 0.4]}]}


def interrupt(start, end):
    return {"interrupt.json": [{"context": "tell me about books", "interrupt": "what about "
                                "fiction?", "timestamp": [start, end]}]}


PAUSE = {"pause.json": [{"text": "[PAUSE]", "timestamp": [2.0, 4.0]}]}


def score(root, task="auto", settings=FAST, **kw):
    return fm.score_folder(Path(root) / "in", Path(root) / "out", task, settings,
                           per_sample=True, **kw)


def same(segments, expected):
    """Segment lists equal to float precision."""
    return len(segments) == len(expected) and np.allclose(
        np.asarray(segments, float).reshape(-1), np.asarray(expected, float).reshape(-1))


def by_sample(report):
    return {r["sample"]: r for r in report["samples"]}


# ---- statistics with hand-computed answers -------------------------------------------------

def test_wilson_interval_matches_hand_computation():
    z = 1.959963984540054
    z2 = z * z
    # 8 of 10: p = 0.8, centre (p + z2/20) / (1 + z2/10), half-width z/(1+z2/10) *
    # sqrt(p(1-p)/10 + z2/400)
    centre = (0.8 + z2 / 20) / (1 + z2 / 10)
    half = z / (1 + z2 / 10) * math.sqrt(0.8 * 0.2 / 10 + z2 / 400)
    lo, hi = metrics.wilson_interval(8, 10)
    assert lo == pytest.approx(centre - half) and hi == pytest.approx(centre + half)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook value
    # 0 of 5: the interval is [0, z2 / (5 + z2)]; 5 of 5 mirrors it
    assert metrics.wilson_interval(0, 5) == pytest.approx((0.0, z2 / (5 + z2)))
    assert metrics.wilson_interval(5, 5) == pytest.approx((5 / (5 + z2), 1.0))
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)  # metrics' convention
    assert fm.rate_summary([])["ci95"] is None  # the report's: no samples, no interval


def test_bootstrap_is_seeded_and_brackets_the_statistic():
    values = np.array([0.1, 0.2, 0.3, 0.4, 2.0])

    def interval(x, statistic=np.mean, **kw):
        return metrics.bootstrap_interval(lambda i: statistic(x[i]), len(x), **kw)

    a = interval(values, resamples=500, seed=3)
    assert a == interval(values, resamples=500, seed=3)
    assert a != interval(values, resamples=500, seed=4)
    assert 0.1 <= a[0] <= np.mean(values) <= a[1] <= 2.0
    assert interval(np.array([0.4, 0.4]), np.median) == (0.4, 0.4)
    assert all(math.isnan(v) for v in interval(np.array([])))  # metrics' convention
    summary = fm.value_summary([0.2, 0.4, 0.9], resamples=100)
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(0.5)
    assert summary["median"] == pytest.approx(0.4)
    assert summary["std"] == pytest.approx(np.std([0.2, 0.4, 0.9]))
    assert fm.value_summary([])["mean"] is None


def test_js_distance_and_histogram():
    assert fm.js_distance([1, 0], [0, 1]) == pytest.approx(math.sqrt(math.log(2)))
    assert fm.js_distance([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-7)
    p, q = [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]
    # by hand: m = [3/8, 3/8, 1/4]; KL(p||m) = ln(4/3); KL(q||m) = ln(2/3)/2 + ln 2 / 2
    divergence = (math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2
    assert fm.js_distance(p, q) == pytest.approx(math.sqrt(divergence))
    # 1 s in 0.2 s windows: int(1.0 / 0.2) + 1 = 6 bins; (0.1, 0.5) covers bins 0..2
    hist = fm.backchannel_histogram([(0.1, 0.5)], 1.0, 0.2)
    expected = np.array([1, 1, 1, 0, 0, 0]) + fm.JSD_EPSILON
    assert hist == pytest.approx(expected / expected.sum())
    assert fm.backchannel_jsd([], 1.0, [1.0]) == 1.0  # FDB: no backchannel -> 1
    assert fm.backchannel_jsd([(0.1, 0.5)], 1.0, hist) == pytest.approx(0.0, abs=1e-6)


def test_js_distance_agrees_with_scipy():
    distance = pytest.importorskip("scipy.spatial.distance")
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = rng.random(17), rng.random(17)
        assert fm.js_distance(p, q) == pytest.approx(float(distance.jensenshannon(p, q)))


def test_energy_vad_bridges_gaps_and_drops_short_bursts():
    audio = speech([(1.0, 2.0), (2.05, 2.5), (3.0, 3.1), (4.0, 4.5)])
    assert same(fs.energy_segments(audio, SR), [(1.0, 2.5), (4.0, 4.5)])
    padded = fs.energy_segments(audio, SR, fm.VadSettings(pad_s=0.03))
    assert same(padded, [(0.97, 2.53), (3.97, 4.53)])
    assert fs.energy_segments(speech([], 1.0), SR) == []
    quiet = speech([(1.0, 2.0)], amplitude=0.003)  # -53 dBFS RMS: below -40
    assert fs.energy_segments(quiet, SR) == []
    assert same(fs.energy_segments(quiet, SR, fm.VadSettings(threshold_dbfs=-60)),
                [(1.0, 2.0)])


# ---- smooth turn-taking --------------------------------------------------------------------

def test_turn_taking_answer_after_the_user_end(tmp_path):
    for i, end in enumerate((2.0, 2.5, 3.0)):
        write_sample(tmp_path, f"{i}", [(end + 0.4, end + 2.4)], meta=turn_end(end))
    report = score(tmp_path, "turn_taking")
    summary = report["tasks"]["turn_taking"]
    assert report["counts"] == dict(found=3, scored=3, skipped=0)
    assert summary["takeover_rate"]["rate"] == 1.0
    assert summary["takeover_rate"]["ci95"] == pytest.approx(list(metrics.wilson_interval(3, 3)))
    latency = summary["latency_s"]
    assert latency["n"] == 3
    assert latency["mean"] == pytest.approx(0.4) and latency["median"] == pytest.approx(0.4)
    assert latency["mean_ci95"] == pytest.approx([0.4, 0.4])


def test_an_early_start_counts_zero_latency_and_silence_is_undefined(tmp_path):
    write_sample(tmp_path, "early", [(1.5, 3.5)], meta=turn_end(2.0))
    write_sample(tmp_path, "silent", [], meta=turn_end(2.0))
    report = score(tmp_path, "turn_taking")
    records = by_sample(report)
    assert records["early"]["takeover"] and records["early"]["latency_s"] == 0.0
    assert records["early"]["latency_raw_s"] == pytest.approx(-0.5)
    assert not records["silent"]["takeover"]
    assert records["silent"]["latency_s"] is None and records["silent"]["onset_s"] is None
    summary = report["tasks"]["turn_taking"]
    assert summary["takeover_rate"]["rate"] == 0.5
    assert summary["latency_s"]["n"] == 1 and summary["latency_s"]["mean"] == 0.0

    only_silent = tmp_path / "only"
    write_sample(only_silent, "silent", [], meta=turn_end(2.0))
    summary = score(only_silent, "turn_taking")["tasks"]["turn_taking"]
    assert summary["takeover_rate"]["rate"] == 0.0
    assert summary["latency_s"]["n"] == 0
    assert summary["latency_s"]["mean"] is None and summary["latency_s"]["median"] is None


def test_the_takeover_rule_short_bursts_and_spans(tmp_path):
    # 0.6 s burst: below 1 s and no words known -> no turn; two bursts spanning 1.5 s -> turn
    write_sample(tmp_path, "burst", [(2.4, 3.0)], meta=turn_end(2.0))
    write_sample(tmp_path, "spread", [(2.4, 2.7), (3.6, 3.9)], meta=turn_end(2.0))
    records = by_sample(score(tmp_path, "turn_taking"))
    assert not records["burst"]["takeover"] and records["burst"]["latency_s"] is None
    assert records["spread"]["takeover"]
    assert records["spread"]["latency_s"] == pytest.approx(0.4)


# ---- pause handling ------------------------------------------------------------------------

def test_pause_speaking_during_the_pause_is_a_takeover(tmp_path):
    write_sample(tmp_path, "talks", [(2.2, 3.7)], meta=PAUSE)  # 1.5 s inside the pause
    write_sample(tmp_path, "waits", [], meta=PAUSE)
    write_sample(tmp_path, "hums", [(2.5, 2.8)], meta=PAUSE)  # 0.3 s: below the rule
    report = score(tmp_path, "auto")
    records = by_sample(report)
    assert records["talks"]["takeover"] and records["talks"]["task"] == "pause"
    assert records["talks"]["pauses"] == [[2.0, 4.0]]
    assert not records["waits"]["takeover"] and not records["hums"]["takeover"]
    rate = report["tasks"]["pause"]["takeover_rate"]
    assert (rate["takeovers"], rate["n"]) == (1, 3) and rate["rate"] == pytest.approx(1 / 3)
    assert rate["ci95"] == pytest.approx(list(metrics.wilson_interval(1, 3)))


def test_fdb_asr_chunks_decide_the_takeover(tmp_path):
    def chunks(words, start, step=0.1):
        return {"text": " ".join(words), "chunks": [
            {"text": w, "timestamp": [start + i * step, start + (i + 1) * step]}
            for i, w in enumerate(words)]}

    # FDB: span < 1 s and <= 3 words -> no turn; 4 words -> a turn, whatever the VAD says
    write_sample(tmp_path, "three", [(2.2, 2.5)], meta=PAUSE,
                 output_json=chunks(["oh", "I", "see"], 2.2))
    write_sample(tmp_path, "four", [(2.2, 2.6)], meta=PAUSE,
                 output_json=chunks(["oh", "I", "see", "now"], 2.2))
    write_sample(tmp_path, "empty", [], meta=PAUSE, output_json={"text": "", "chunks": []})
    write_sample(tmp_path, "late", [(2.7, 4.0)], meta=turn_end(2.0),
                 output_json=chunks(["yes", "it", "is", "my", "first"], 2.75))
    records = by_sample(score(tmp_path))
    assert not records["three"]["takeover"] and records["three"]["words_source"] == "chunks"
    assert records["four"]["takeover"]
    assert not records["empty"]["takeover"]
    assert records["late"]["latency_s"] == pytest.approx(0.75)  # first word's start


# ---- user interruption ---------------------------------------------------------------------

def test_interruption_only_the_output_after_the_interruption_counts(tmp_path):
    meta = interrupt(3.0, 3.5)
    write_sample(tmp_path, "yields", [(0.5, 2.9), (4.0, 5.5)], meta=meta)
    write_sample(tmp_path, "quiet", [(0.5, 2.9)], meta=meta)  # spoke only before
    write_sample(tmp_path, "through", [(0.5, 5.0)], meta=meta)  # talks straight through
    report = score(tmp_path, "auto")
    records = by_sample(report)
    assert records["yields"]["takeover"]
    assert records["yields"]["latency_s"] == pytest.approx(0.5)
    assert same(records["yields"]["segments"], [[4.0, 5.5]])
    assert not records["quiet"]["takeover"] and records["quiet"]["latency_s"] is None
    assert records["through"]["takeover"] and records["through"]["latency_s"] == 0.0
    summary = report["tasks"]["interruption"]
    assert summary["takeover_rate"]["rate"] == pytest.approx(2 / 3)
    assert summary["latency_s"]["median"] == pytest.approx(0.25)
    assert any("relevance" in note for note in summary["not_computed"])


# ---- backchannel ---------------------------------------------------------------------------

def test_backchannel_short_bursts_are_not_takeovers(tmp_path):
    write_sample(tmp_path, "icc_backchannel/0", [(1.0, 1.5), (3.0, 3.4)])
    write_sample(tmp_path, "icc_backchannel/1", [(1.0, 3.0)])  # 2 s: a turn
    write_sample(tmp_path, "icc_backchannel/2", [])
    report = score(tmp_path, "auto")
    records = by_sample(report)
    first = records["icc_backchannel/0"]
    assert first["task"] == "backchannel" and not first["takeover"]
    assert first["num_backchannels"] == 2
    assert first["frequency"] == pytest.approx(2 / DURATION)
    assert first["jsd"] is None  # no ground truth given
    assert records["icc_backchannel/1"]["takeover"]
    assert records["icc_backchannel/1"]["num_backchannels"] == 0
    assert not records["icc_backchannel/2"]["takeover"]
    summary = report["tasks"]["backchannel"]
    assert summary["takeover_rate"]["rate"] == pytest.approx(1 / 3)
    assert summary["frequency"]["mean"] == pytest.approx(2 / DURATION / 3)
    assert summary["jsd"]["n"] == 0 and summary["jsd_missing_ground_truth"] == 3


def test_backchannel_jsd_against_a_ground_truth(tmp_path):
    write_sample(tmp_path, "bc/0", [(1.0, 1.5)])
    write_sample(tmp_path, "bc/1", [])
    perfect = fm.backchannel_histogram([(1.0, 1.5)], DURATION, 0.2)
    gt = {"0": perfect.tolist(), "1": perfect.tolist()}
    records = by_sample(score(tmp_path, "backchannel", gt_distributions=gt))
    assert records["bc/0"]["jsd"] == pytest.approx(0.0, abs=1e-6)
    assert records["bc/1"]["jsd"] == 1.0
    # a ground truth of half the length is resampled to the histogram's bins
    write_sample(tmp_path / "other", "bc/0", [(1.0, 1.5)])
    flat = {"0": [1.0] * 10}
    record = by_sample(score(tmp_path / "other", "backchannel",
                             gt_distributions=flat))["bc/0"]
    assert record["jsd"] == pytest.approx(
        fm.js_distance(perfect, np.ones_like(perfect)), abs=1e-9)


def test_backchannel_words_and_the_fdb_code_variant(tmp_path):
    def events(*items):
        return {"events": [dict(kind="text", block=0, time_s=t, token=9, piece=p)
                           for t, p in items],
                "speaking_intervals": [], "duration_s": DURATION}

    # a 0.5 s burst with 3 words is a turn (> 2 words); with 2 words, a backchannel
    write_sample(tmp_path, "bc/wordy", [(1.0, 1.5)],
                 output_json=events((1.0, "\u2581oh"), (1.1, "\u2581I"), (1.2, "\u2581see")))
    write_sample(tmp_path, "bc/brief", [(1.0, 1.5)],
                 output_json=events((1.0, "\u2581uh"), (1.2, "-"), (1.3, "\u2581huh")))
    records = by_sample(score(tmp_path, "backchannel"))
    assert records["bc/wordy"]["takeover"] and records["bc/wordy"]["words_source"] == "text"
    assert not records["bc/brief"]["takeover"] and records["bc/brief"]["num_words"] == 2

    # FDB's script keeps the last segment's verdict and counts segments up to 3 s
    spans = [(0.5, 1.0), (1.5, 3.5), (4.0, 4.5)]
    write_sample(tmp_path / "code", "bc/0", spans)
    ours = by_sample(score(tmp_path / "code", "backchannel"))["bc/0"]
    theirs = by_sample(score(tmp_path / "code", "backchannel", fm.ScoreSettings(
        backchannel=fm.BackchannelRule(fdb_code=True), bootstrap=100)))["bc/0"]
    assert ours["takeover"] and ours["num_backchannels"] == 2
    assert not theirs["takeover"] and theirs["num_backchannels"] == 3


# ---- words: a recogniser, text events, intervals -------------------------------------------

def test_a_recognizer_gives_the_word_counts(tmp_path):
    write_sample(tmp_path, "0", [(2.4, 3.0)], meta=turn_end(2.0))
    heard = []

    def wordy(audio_T, sample_rate):
        heard.append((audio_T.size, sample_rate))
        return "one two three four"

    record = by_sample(score(tmp_path, "turn_taking", transcribe=wordy))["0"]
    assert heard == [(int(0.6 * SR), SR)]
    assert record["words_source"] == "recognizer" and record["num_words"] == 4
    assert record["takeover"] and record["latency_s"] == pytest.approx(0.4)
    record = by_sample(score(tmp_path, "turn_taking", transcribe=lambda a, r: ""))["0"]
    assert not record["takeover"] and record["num_words"] == 0

    def broken(audio_T, sample_rate):
        raise RuntimeError("no model")

    report = score(tmp_path, "turn_taking", transcribe=broken)
    assert report["counts"]["skipped"] == 1
    assert "recogniser failed" in report["skipped"][0]["reason"]


def test_text_events_count_words_of_a_short_reply(tmp_path):
    pieces = [(2.4, "\u2581hello"), (2.48, "\u2581the"), (2.56, "re"), (2.64, "\u2581my"),
              (2.72, "\u2581friend"), (5.5, "\u2581far")]  # the last: outside any speech
    write_sample(tmp_path, "0", [(2.4, 3.0)], meta=turn_end(2.0), output_json={
        "events": [dict(kind="start", block=30, time_s=2.4)]
        + [dict(kind="text", block=0, time_s=t, token=9, piece=p) for t, p in pieces],
        "speaking_intervals": [[2.4, 3.0]], "duration_s": DURATION})
    record = by_sample(score(tmp_path, "turn_taking"))["0"]
    assert record["num_words"] == 4  # hello, the+re, my, friend: > 3 -> a turn
    assert record["takeover"] and record["latency_s"] == pytest.approx(0.4)


def test_speaking_intervals_instead_of_the_vad(tmp_path):
    write_sample(tmp_path, "0", [], meta=turn_end(2.0), output_json={
        "events": [], "speaking_intervals": [[2.4, 4.4]], "duration_s": DURATION})
    settings = fm.ScoreSettings(segments="intervals", bootstrap=100)
    record = by_sample(score(tmp_path, "turn_taking", settings))["0"]
    assert record["segments_source"] == "intervals"
    assert record["takeover"] and record["latency_s"] == pytest.approx(0.4)
    assert not by_sample(score(tmp_path, "turn_taking"))["0"]["takeover"]  # the VAD: silent


# ---- per-file problems, metadata, folders --------------------------------------------------

def test_a_corrupt_output_is_reported_and_the_rest_scored(tmp_path):
    write_sample(tmp_path, "good", [(2.4, 4.4)], meta=turn_end(2.0))
    _, bad = write_sample(tmp_path, "corrupt", [], meta=turn_end(2.0))
    (bad / "output.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    _, empty = write_sample(tmp_path, "empty", [], meta=turn_end(2.0))
    (empty / "output.wav").write_bytes(b"")
    write_sample(tmp_path, "missing", meta=turn_end(2.0), write_wav=False)
    _, broken = write_sample(tmp_path, "badjson", [(2.4, 4.4)], meta=turn_end(2.0))
    (broken / "output.json").write_text("{not json")
    write_sample(tmp_path, "nometa", [(2.4, 4.4)])
    report = score(tmp_path, "turn_taking")
    assert report["counts"] == dict(found=6, scored=1, skipped=5)
    reasons = {s["sample"]: s["reason"] for s in report["skipped"]}
    assert str(bad / "output.wav") in reasons["corrupt"] and "unreadable" in reasons["corrupt"]
    assert str(empty / "output.wav") in reasons["empty"]
    assert "output.wav" in reasons["missing"] and "missing" in reasons["missing"]
    assert "output.json" in reasons["badjson"] and "JSON" in reasons["badjson"]
    assert "turn end" in reasons["nometa"]
    assert report["tasks"]["turn_taking"]["latency_s"]["mean"] == pytest.approx(0.4)


def test_own_metadata_auto_tasks_and_subsets(tmp_path):
    write_sample(tmp_path, "synthetic_pause/0", [(2.2, 3.7)], meta=PAUSE)
    write_sample(tmp_path, "candor_pause/0", [], meta={
        "fdb_meta.json": {"task": "pause", "pauses": [[1.0, 2.0]]}})
    write_sample(tmp_path, "ours/tt", [(2.9, 4.0)], meta={
        "fdb_meta.json": {"task": "turn_taking", "turn_end_s": 2.5}})
    write_sample(tmp_path, "ours/int", [(4.3, 5.5)], meta={
        "fdb_meta.json": {"task": "user_interruption", "interruption": [3.0, 4.0]}})
    write_sample(tmp_path, "ours/none", [(2.0, 3.0)])
    write_sample(tmp_path, "ours/both", [(2.0, 3.0)], meta={**PAUSE, **turn_end(1.0)})
    report = score(tmp_path, "auto")
    records = by_sample(report)
    assert records["candor_pause/0"]["pauses"] == [[1.0, 2.0]]
    assert records["ours/tt"]["latency_s"] == pytest.approx(0.4)
    assert records["ours/int"]["task"] == "interruption"
    assert records["ours/int"]["latency_s"] == pytest.approx(0.3)
    reasons = {s["sample"]: s["reason"] for s in report["skipped"]}
    assert "no task" in reasons["ours/none"] and "ambiguous" in reasons["ours/both"]
    subsets = report["tasks"]["pause"]["subsets"]
    assert subsets["synthetic_pause"]["takeover_rate"]["rate"] == 1.0
    assert subsets["candor_pause"]["takeover_rate"]["rate"] == 0.0
    assert report["tasks"]["pause"]["takeover_rate"]["rate"] == 0.5


def test_fdb_layout_in_one_folder(tmp_path):
    """FDB's own scripts read everything from one folder: INPUT_DIR == OUTPUT_DIR."""
    write_sample(tmp_path, "x", [(2.4, 4.4)], meta=turn_end(2.0))
    one = tmp_path / "one" / "x"
    one.mkdir(parents=True)
    for folder in (tmp_path / "in" / "x", tmp_path / "out" / "x"):
        for path in folder.iterdir():
            (one / path.name).write_bytes(path.read_bytes())
    report = fm.score_folder(tmp_path / "one", tmp_path / "one", "smooth_turn_taking", FAST)
    assert report["counts"]["scored"] == 1
    assert report["tasks"]["turn_taking"]["latency_s"]["mean"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no such folder"):
        fm.score_folder(tmp_path / "nowhere", tmp_path / "one")
    with pytest.raises(ValueError, match="unknown task"):
        fm.score_folder(tmp_path / "one", tmp_path / "one", "dancing")


# ---- the command line ----------------------------------------------------------------------

def test_cli_prints_and_writes_the_report(tmp_path):
    write_sample(tmp_path, "0", [(2.4, 4.4)], meta=turn_end(2.0))
    _, bad = write_sample(tmp_path, "1", [], meta=turn_end(2.0))
    (bad / "output.wav").write_bytes(b"garbage")
    out = tmp_path / "metrics.json"
    result = subprocess.run(
        [sys.executable, "-m", "omni_jax.serving.fdb_score", "--task=turn_taking",
         str(tmp_path / "in"), str(tmp_path / "out"), f"--out={out}", "--bootstrap=100"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    printed, written = json.loads(result.stdout), json.loads(out.read_text())
    assert printed == written
    assert written["counts"] == dict(found=2, scored=1, skipped=1)
    assert written["tasks"]["turn_taking"]["latency_s"]["mean"] == pytest.approx(0.4)
    assert "output.wav" in result.stderr and "samples" not in written


def test_cli_run_exit_codes(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    assert fdb_score.run(tmp_path / "in", tmp_path / "out", bootstrap=50) == 1  # nothing
    assert fdb_score.run(tmp_path / "in", tmp_path / "missing") == 1
    assert fdb_score.run(tmp_path / "in", tmp_path / "out", task="dancing") == 1
    write_sample(tmp_path, "0", [(2.4, 4.4)], meta=turn_end(2.0))
    out = tmp_path / "m.json"
    assert fdb_score.run(tmp_path / "in", tmp_path / "out", out=str(out), per_sample=True,
                         transcribe=lambda a, r: "a reply of some words", bootstrap=50) == 0
    report = json.loads(out.read_text())
    assert report["recognizer"] and report["samples"][0]["words_source"] == "recognizer"
    capsys.readouterr()
