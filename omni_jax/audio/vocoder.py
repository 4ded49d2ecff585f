"""Vocoders: log-mel frames (the synthesizer's output) -> waveform, outside the model.

Every vocoder takes `log_mel_TxM` in the units of `omni_jax.audio.frontend` (log of Slaney
mel power + 1e-6, causal 25 ms / 10 ms framing) and returns T * hop float32 samples at the
sample rate with peak <= 1, sample i aligned with the frontend's sample i (frame j covers
samples [(j+1)*hop - win, (j+1)*hop)).

`config.model.synth.vocoder` names one in a registry:
  griffin_lim  built in: undo the log, non-negative least-squares inverse of the same mel
               filterbank, Griffin-Lim phase recovery. Needs no training; sounds phasey.
  streaming_griffin_lim  the speech path's algorithm (below) over a whole utterance.
  <other>      a trained neural vocoder. Plug one in with
                   register_vocoder("neural", lambda config: MyVocoder.load(path, config))
               before `make_vocoder(config)`, where `MyVocoder()(log_mel_TxM)` follows the
               `Vocoder` protocol. Its weights come from a local path (no downloads at run
               time), and it must be trained on this frontend's log-mel definition.

The other kind streams: causal and jittable, block by block, inside the jitted block loop
where whole-utterance Griffin-Lim cannot run. `config.model.synth.streaming.kind` names the
speech path's in a second registry (`register_streaming_vocoder`, the `StreamingVocoder`
protocol; built in: "griffin_lim"):
  StreamingGriffinLim  the speech path (`omni_jax.audio.feedback`): what the model says,
                       what it hears of itself, what the runner writes. Deterministic
                       phase reconstruction in the manner of RTISI-LA (Zhu, Beauregard and
                       Wyse 2007): each block's frames are refined together with a bounded
                       look-ahead, then committed. 80 ms in, 80 ms out, a fixed delay of
                       `delay_ms` (the window overlap + the look-ahead: 35 ms by default).
  StreamingMelInverse  random phase, no iterations: a cheap stand-in kept for comparison
                       (frontend log-mel of its output keeps the level, not the frames).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from data_pipelines.config_checks import get
from omni_jax.audio.frontend import LOG_FLOOR, LogMelFrontend



@runtime_checkable
class Vocoder(Protocol):
    def __call__(self, log_mel_TxM: np.ndarray) -> np.ndarray:
        """log_mel_TxM -> float32 audio of T * hop samples, peak <= 1."""


@dataclasses.dataclass(frozen=True)
class GriffinLimVocoder:
    """Inverts `LogMelFrontend` exactly up to phase: the same filterbank, window and
    framing. `n_iter` Griffin-Lim iterations (fast variant, librosa's default momentum);
    a fixed seed makes the output deterministic."""

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    n_iter: int = 32
    seed: int = 0

    @classmethod
    def from_config(cls, config) -> GriffinLimVocoder:
        frontend = LogMelFrontend.from_config(config)
        return cls(frontend.sample_rate, frontend.n_fft, frontend.win, frontend.hop,
                   frontend.n_mels)

    @property
    def offset(self) -> int:
        """Where the frontend's sample 0 sits in librosa's uncentred reconstruction.

        librosa centres the `win_length` window inside each `n_fft` frame (padding
        (n_fft - win) / 2 on the left), frame t starting at t * hop; the frontend's frame
        t windows samples [t*hop - (win - hop), (t+1)*hop). The power spectra agree
        (a shift inside a zero-padded frame changes only the phase), so the two sample
        axes differ by this constant."""
        return (self.n_fft - self.win_length) // 2 + self.win_length - self.hop_length

    def __call__(self, log_mel_TxM: np.ndarray) -> np.ndarray:
        log_mel_TxM = np.asarray(log_mel_TxM, np.float64)
        if log_mel_TxM.ndim != 2 or log_mel_TxM.shape[1] != self.n_mels:
            raise ValueError(f"expected log-mel T x {self.n_mels}, got {log_mel_TxM.shape}")
        num_frames = log_mel_TxM.shape[0]
        # The last win - hop samples are seen only through the tails of the last windows,
        # which Griffin-Lim's overlap-add would divide by ~0: hold the last frame steady
        # for as many frames as reach past the end, then crop them off.
        tail = -(-(self.win_length - self.hop_length) // self.hop_length)
        log_mel_TxM = np.pad(log_mel_TxM, ((0, tail), (0, 0)), mode="edge")
        mel_power_MxT = np.maximum(np.exp(log_mel_TxM.T) - LOG_FLOOR, 0.0)
        magnitude_NxT = librosa.feature.inverse.mel_to_stft(
            mel_power_MxT, sr=self.sample_rate, n_fft=self.n_fft, power=2.0)
        audio = librosa.griffinlim(
            magnitude_NxT, n_iter=self.n_iter, hop_length=self.hop_length,
            win_length=self.win_length, n_fft=self.n_fft, window="hann", center=False,
            random_state=self.seed)
        audio_T = audio[self.offset:self.offset + num_frames * self.hop_length]
        peak = np.abs(audio_T).max(initial=0.0)
        return (audio_T / max(peak, 1.0)).astype(np.float32)


VocoderFactory = Callable[[object], Vocoder]  # config -> vocoder
_REGISTRY: dict[str, VocoderFactory] = {
    "griffin_lim": GriffinLimVocoder.from_config,
    # The speech path's algorithm over a whole utterance (its delay removed).
    "streaming_griffin_lim": lambda config: StreamingGriffinLim.from_config(config)}


def _register(registry: dict, what: str, name: str, factory) -> None:
    if name in registry:
        raise ValueError(f"{what} {name!r} is already registered")
    registry[name] = factory


def _build(registry: dict, what: str, field: str, config):
    """`registry[name](config)` for the name at `config.<field>`."""
    name = get(config, field)
    if name not in registry:
        raise ValueError(f"config.{field}: {name!r} is not registered; registered {what}s: "
                         f"{sorted(registry)} (see omni_jax.audio.vocoder)")
    return registry[name](config)


def register_vocoder(name: str, factory: VocoderFactory) -> None:
    """Makes `config.model.synth.vocoder = name` build `factory(config)`."""
    _register(_REGISTRY, "vocoder", name, factory)


def registered_vocoders() -> list[str]:
    return sorted(_REGISTRY)


def make_vocoder(config) -> Vocoder:
    """The vocoder that `config.model.synth.vocoder` names."""
    return _build(_REGISTRY, "vocoder", "model.synth.vocoder", config)


@runtime_checkable
class StreamingVocoder(Protocol):
    """What the speech path (`omni_jax.audio.feedback`) needs of a vocoder: jittable
    `step(log_mel_BxFxM, state) -> (audio_BxS, state)` over one block of
    `frames_per_block` frames, a fixed-size `init_state(batch)`, and its fixed delay."""

    frames_per_block: int

    @property
    def delay_samples(self) -> int: ...

    def init_state(self, batch: int): ...

    def step(self, log_mel_BxFxM, state): ...


StreamingFactory = Callable[[object], StreamingVocoder]  # config -> streaming vocoder
_STREAMING_REGISTRY: dict[str, StreamingFactory] = {}


def register_streaming_vocoder(name: str, factory: StreamingFactory) -> None:
    """Makes `config.model.synth.streaming.kind = name` build `factory(config)` for the
    speech path (e.g. a trained neural vocoder with a `StreamingVocoder` interface)."""
    _register(_STREAMING_REGISTRY, "streaming vocoder", name, factory)


def registered_streaming_vocoders() -> list[str]:
    return sorted(_STREAMING_REGISTRY)


def make_streaming_vocoder(config) -> StreamingVocoder:
    """The speech path's vocoder that `config.model.synth.streaming.kind` names."""
    return _build(_STREAMING_REGISTRY, "streaming vocoder", "model.synth.streaming.kind",
                  config)


@dataclasses.dataclass(frozen=True)
class StreamingMelInverse:
    """Jittable, causal log-mel -> waveform, one block of frames at a time.

    Per frame: mel power -> linear power by a fixed non-negative linear map (each FFT bin
    takes the mean of its filters' per-bin power: exact for a flat spectrum within each
    filter), magnitude with uniform random phase, inverse FFT, the frontend's Hann window,
    overlap-add at the frontend's hop. Random-phase frames add incoherently, so the sum is
    normalised by sqrt(sum of squared windows); `gain` undoes the analysis window's energy
    so that the frontend's log-mel of the output matches the input log-mel.

    Frame j of a block ends at sample (j+1)*hop, so the last `win - hop` samples of a block
    are complete only after the next block's frames: `step` emits them one block later, a
    fixed 15 ms (at 25/10 ms framing) delay.
    """

    frontend: LogMelFrontend

    @functools.cached_property
    def _constants(self):
        f = self.frontend
        # The frontend's filterbank (the same call), a numpy constant.
        basis_XxM = librosa.filters.mel(sr=f.sample_rate, n_fft=f.n_fft, n_mels=f.n_mels).T
        per_bin_M = basis_XxM.sum(axis=0)  # a flat spectrum p gives mel power p * per_bin
        cover_X = basis_XxM.sum(axis=1)
        weights_XxM = basis_XxM / np.where(cover_X > 0, cover_X, 1.0)[:, None]
        to_linear_MxX = (weights_XxM / per_bin_M[None]).T
        window_W = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(f.win) / f.win)
        # Per offset within a hop: the squared windows that overlap there.
        energy = np.array([np.sum(window_W[r::f.hop] ** 2) for r in range(f.hop)])
        gain = math.sqrt(f.n_fft / np.sum(window_W ** 2))
        return (to_linear_MxX.astype(np.float32), window_W.astype(np.float32),
                (gain / np.sqrt(energy)).astype(np.float32))

    def init_state(self, batch: int) -> jax.Array:
        """The overlap-add tail: `win - hop` samples not yet complete."""
        return jnp.zeros((batch, self.frontend.overlap), jnp.float32)

    def step(self, log_mel_BxFxM: jax.Array, tail_BxO: jax.Array, key: jax.Array):
        """One block of F frames -> (F*hop samples delayed by win - hop, new tail)."""
        f = self.frontend
        to_linear_MxX, window_W, norm = self._constants
        b, num_frames, _ = log_mel_BxFxM.shape
        mel_power_BxFxM = jnp.maximum(jnp.exp(log_mel_BxFxM) - LOG_FLOOR, 0.0)
        power_BxFxX = jnp.einsum("bfm,mx->bfx", mel_power_BxFxM, to_linear_MxX,
                                 precision="highest")
        phase_BxFxX = jax.random.uniform(key, power_BxFxX.shape, maxval=2 * jnp.pi)
        spec_BxFxX = jnp.sqrt(power_BxFxX) * jnp.exp(1j * phase_BxFxX)
        frames_BxFxW = jnp.fft.irfft(spec_BxFxX, n=f.n_fft, axis=-1)[..., :f.win] * window_W
        # Buffer position 0 is the block's sample -overlap: frame j covers [j*hop, j*hop+win).
        index_FxW = np.arange(num_frames)[:, None] * f.hop + np.arange(f.win)[None]
        size = num_frames * f.hop
        buffer_BxT = jnp.zeros((b, size + f.overlap), jnp.float32)
        buffer_BxT = buffer_BxT.at[:, index_FxW].add(frames_BxFxW.astype(jnp.float32))
        buffer_BxT = buffer_BxT.at[:, :f.overlap].add(tail_BxO)
        audio_BxS = buffer_BxT[:, :size] * np.tile(norm, num_frames)
        return jnp.clip(audio_BxS, -1.0, 1.0), buffer_BxT[:, size:]


