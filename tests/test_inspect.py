"""The inspect command writes listenable, viewable dialogues for every scenario."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from configs import tiny
from data_pipelines import inspect, scenarios

REPO = Path(__file__).resolve().parents[1]


def test_inspect_writes_every_scenario(tmp_path):
    """With a `hear` hook whose microphone is louder than full scale (an echo is never
    limited), the wav is scaled down and the JSON says by how much."""
    config = tiny.get_config()
    loud = lambda record: (3.0 * record["env_audio"], record["speech_target"])  # noqa: E731
    files = inspect.inspect(config, tmp_path, per_scenario=1, hear=loud)
    assert len(files) == 4 * len(scenarios.SCENARIOS)
    block = config.audio.sample_rate * config.audio.block_ms // 1000
    scaled = 0
    for name in scenarios.SCENARIOS:
        events = json.loads((tmp_path / f"{name}_0.json").read_text())
        assert events["scenario"] == name
        env, rate = sf.read(tmp_path / f"{name}_0_env.wav")
        asst, _ = sf.read(tmp_path / f"{name}_0_asst.wav")
        assert rate == config.audio.sample_rate
        assert env.size == asst.size and env.size % block == 0 and env.size > 0
        assert np.abs(env).max() > 0.01  # the microphone hears something in every scenario
        scale = events["inspect"]["env_wav_scale"]
        assert np.abs(env).max() <= 1.0 and events["inspect"]["asst_wav_scale"] == 1.0
        if scale < 1.0:  # scaled exactly to just below full scale
            assert np.abs(env).max() == pytest.approx(0.999, abs=1e-3)
            scaled += 1
        png = (tmp_path / f"{name}_0.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert scaled > 0
    index = (tmp_path / "index.md").read_text()
    assert all(f"{name}_0.png" in index for name in scenarios.SCENARIOS)


@pytest.mark.slow  # ~18 s of subprocess start-up; the function itself is tested above
def test_inspect_command_line_with_overrides(tmp_path):
    cmd = [sys.executable, "-m", "data_pipelines.inspect", "--config=configs/tiny.py",
           f"--out={tmp_path}", "--per_scenario=1", "--split=eval",
           "--config.model.thinking=negative_ce"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    index = (tmp_path / "index.md").read_text()
    assert "thinking `negative_ce`" in index and "split `eval`" in index
    qa = json.loads((tmp_path / "qa_0.json").read_text())
    assert qa["render"]["thinking"] == "negative_ce"


def test_inspect_rejects_an_invalid_override(tmp_path):
    cmd = [sys.executable, "-m", "data_pipelines.inspect", "--config=configs/tiny.py",
           f"--out={tmp_path}", "--config.audio.block_ms=85"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "config.audio.block_ms" in done.stderr
