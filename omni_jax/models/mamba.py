"""Causal selective state-space layer (Mamba-1), one code path for training and streaming.

`MambaLayer(h_BxLxD, state) -> (h_BxLxD, state)` processes L frames starting from a carried
state: the parallel form is one call over the whole sequence from the zero state, the
streaming form is one call per block of frames. Both use the same scan, seeded with the
carried SSM state.

    x, z   = split(in_proj(rmsnorm(h)))             2 x I (inner = expand * D)
    x      = silu(causal_depthwise_conv(x))         W = conv_kernel taps, left context carried
    dt     = softplus(dt_proj(x_proj_dt(x)) + bias) rank-A, input-dependent step
    s_t    = exp(dt A) s_{t-1} + dt B_t x_t          A = -exp(A_log), IxZ (Z = state_size)
    y      = (C_t . s_t + D x) * silu(z)
    out    = h + out_proj(y)

(In the formulas A, B, C, D are Mamba's matrices; in array names they are legend letters,
`omni_jax.models`.) State pytree per layer: {"conv": Bx(W-1)xI (compute dtype, the last
pre-conv inputs), "ssm": BxIxZ (float32)}. The recurrence, dt and the exponentials always
run in float32; projections run in the compute dtype.

The scan (`model.encoder.scan`, `MAMBA_SCANS` owns the allowed values) runs in chunks of
`scan_chunk` frames (`chunked_selective_scan`): the SSM state is carried from chunk to
chunk, each chunk's states are contracted with C inside it and rematerialised in the
backward pass, so only one chunk's float32 states (B x chunk x I x Z) are ever live (the
unchunked form, `scan_chunk` 0, materialises BxLxIxZ several times per layer: 42 MB at
tiny, ~0.8 GB at 8B). Inside a chunk the recurrence is an associative scan (logarithmic
depth: accelerators) or a sequential one (a CPU's fastest); "auto" picks by the platform.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_jax.models import layers


MAMBA_SCANS = ("auto", "associative", "sequential")  # the allowed values of model.encoder.scan


def resolve_scan(scan: str) -> str:
    """"auto" -> the in-chunk form fastest on the default backend (sequential on a CPU,
    associative on GPU/TPU); any other value as given."""
    if scan not in MAMBA_SCANS:
        raise ValueError(f"model.encoder.scan: {scan!r} is not one of {list(MAMBA_SCANS)}")
    if scan != "auto":
        return scan
    return "sequential" if jax.default_backend() == "cpu" else "associative"


def selective_scan(decay_BxLxIxZ: jax.Array, drive_BxLxIxZ: jax.Array,
                   ssm0_BxIxZ: jax.Array, impl: str = "associative") -> jax.Array:
    """All states of s_t = decay_t * s_{t-1} + drive_t from s_{-1} = ssm0 (unchunked; the
    layer uses `chunked_selective_scan`, which calls this inside each chunk).

    impl="associative": O(log L) depth, the accelerator path. impl="sequential": a
    lax.scan over time. Both give the same states to float tolerance.
    """
    impl = resolve_scan(impl)
    if impl == "sequential":
        def advance(ssm_BxIxZ, step):
            decay_BxIxZ, drive_BxIxZ = step
            ssm_BxIxZ = decay_BxIxZ * ssm_BxIxZ + drive_BxIxZ
            return ssm_BxIxZ, ssm_BxIxZ

        _, states_LxBxIxZ = jax.lax.scan(
            advance, ssm0_BxIxZ,
            (jnp.moveaxis(decay_BxLxIxZ, 1, 0), jnp.moveaxis(drive_BxLxIxZ, 1, 0)))
        return jnp.moveaxis(states_LxBxIxZ, 0, 1)
    # Fold the carried state into the first step's drive; the scan then starts from zero.
    drive_BxLxIxZ = drive_BxLxIxZ.at[:, 0].add(decay_BxLxIxZ[:, 0] * ssm0_BxIxZ)

    def combine(earlier, later):
        decay_a, drive_a = earlier
        decay_b, drive_b = later
        return decay_a * decay_b, decay_b * drive_a + drive_b

    _, states_BxLxIxZ = jax.lax.associative_scan(combine, (decay_BxLxIxZ, drive_BxLxIxZ),
                                                 axis=1)
    return states_BxLxIxZ


def _scan_chunk(a_IxZ: jax.Array, impl: str, ssm_BxIxZ: jax.Array, chunk):
    """One chunk of L frames: (the state after it, y_BxLxI = C_t . s_t)."""
    dt_BxLxI, b_BxLxZ, c_BxLxZ, x_BxLxI = chunk
    if impl == "sequential":  # decay and drive built per step: no BxLxIxZ input at all
        def advance(ssm_BxIxZ, step):
            dt_BxI, b_BxZ, c_BxZ, x_BxI = step
            ssm_BxIxZ = (jnp.exp(dt_BxI[..., None] * a_IxZ) * ssm_BxIxZ
                         + (dt_BxI * x_BxI)[..., None] * b_BxZ[:, None, :])
            return ssm_BxIxZ, jnp.einsum("biz,bz->bi", ssm_BxIxZ, c_BxZ)

        ssm_BxIxZ, y_LxBxI = jax.lax.scan(
            advance, ssm_BxIxZ, tuple(jnp.moveaxis(x, 1, 0) for x in chunk))
        return ssm_BxIxZ, jnp.moveaxis(y_LxBxI, 0, 1)
    decay_BxLxIxZ = jnp.exp(dt_BxLxI[..., None] * a_IxZ)
    drive_BxLxIxZ = (dt_BxLxI * x_BxLxI)[..., None] * b_BxLxZ[:, :, None, :]
    states_BxLxIxZ = selective_scan(decay_BxLxIxZ, drive_BxLxIxZ, ssm_BxIxZ, impl)
    return states_BxLxIxZ[:, -1], jnp.einsum("bliz,blz->bli", states_BxLxIxZ, c_BxLxZ)


def chunked_selective_scan(dt_BxLxI: jax.Array, a_IxZ: jax.Array, b_BxLxZ: jax.Array,
                           c_BxLxZ: jax.Array, x_BxLxI: jax.Array, ssm0_BxIxZ: jax.Array,
                           chunk: int = 32, impl: str = "auto"
                           ) -> tuple[jax.Array, jax.Array]:
    """(y_BxLxI, the last state) of Mamba's selective scan, in chunks of `chunk` frames:
        s_t = exp(dt_t A) s_{t-1} + dt_t x_t B_t  (s_{-1} = ssm0),   y_t = C_t . s_t
    The state is carried across chunks by a lax.scan whose body is rematerialised, so the
    backward pass keeps one BxIxZ state per chunk and rebuilds a chunk's states when it
    needs them. L is padded up to a multiple of the chunk with dt = 0 (decay 1, drive 0:
    the state passes through unchanged). chunk <= 0 or >= L: one chunk (no remat)."""
    impl = resolve_scan(impl)
    batch, length, inner = x_BxLxI.shape
    if chunk <= 0 or chunk >= length:
        ssm_BxIxZ, y_BxLxI = _scan_chunk(a_IxZ, impl, ssm0_BxIxZ,
                                         (dt_BxLxI, b_BxLxZ, c_BxLxZ, x_BxLxI))
        return y_BxLxI, ssm_BxIxZ
    pad = -length % chunk
    num_chunks = (length + pad) // chunk

    def chunks_of(v):  # B x L x n -> (chunks, B, chunk, n): the scanned axis first
        v = jnp.pad(v, ((0, 0), (0, pad), (0, 0)))
        return jnp.moveaxis(v.reshape(batch, num_chunks, chunk, -1), 1, 0)

    body = jax.checkpoint(lambda ssm, piece: _scan_chunk(a_IxZ, impl, ssm, piece))
    ssm_BxIxZ, y_chunks = jax.lax.scan(
        body, ssm0_BxIxZ, tuple(chunks_of(v) for v in (dt_BxLxI, b_BxLxZ, c_BxLxZ, x_BxLxI)))
    y_BxLxI = jnp.moveaxis(y_chunks, 0, 1).reshape(batch, num_chunks * chunk, inner)
    return y_BxLxI[:, :length], ssm_BxIxZ


def _dt_bias_init(key, shape, dtype=jnp.float32, dt_min=1e-3, dt_max=1e-1):
    """Bias whose softplus is log-uniform in [dt_min, dt_max] (Mamba's dt initialization)."""
    log_dt = jax.random.uniform(key, shape, dtype, math.log(dt_min), math.log(dt_max))
    dt = jnp.exp(log_dt)
    return dt + jnp.log(-jnp.expm1(-dt))  # inverse softplus


def _symmetric_uniform(limit: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -limit, limit)
    return init


def _a_log_init(key, shape, dtype=jnp.float32):
    """S4D-real: A[i, z] = -(z + 1) for every channel i (shape IxZ)."""
    del key
    inner, state = shape
    return jnp.broadcast_to(jnp.log(jnp.arange(1, state + 1, dtype=dtype)), (inner, state))


class MambaLayer(nn.Module):
    """Pre-norm residual Mamba-1 block over a chunk of frames with carried state."""

    width: int
    state_size: int = 16
    conv_kernel: int = 4
    expand: int = 2
    dtype: jnp.dtype = jnp.float32
    scan: str = "auto"  # the in-chunk form, one of MAMBA_SCANS (module docstring)
    scan_chunk: int = 32  # frames per chunk of the scan; 0 = the whole call in one

    @property
    def inner(self) -> int:
        return self.expand * self.width

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.width / 16)

    def init_state(self, batch: int) -> dict[str, jax.Array]:
        return {
            "conv": jnp.zeros((batch, self.conv_kernel - 1, self.inner), self.dtype),
            "ssm": jnp.zeros((batch, self.inner, self.state_size), jnp.float32),
        }

    @nn.compact
    def __call__(self, h_BxLxD: jax.Array, state: dict[str, jax.Array]):
        inner, n, length = self.inner, self.state_size, h_BxLxD.shape[1]
        x_BxLxD = layers.RMSNorm(self.dtype, name="norm")(h_BxLxD)
        x_BxLxI, z_BxLxI = jnp.split(layers.Dense(2 * inner, ("embed", "mlp"), dtype=self.dtype,
                                                  name="in_proj")(x_BxLxD), 2, axis=-1)

        # Depthwise causal conv: the carried W-1 inputs are the left context of this chunk.
        conv_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", 0, 1)
        kernel_WxI = layers.param(self, "conv_kernel", conv_init,
                                  (self.conv_kernel, inner), ("conv", "mlp"))
        bias_I = layers.param(self, "conv_bias", nn.initializers.zeros, (inner,), ("mlp",))
        # Bx(W-1+L)xI: the carried inputs, then this chunk's.
        buf = jnp.concatenate([state["conv"].astype(self.dtype), x_BxLxI], axis=1)
        conv_BxLxI = sum(buf[:, w:w + length] * kernel_WxI[w].astype(self.dtype)
                         for w in range(self.conv_kernel))
        x_BxLxI = nn.silu(conv_BxLxI + bias_I.astype(self.dtype))
        conv_state = buf[:, length:]  # Bx(W-1)xI: the last W-1 inputs, the next state

        # Input-dependent (selective) dt, B and C; dt of rank A = dt_rank.
        dbc = layers.Dense(self.dt_rank + 2 * n, ("mlp", None), dtype=self.dtype,
                           name="x_proj")(x_BxLxI)  # BxLx(A+2Z)
        dt_BxLxA, b_BxLxZ, c_BxLxZ = jnp.split(
            dbc.astype(jnp.float32), [self.dt_rank, self.dt_rank + n], axis=-1)
        dt_BxLxI = layers.Dense(inner, (None, "mlp"), dtype=jnp.float32, name="dt_proj",
                                kernel_init=_symmetric_uniform(self.dt_rank ** -0.5)
                                )(dt_BxLxA)
        dt_bias_I = layers.param(self, "dt_bias", _dt_bias_init, (inner,), ("mlp",))
        dt_BxLxI = jax.nn.softplus(dt_BxLxI + dt_bias_I)

        a_log_IxZ = layers.param(self, "A_log", _a_log_init, (inner, n), ("mlp", "state"))
        skip_I = layers.param(self, "D", nn.initializers.ones, (inner,), ("mlp",))
        x32_BxLxI = x_BxLxI.astype(jnp.float32)
        y_BxLxI, ssm_BxIxZ = chunked_selective_scan(
            dt_BxLxI, -jnp.exp(a_log_IxZ), b_BxLxZ, c_BxLxZ, x32_BxLxI, state["ssm"],
            self.scan_chunk, self.scan)
        y_BxLxI = y_BxLxI + skip_I * x32_BxLxI

        y_BxLxI = y_BxLxI.astype(self.dtype) * nn.silu(z_BxLxI)
        out_BxLxD = layers.Dense(self.width, ("mlp", "embed"), dtype=self.dtype,
                                 name="out_proj")(y_BxLxI)
        h_BxLxD = layers.constrain(h_BxLxD + out_BxLxD, ("batch", "length", "embed"))
        return h_BxLxD, {"conv": conv_state, "ssm": ssm_BxIxZ}
