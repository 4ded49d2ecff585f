"""Audio file I/O: read anything soundfile (or librosa's fallback) can read, as mono float32
at the rate asked for, with a clear error naming the file for anything unusable.

Used by the real-corpus sources (`sources.utterances`, `sources.fsdd`), `inspect` and the
evaluation runners (omni_jax.evaluation). soundfile and librosa are imported where they are
used: librosa is slow to import and only resampling and mp3/opus need it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and why."""


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    num_samples: int

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


def _read_native(path: Path) -> tuple[np.ndarray, int]:
    """Returns (audio_TxCh float32, native rate). soundfile first; mp3/opus via librosa."""
    import soundfile as sf  # imported where used, as librosa (see the module docstring)

    try:
        audio_TxCh, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return audio_TxCh, int(rate)
    except Exception as sf_error:  # soundfile's errors are not a single type
        if path.suffix.lower() not in (".mp3", ".opus", ".m4a"):
            raise AudioError(f"{path}: unreadable audio ({sf_error})") from None
    import librosa

    try:
        audio_ChxT, rate = librosa.load(str(path), sr=None, mono=False)
    except Exception as lr_error:
        raise AudioError(f"{path}: unreadable audio ({lr_error})") from None
    audio_TxCh = np.atleast_2d(audio_ChxT).T.astype(np.float32)
    return audio_TxCh, int(rate)


def load_audio(path: str | os.PathLike, sample_rate: int, *, channel: int | None = None,
               min_seconds: float = 0.0, max_seconds: float | None = None) -> np.ndarray:
    """Loads `path` as mono float32 at `sample_rate`.

    channel: None downmixes by averaging; an int picks that channel (e.g. one microphone of a
    multi-channel impulse response). Raises AudioError for a missing, corrupt, empty, too
    short or too long file, or one with NaN/Inf samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    audio_TxCh, rate = _read_native(path)
    if audio_TxCh.shape[0] == 0:
        raise AudioError(f"{path}: no samples")
    if channel is None:
        audio_T = audio_TxCh.mean(axis=1)
    elif 0 <= channel < audio_TxCh.shape[1]:
        audio_T = audio_TxCh[:, channel]
    else:
        raise AudioError(f"{path}: channel {channel} asked for, file has "
                         f"{audio_TxCh.shape[1]}")
    if not np.all(np.isfinite(audio_T)):
        raise AudioError(f"{path}: NaN or Inf samples")
    if rate != sample_rate:
        audio_T = resample(audio_T, rate, sample_rate)
    duration_s = audio_T.size / sample_rate
    if duration_s <= min_seconds:
        raise AudioError(f"{path}: {duration_s:.3f} s is too short (need > {min_seconds} s)")
    if max_seconds is not None and duration_s > max_seconds:
        raise AudioError(f"{path}: {duration_s:.1f} s is longer than the limit {max_seconds} s")
    return np.ascontiguousarray(audio_T, dtype=np.float32)


def resample(audio_T: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    if orig_rate == target_rate:
        return audio_T.astype(np.float32, copy=False)
    if orig_rate <= 0:
        raise AudioError(f"invalid sample rate {orig_rate}")
    import librosa

    return librosa.resample(audio_T.astype(np.float32), orig_sr=orig_rate,
                            target_sr=target_rate, res_type="soxr_hq").astype(np.float32)


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Rate, channels and length without decoding the samples (soundfile formats)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: unreadable audio header ({e})") from None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Writes 16-bit PCM; audio_T (mono) or audio_TxCh. Samples outside [-1, 1] are an error."""
    import soundfile as sf

    audio = np.asarray(audio, dtype=np.float32)
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: refusing to write NaN/Inf samples")
    peak = float(np.max(np.abs(audio), initial=0.0))
    if peak > 1.0 + 1e-6:
        raise AudioError(f"{path}: peak {peak:.3f} > 1 would clip")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sample_rate, subtype="PCM_16")


def list_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Every audio file under `folder` (recursive), sorted for determinism."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError(f"{folder}: no such folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
