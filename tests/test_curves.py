"""Training curves: suite reports flattened to metric scalars, read back as series and
drawn as one picture."""


import numpy as np
import pytest

from omni_jax import configuration
from omni_jax.evaluation import curves, suites
from omni_jax.train import writers
from configs import tiny


def test_suite_reports_flatten_to_finite_scalars_with_intervals():
    report = {"turn_taking": {"success_rate": 0.75, "success_rate_ci95": [0.51, 0.9],
                              "headline": "success_rate", "best_baseline_value": 1.0,
                              "beats_baselines": False, "baselines": {"silent": 0.0},
                              "latency_ms_median": float("nan"), "cases": 16},
              "asr": {"wer": np.float32(0.5), "wer_ci95": [0.4, None]}}
    assert suites.scalars(report) == {
        "suites/turn_taking/success_rate": 0.75, "suites/turn_taking/success_rate_lo": 0.51,
        "suites/turn_taking/success_rate_hi": 0.9, "suites/turn_taking/best_baseline": 1.0,
        "suites/turn_taking/beats_baselines": 0.0, "suites/turn_taking/cases": 16.0,
        "suites/asr/wer": 0.5, "suites/asr/wer_lo": pytest.approx(0.4)}


def test_series_keep_the_last_value_of_a_step_and_skip_non_numbers():
    records = [{"step": 10, "text": 3.0, "note": "x"}, {"hparams": {"a": 1}},
               {"step": 20, "text": float("nan")}, {"step": 20, "eval/text": 2.5},
               {"step": 20, "eval/text": 2.0}]
    got = curves.series(records)
    assert got == {"text": ([10], [3.0]), "eval/text": ([20], [2.0])}


def test_run_metrics_are_drawn_with_suite_points(tmp_path):
    writer = writers.JsonlWriter(str(tmp_path / writers.JSONL_NAME))
    for step in (10, 20, 30, 40):
        writer.write_scalars(step, {"text": 4.0 / step, "shift": 1.0 / step, "acc_text": 0.5,
                                    "grad_norm": 1.0})
    for step in (20, 40):
        writer.write_scalars(step, {"eval/text": 3.0 / step, "eval/acc_text": step / 50})
        writer.write_scalars(step, suites.scalars({"turn_taking": {
            "success_rate": step / 50, "success_rate_ci95": [step / 100, 0.95],
            "best_baseline_value": 0.6}}))
    writer.close()
    got = curves.series(writers.read_jsonl(str(tmp_path / writers.JSONL_NAME)))
    assert curves.suite_headlines(got) == [("turn_taking", "success_rate")]
    assert got["suites/turn_taking/success_rate"] == ([20, 40], [0.4, 0.8])
    assert curves.main(["--workdir", str(tmp_path)]) == 0
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_metrics_without_losses_are_refused_by_name(tmp_path):
    (tmp_path / writers.JSONL_NAME).write_text('{"step": 1, "suites/asr/wer": 0.5}\n')
    with pytest.raises(SystemExit, match="metrics.jsonl: no training loss parts"):
        curves.main(["--workdir", str(tmp_path)])
    with pytest.raises(SystemExit, match="no such file"):
        curves.main(["--workdir", str(tmp_path / "nowhere")])


def test_suites_every_must_be_a_multiple_of_eval_every():
    c = tiny.get_config()
    c.train.eval_every, c.train.suites_every = 200, 300
    with pytest.raises(configuration.ConfigError, match="train.suites_every.*multiple"):
        configuration.validate(c)
    c.train.suites_every = 400
    configuration.validate(c)