@dataclasses.dataclass(frozen=True)
class StreamingGriffinLim:
    """Block-streaming Griffin-Lim with look-ahead: log-mel frames in, samples out, jittable.

    Per block of F new frames, with L = `lookahead_frames`, the active frames are the L
    frames of the previous block that were not yet committed, then the F new ones. Their
    magnitudes come from the mel by non-negative least squares (multiplicative updates
    from a per-bin spread of each filter's power); a new frame's phase starts at each
    bin's centre frequency advanced over its hops into the block. `iterations` fast
    Griffin-Lim steps (momentum `momentum`, Perraudin et al. 2013) refine all active
    frames at once against the fixed overlap-add of the committed ones; then the first F
    active frames are committed, and the samples they complete are the block's output.

    Output sample i of block k is the frontend's sample k*S + i - `delay_samples` (frame
    j covers [(j+1)*hop - win, (j+1)*hop), so samples complete `win - hop` after the last
    committed frame's hop). Silence (the silence log-mel) gives exact zeros. The state
    holds only fixed-size arrays, so a block loop's carry never grows.
    """

    frontend: LogMelFrontend
    frames_per_block: int
    lookahead_frames: int = 2
    iterations: int = 16
    momentum: float = 0.99
    nnls_iterations: int = 20

    def __post_init__(self):
        for name in ("frames_per_block", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"StreamingGriffinLim.{name} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.lookahead_frames < 0 or self.nnls_iterations < 0:
            raise ValueError("StreamingGriffinLim: lookahead_frames and nnls_iterations must "
                             f"be >= 0, got {self.lookahead_frames}, {self.nnls_iterations}")

    @classmethod
    def from_config(cls, config) -> StreamingGriffinLim:
        frontend = LogMelFrontend.from_config(config)
        s = config.model.synth.streaming
        return cls(frontend, int(round(config.audio.block_ms / config.audio.hop_ms)),
                   lookahead_frames=int(s.lookahead_frames), iterations=int(s.iterations),
                   momentum=float(s.momentum), nnls_iterations=int(s.nnls_iterations))

    @property
    def delay_samples(self) -> int:
        return self.frontend.overlap + self.lookahead_frames * self.frontend.hop

    @property
    def delay_ms(self) -> float:
        return 1000.0 * self.delay_samples / self.frontend.sample_rate

    @property
    def lookahead_ms(self) -> float:
        return self.lookahead_frames * self.frontend.hop_ms

    @property
    def _num_active(self) -> int:
        return self.frames_per_block + self.lookahead_frames

    @functools.cached_property
    def _constants(self):
        f = self.frontend
        # The frontend's filterbank (the same call), a numpy constant.
        basis_MxX = librosa.filters.mel(sr=f.sample_rate, n_fft=f.n_fft, n_mels=f.n_mels)
        cover_X = basis_MxX.sum(axis=0)
        # NNLS start: each filter's power spread over its bins by their weights.
        spread_MxX = basis_MxX / np.maximum(cover_X, 1e-12)[None] / np.maximum(
            basis_MxX.sum(axis=1, keepdims=True), 1e-12)
        num_bins = f.n_fft // 2 + 1
        advance_X = 2 * np.pi * np.arange(num_bins) * f.hop / f.n_fft
        return dict(basis_MxX=basis_MxX.astype(np.float32),
                    spread_MxX=spread_MxX.astype(np.float32),
                    cover_X=np.maximum(cover_X, 1e-12).astype(np.float32),
                    window_W=f._window_W, advance_X=advance_X.astype(np.float32))

    def init_state(self, batch: int) -> dict[str, jax.Array]:
        """numerator/weight BxO: the committed frames' overlap-add (and squared windows)
        over the next region's first O = win - hop samples; magnitude/real/imag BxLxX: the
        uncommitted frames."""
        f, num_bins = self.frontend, self.frontend.n_fft // 2 + 1
        lookahead = (batch, self.lookahead_frames, num_bins)
        zeros = functools.partial(jnp.zeros, dtype=jnp.float32)
        return dict(numerator=zeros((batch, f.overlap)), weight=zeros((batch, f.overlap)),
                    magnitude=zeros(lookahead), real=zeros(lookahead), imag=zeros(lookahead))

    def magnitude(self, log_mel_BxFxM: jax.Array) -> jax.Array:
        """Linear STFT magnitude BxFxX whose mel power best fits the frames (NNLS)."""
        c = self._constants
        power_BxFxM = jnp.maximum(jnp.exp(log_mel_BxFxM.astype(jnp.float32)) - LOG_FLOOR, 0.0)
        linear_BxFxX = jnp.einsum("bfm,mx->bfx", power_BxFxM, c["spread_MxX"],
                                  precision="highest")
        for _ in range(self.nnls_iterations):
            fit_BxFxM = jnp.einsum("bfx,mx->bfm", linear_BxFxX, c["basis_MxX"],
                                   precision="highest")
            ratio_BxFxM = power_BxFxM / jnp.maximum(fit_BxFxM, 1e-12)
            linear_BxFxX = linear_BxFxX * jnp.einsum(
                "bfm,mx->bfx", ratio_BxFxM, c["basis_MxX"], precision="highest") / c["cover_X"]
        return jnp.sqrt(linear_BxFxX)

    def step(self, log_mel_BxFxM: jax.Array, state: dict[str, jax.Array]):
        """One block of F frames -> (F * hop samples, delayed by `delay_samples`; state)."""
        f, c = self.frontend, self._constants
        b, num_frames, num_mels = log_mel_BxFxM.shape
        if num_frames != self.frames_per_block or num_mels != f.n_mels:
            raise ValueError(f"StreamingGriffinLim.step: expected B x {self.frames_per_block} "
                             f"x {f.n_mels} log-mel frames, got {log_mel_BxFxM.shape}")
        num_active, window_W = self._num_active, c["window_W"]
        region = (num_active - 1) * f.hop + f.win
        new_BxFxX = self.magnitude(log_mel_BxFxM)
        magnitude_BxAxX = jnp.concatenate([state["magnitude"], new_BxFxX], axis=1)

        # New frames start at each bin's centre-frequency phase advance within the block
        # (not the last frame's phase: that carries the sign of near-zero bins, so a
        # 1e-5 change of the mel would give another waveform; this way it moves ~0.4%).
        steps_F = jnp.arange(1, num_frames + 1, dtype=jnp.float32)
        advance_FxX = jnp.exp(1j * steps_F[:, None] * c["advance_X"][None])
        spec_BxAxX = jnp.concatenate([
            jax.lax.complex(state["real"], state["imag"]),
            new_BxFxX * advance_FxX[None]], axis=1)

        def overlap_add(frames_BxAxW, fixed_BxO):
            return _overlap_add(frames_BxAxW, f.hop, region).at[:, :f.overlap].add(fixed_BxO)

        weight_BxT = overlap_add(jnp.broadcast_to(window_W ** 2, (b, num_active, f.win)),
                                 state["weight"])
        inverse_weight_BxT = 1.0 / jnp.maximum(weight_BxT, 1e-3)

        def synthesize(spec_BxAxX):
            frames_BxAxW = jnp.fft.irfft(spec_BxAxX, n=f.n_fft, axis=-1)[..., :f.win]
            return frames_BxAxW * window_W

        def project(spec_BxAxX):
            audio_BxT = overlap_add(synthesize(spec_BxAxX), state["numerator"]) * \
                inverse_weight_BxT
            again_BxAxX = jnp.fft.rfft(_frames_of(audio_BxT, num_active, f.hop, f.win)
                                       * window_W, n=f.n_fft, axis=-1)
            return magnitude_BxAxX * again_BxAxX / jnp.maximum(jnp.abs(again_BxAxX), 1e-12)

        previous_BxAxX = spec_BxAxX
        for _ in range(self.iterations):  # fast Griffin-Lim
            projected_BxAxX = project(spec_BxAxX)
            spec_BxAxX = projected_BxAxX + self.momentum * (projected_BxAxX - previous_BxAxX)
            previous_BxAxX = projected_BxAxX
        spec_BxAxX = previous_BxAxX

        size = num_frames * f.hop
        frames_BxAxW = synthesize(spec_BxAxX)
        committed_BxAxW = frames_BxAxW.at[:, num_frames:].set(0.0)
        numerator_BxT = overlap_add(committed_BxAxW, state["numerator"])
        committed_weight_BxT = overlap_add(jnp.broadcast_to(
            (window_W ** 2) * (np.arange(num_active) < num_frames)[:, None],
            (b, num_active, f.win)), state["weight"])
        audio_BxS = numerator_BxT[:, :size] / jnp.maximum(committed_weight_BxT[:, :size], 1e-3)
        new_state = dict(
            numerator=numerator_BxT[:, size:size + f.overlap],
            weight=committed_weight_BxT[:, size:size + f.overlap],
            magnitude=magnitude_BxAxX[:, num_frames:],
            real=jnp.real(spec_BxAxX[:, num_frames:]), imag=jnp.imag(spec_BxAxX[:, num_frames:]))
        return jnp.clip(audio_BxS, -1.0, 1.0), new_state

    def __call__(self, log_mel_TxM: np.ndarray) -> np.ndarray:
        """Whole utterance through the streaming loop (`Vocoder` protocol)."""
        return play_utterance(self, self.frontend, log_mel_TxM)


def _overlap_add(frames_BxAxW: jax.Array, hop: int, length: int) -> jax.Array:
    """Frames a*hop + [0, W) summed into B x `length` samples. Dense: each frame is cut
    into ceil(W / hop) hop-long pieces and piece p of every frame is added at a shift of
    p hops (a scatter-add of the same sum is several times slower on a CPU)."""
    b, num_frames, win = frames_BxAxW.shape
    num_pieces = -(-win // hop)
    # (B, A, pieces, hop): the frames cut into hop-long pieces, the last one zero-padded.
    pieces = jnp.pad(frames_BxAxW, ((0, 0), (0, 0), (0, num_pieces * hop - win))
                     ).reshape(b, num_frames, num_pieces, hop)
    # (B, A + pieces - 1, hop): hop-long stretches of the output.
    stretches = sum(jnp.pad(pieces[:, :, p], ((0, 0), (p, num_pieces - 1 - p), (0, 0)))
                    for p in range(num_pieces))
    return stretches.reshape(b, -1)[:, :length]


def _frames_of(audio_BxT: jax.Array, num_frames: int, hop: int, win: int) -> jax.Array:
    """The B x `num_frames` x W frames a*hop + [0, W) of the audio (dense, as above)."""
    b, length = audio_BxT.shape
    num_pieces = -(-win // hop)
    total = (num_frames + num_pieces - 1) * hop
    # (B, A + pieces - 1, hop) stretches; frame a is stretches a .. a + pieces - 1.
    stretches = jnp.pad(audio_BxT, ((0, 0), (0, max(0, total - length))))[:, :total].reshape(
        b, -1, hop)
    pieces = jnp.stack([stretches[:, p:p + num_frames] for p in range(num_pieces)], 2)
    return pieces.reshape(b, num_frames, num_pieces * hop)[..., :win]


def play_utterance(vocoder: StreamingVocoder, frontend: LogMelFrontend,
                   log_mel_TxM: np.ndarray) -> np.ndarray:
    """A whole utterance's log-mel (T frames, padded to whole blocks with silence) through
    a streaming vocoder block by block, the blocks after its end run to flush the delay:
    T * hop samples aligned with the frontend's (the delay taken off)."""
    log_mel_TxM = np.asarray(log_mel_TxM, np.float32)
    if log_mel_TxM.ndim != 2 or log_mel_TxM.shape[1] != frontend.n_mels:
        raise ValueError(f"expected log-mel T x {frontend.n_mels}, got {log_mel_TxM.shape}")
    num_frames, delay, per_block = len(log_mel_TxM), vocoder.delay_samples, \
        vocoder.frames_per_block
    num_blocks = -(-(num_frames + -(-delay // frontend.hop)) // per_block)
    padded = np.full((num_blocks * per_block, frontend.n_mels), math.log(LOG_FLOOR),
                     np.float32)
    padded[:num_frames] = log_mel_TxM
    audio_T = np.asarray(_play_blocks(vocoder, jnp.asarray(
        padded.reshape(1, num_blocks, per_block, frontend.n_mels))))[0]
    return audio_T[delay:delay + num_frames * frontend.hop]


@functools.partial(jax.jit, static_argnums=0)
def _play_blocks(vocoder: StreamingVocoder, log_mel_BxKxFxM: jax.Array) -> jax.Array:
    """B x K x F x M -> B x (K * S) samples: `vocoder.step` scanned over the blocks."""
    def body(state, mel_BxFxM):
        audio_BxS, state = vocoder.step(mel_BxFxM, state)
        return state, audio_BxS
    _, audio_KxBxS = jax.lax.scan(body, vocoder.init_state(log_mel_BxKxFxM.shape[0]),
                                  jnp.moveaxis(log_mel_BxKxFxM, 1, 0))
    return jnp.moveaxis(audio_KxBxS, 0, 1).reshape(log_mel_BxKxFxM.shape[0], -1)


register_streaming_vocoder("griffin_lim", StreamingGriffinLim.from_config)
