"""Tests of environment augmentation: noise, SNR, room impulse responses, real-audio folders."""

import numpy as np
import pytest
import soundfile

from configs import default
from data_pipelines import augment

SR = 16000


def _band_power(x, low_hz, high_hz):
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return spectrum[(freqs >= low_hz) & (freqs < high_hz)].mean()


def _speech_like(seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
            ).astype(np.float32)


def test_config_from_default():
    cfg = augment.AugmentConfig.from_config(default.get_config())
    assert cfg.noise_prob == 0.5 and cfg.reverb_prob == 0.3 and cfg.echo_prob == 0.3
    assert cfg.snr_db == (5.0, 30.0) and cfg.echo_delay_ms == (10.0, 60.0)
    assert cfg.gain_db == (-6.0, 3.0) and cfg.noise_dir == ""
    assert cfg.enabled
    assert not augment.AugmentConfig.none().enabled


@pytest.mark.parametrize("kind", augment.NOISE_KINDS)
@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 12.5, 30.0])
def test_add_noise_hits_the_snr(kind, snr_db):
    rng = np.random.default_rng(1)
    speech = _speech_like()
    noise = augment.generate_noise(kind, speech.size, SR, rng)
    assert abs(augment.rms(noise) - 1.0) < 1e-3
    mixed = augment.add_noise(speech, noise, snr_db, reference=speech)
    added = mixed.astype(np.float64) - speech
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(added ** 2))
    assert measured == pytest.approx(snr_db, abs=0.1)
    # A reference given as an RMS level does the same.
    by_level = augment.add_noise(speech, noise, snr_db, reference=augment.rms(speech))
    np.testing.assert_allclose(by_level, mixed, atol=1e-6)


def test_noise_colours_have_their_slopes():
    rng = np.random.default_rng(0)
    ratios = {}
    for kind in ("white", "pink", "brown"):
        x = augment.generate_noise(kind, 4 * SR, SR, rng)
        # Power ratio 100-200 Hz vs 3.2-6.4 kHz: 0 dB white, ~15 dB pink, ~30 dB brown.
        ratios[kind] = 10 * np.log10(_band_power(x, 100, 200) / _band_power(x, 3200, 6400))
    assert abs(ratios["white"]) < 2
    assert 12 < ratios["pink"] < 18
    assert 27 < ratios["brown"] < 33
    hum = augment.generate_noise("hum", 2 * SR, SR, rng)
    freqs = np.fft.rfftfreq(hum.size, 1 / SR)
    assert freqs[np.argmax(np.abs(np.fft.rfft(hum)))] in (50.0, 60.0)


def test_generate_noise_rejects_unknown_kind():
    with pytest.raises(ValueError, match="thunder"):
        augment.generate_noise("thunder", 100, SR, np.random.default_rng(0))


def _estimated_rt60(rir):
    """Schroeder backward integration; slope fitted between -5 and -25 dB, extrapolated."""
    edc = np.cumsum(rir[::-1].astype(np.float64) ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    fit = (edc_db <= -5) & (edc_db >= -25)
    t = np.arange(rir.size) / SR
    slope_db_per_s = np.polyfit(t[fit], edc_db[fit], 1)[0]
    return -60.0 / slope_db_per_s


@pytest.mark.parametrize("rt60", [0.2, 0.4, 0.8])
def test_synthetic_rir_decays_at_rt60(rt60):
    rir = augment.synthetic_rir(rt60, SR, np.random.default_rng(3))
    assert np.argmax(np.abs(rir)) == 0  # direct path first
    assert np.sum(rir.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-4)
    assert _estimated_rt60(rir) == pytest.approx(rt60, rel=0.1)


def test_apply_reverb_is_a_causal_same_length_convolution():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    np.testing.assert_allclose(augment.apply_reverb(x, np.array([1.0])), x, atol=1e-5)
    delayed = augment.apply_reverb(x, np.eye(1, 11, 10)[0])
    assert delayed.shape == x.shape
    np.testing.assert_allclose(delayed[10:], x[:-10], atol=1e-5)
    np.testing.assert_allclose(delayed[:10], 0.0, atol=1e-5)


def test_limit_peak_scales_never_clips():
    x = np.array([0.5, -2.0, 1.0], np.float32)
    y, scale = augment.limit_peak(x)
    assert np.max(np.abs(y)) == pytest.approx(0.99) and scale == pytest.approx(0.495)
    np.testing.assert_allclose(y / scale, x, rtol=1e-6)
    same, one = augment.limit_peak(x / 2)
    assert one == 1.0 and np.array_equal(same, x / 2)


def _write_folder(folder):
    folder.mkdir()
    t = np.arange(SR // 2) / 8000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1)
    soundfile.write(folder / "a_stereo_8k.wav", stereo[: 4000], 8000)
    soundfile.write(folder / "b.flac", 0.1 * np.ones(1600), SR)
    (folder / "c_corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (folder / "notes.txt").write_text("not audio")


def test_audio_folder_loads_good_files_and_counts_bad(tmp_path):
    folder = tmp_path / "noise"
    _write_folder(folder)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        loaded = augment.load_audio_folder(str(folder), SR)
    assert loaded.names == ("a_stereo_8k.wav", "b.flac")
    assert loaded.num_skipped == 1
    # 4000 samples at 8 kHz -> 8000 at 16 kHz; first channel (a 440 Hz tone, not silence).
    assert loaded.clips[0].size == 8000 and augment.rms(loaded.clips[0]) > 0.3
    assert loaded.clips[1].size == 1600
    assert augment.load_audio_folder(str(folder), SR) is loaded  # loaded once


def test_audio_folder_without_usable_files(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "x.ogg").write_bytes(b"nope")
    with pytest.raises(ValueError, match="no usable"), pytest.warns(UserWarning):
        augment.load_audio_folder(str(folder), SR)
    with pytest.raises(FileNotFoundError):
        augment.load_audio_folder(str(tmp_path / "missing"), SR)


def _always(**overrides):
    base = dict(noise_prob=1.0, reverb_prob=1.0, gain_db=(-6.0, 3.0))
    return augment.AugmentConfig(**(base | overrides))


def test_augment_environment_is_deterministic_per_seed():
    env = _speech_like()
    out = [augment.augment_environment(env, 0.2, _always(), SR, np.random.default_rng(seed))
           for seed in (7, 7, 8)]
    np.testing.assert_array_equal(out[0][0], out[1][0])
    assert out[0][1] == out[1][1]
    assert not np.allclose(out[0][0], out[2][0])
    info = out[0][1]
    assert info["reverb"] and 0.15 <= info["rt60_s"] <= 0.6
    assert info["noise"] in augment.NOISE_KINDS and 5 <= info["snr_db"] <= 30
    assert -6 <= info["gain_db"] <= 3


def test_augment_environment_uses_real_folders(tmp_path):
    folder = tmp_path / "real"
    _write_folder(folder)
    loaded_names = ("a_stereo_8k.wav", "b.flac")
    config = _always(noise_dir=str(folder), rir_dir=str(folder), gain_db=(0.0, 0.0))
    env = np.zeros(SR, np.float32)  # silence: what remains is the noise at the SNR
    with pytest.warns(UserWarning):
        out, info = augment.augment_environment(env, 0.1, config, SR, np.random.default_rng(0))
    assert info["noise"] in loaded_names and info["rir"] in loaded_names
    assert augment.rms(out) == pytest.approx(0.1 * 10 ** (-info["snr_db"] / 20), rel=1e-3)
