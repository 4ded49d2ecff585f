"""Audio file loading: formats, rates, channels, and clear errors for bad files."""

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import audio_io


def _tone(rate, seconds, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_resamples_48k_stereo_to_16k_mono(tmp_path):
    left, right = _tone(48000, 1.0, 440.0), _tone(48000, 1.0, 440.0) * 0.5
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 48000, subtype="PCM_16")
    audio = audio_io.load_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 16000) <= 2
    # Downmix averages the channels: amplitude 0.375; the tone survives resampling.
    assert np.max(np.abs(audio[1000:-1000])) == pytest.approx(0.375, abs=0.01)
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 16000 / audio.size == pytest.approx(440.0, abs=2.0)
    only_right = audio_io.load_audio(path, 16000, channel=1)
    assert np.max(np.abs(only_right[1000:-1000])) == pytest.approx(0.25, abs=0.01)


def test_flac_and_ogg_round_trip(tmp_path):
    tone = _tone(16000, 0.5)
    for suffix in (".flac", ".ogg"):
        path = tmp_path / f"tone{suffix}"
        sf.write(path, tone, 16000)
        audio = audio_io.load_audio(path, 16000)
        assert audio.size == pytest.approx(tone.size, abs=1)
        assert np.corrcoef(audio[: tone.size], tone[: audio.size])[0, 1] > 0.99


@pytest.mark.parametrize("content, match", [
    (b"", "empty file"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt garbage that is not audio", "unreadable audio"),
])
def test_bad_files_name_the_file(tmp_path, content, match):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(audio_io.AudioError, match=match) as err:
        audio_io.load_audio(path, 16000)
    assert "bad.wav" in str(err.value)


def test_missing_zero_length_and_overlong(tmp_path):
    with pytest.raises(audio_io.AudioError, match="no such file"):
        audio_io.load_audio(tmp_path / "absent.wav", 16000)
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0,), np.float32), 16000)
    with pytest.raises(audio_io.AudioError, match="zero.wav"):
        audio_io.load_audio(path, 16000)
    long_path = tmp_path / "long.wav"
    sf.write(long_path, _tone(16000, 2.0), 16000)
    with pytest.raises(audio_io.AudioError, match="longer than the limit"):
        audio_io.load_audio(long_path, 16000, max_seconds=1.0)
    with pytest.raises(audio_io.AudioError, match="channel 3"):
        audio_io.load_audio(long_path, 16000, channel=3)


def test_write_wav_refuses_clipping(tmp_path):
    with pytest.raises(audio_io.AudioError, match="clip"):
        audio_io.write_wav(tmp_path / "loud.wav", np.full(100, 1.5, np.float32), 16000)
    audio_io.write_wav(tmp_path / "ok.wav", _tone(16000, 0.1), 16000)
    info = audio_io.audio_info(tmp_path / "ok.wav")
    assert (info.sample_rate, info.channels, info.num_samples) == (16000, 1, 1600)


def test_list_audio_files_is_sorted_and_filtered(tmp_path):
    for name in ("b.wav", "a.flac", "notes.txt", "sub/c.ogg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in audio_io.list_audio_files(tmp_path)]
    assert names == ["a.flac", "b.wav", "sub/c.ogg"]
