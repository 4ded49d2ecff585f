"""FDB samples made of real recordings: every task from every clip, the annotations where
the audio says (the inserted pause is silence, the turn ends at the clip's last speech)."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import audio_io
from omni_jax.evaluation import fdb_samples
from omni_jax.serving import fdb_real
from tests.test_fdb import FIXTURES

CLIPS = [FIXTURES / "manifest" / "clips" / "five_five.wav",
         FIXTURES / "manifest" / "clips" / "one_two_three.mp3",
         FIXTURES / "fsdd" / "recordings" / "0_jackson_12.wav"]


@pytest.fixture
def clips_dir(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    lines = []
    for clip in CLIPS:
        shutil.copy(clip, folder / clip.name)
        lines.append(json.dumps({"path": clip.name}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_every_task_from_every_clip(clips_dir, tmp_path):
    out = tmp_path / "fdb"
    assert fdb_real.build(clips_dir, out) == {task: 3 for task in fdb_samples.TASKS}
    clips = dict(fdb_real.load_clips(clips_dir))
    rate = fdb_real.SAMPLE_RATE
    for name, speech_T in clips.items():
        turn_T, turn_rate = sf.read(out / "turn_taking" / name / "input.wav")
        meta = json.loads((out / "turn_taking" / name / "fdb_meta.json").read_text())
        assert turn_rate == rate and meta["task"] == "turn_taking"
        assert meta["turn_end_s"] == pytest.approx(0.5 + len(speech_T) / rate, abs=1e-3)
        assert np.abs(turn_T[int(meta["turn_end_s"] * rate) + 160:]).max() == 0
        pause_T, _ = sf.read(out / "pause" / name / "input.wav")
        (start, end), = json.loads((out / "pause" / name / "fdb_meta.json").read_text())[
            "pauses"]
        assert end - start == pytest.approx(fdb_real.PAUSE_S)
        assert np.abs(pause_T[int(start * rate) + 1:int(end * rate) - 1]).max() == 0
        assert np.abs(pause_T[:int(start * rate)]).max() > 0.1  # speech on both sides
        assert np.abs(pause_T[int(end * rate):]).max() > 0.1
        interruption = json.loads(
            (out / "interruption" / name / "fdb_meta.json").read_text())["interruption"]
        inter_T, _ = sf.read(out / "interruption" / name / "input.wav")
        assert np.abs(inter_T[int(interruption[0] * rate) + 1:
                              int(interruption[1] * rate) - 1]).max() > 0.1
        for task in fdb_samples.TASKS:  # the scorer reads each annotation as that task
            assert fdb_samples.load_metadata([out / task / name], name)[0] == task
    assert fdb_real.build(clips_dir, tmp_path / "again") == {t: 3 for t in fdb_samples.TASKS}
    for wav in out.rglob("input.wav"):
        again = tmp_path / "again" / wav.relative_to(out)
        np.testing.assert_array_equal(sf.read(wav)[0], sf.read(again)[0])


def test_bad_clips_folders_are_named(tmp_path):
    with pytest.raises(fdb_real.FdbRealError, match="manifest.jsonl: missing"):
        fdb_real.build(tmp_path, tmp_path / "out")
    (tmp_path / "manifest.jsonl").write_text('{"no_path": 1}\n')
    with pytest.raises(fdb_real.FdbRealError, match="manifest.jsonl:1"):
        fdb_real.build(tmp_path, tmp_path / "out")
    audio_io.write_wav(tmp_path / "silent.wav", np.zeros(1600, np.float32), 16000)
    (tmp_path / "manifest.jsonl").write_text('{"path": "silent.wav"}\n')
    with pytest.raises(fdb_real.FdbRealError, match="silent.wav: no speech"):
        fdb_real.build(tmp_path, tmp_path / "out")
    (tmp_path / "manifest.jsonl").write_text('{"path": "gone.wav"}\n')
    with pytest.raises(audio_io.AudioError, match="gone.wav"):
        fdb_real.build(tmp_path, tmp_path / "out")


def test_blind_answers_to_score_beside_the_model(clips_dir, tmp_path):
    out = tmp_path / "fdb"
    fdb_real.build(clips_dir, out)
    assert fdb_real.write_baseline("silent", out, tmp_path / "silent") == 12
    assert fdb_real.write_baseline("clock", out, tmp_path / "clock") == 12
    for wav in out.rglob("input.wav"):
        rel = wav.parent.relative_to(out)
        silent_T, rate = sf.read(tmp_path / "silent" / rel / "output.wav")
        clock_T, _ = sf.read(tmp_path / "clock" / rel / "output.wav")
        assert silent_T.shape == clock_T.shape == sf.read(wav)[0].shape
        assert not silent_T.any()
        start, end = (int(t * rate) for t in (fdb_real.CLOCK_START_S,
                                               fdb_real.CLOCK_START_S + fdb_real.CLOCK_SPEAK_S))
        assert not clock_T[:start].any() and not clock_T[end + 1:].any()
        assert np.abs(clock_T[start:end]).max() > 0.05
    with pytest.raises(fdb_real.FdbRealError, match="baseline"):
        fdb_real.write_baseline("loud", out, tmp_path / "x")
