"""FLOPs: an analytic count per training step, a count read from compiled HLO, and peaks.

Analytic count (`train_step_flops`), the model-FLOPs convention of MFU:
  * one multiply-add is 2 FLOPs; a dense projection of P positions from d_in to d_out costs
    2 * P * d_in * d_out; LoRA adds 2 * P * rank * (d_in + d_out) per adapted projection;
  * attention costs 4 * heads * head_dim FLOPs per visible (query, key) pair (QK^T and AV),
    counted causally: a decoder over T positions has T * (T + 1) / 2 pairs, the
    cross_attention fusion's block-causal memory N * K * (K + 1) pairs, the transformer
    encoder's sliding block window exactly its visible pairs;
  * encoder: subsampling convs, every layer's projections (Mamba: in/x/dt/out projections
    and the C . state read-out as dots; its depthwise conv and the recurrence
    s = decay * s + drive as elementwise FLOPs), the frame-stacking projection; run on both
    streams (2 x batch). Connector, LLM (every position; the output head only at the K x N
    token positions, where the model computes it) and synthesizer likewise;
  * a training step is 3 x the forward (backward = 2 x forward). Rematerialised recompute
    is not model work and is not counted; nor are norms, activations, softmax, RoPE, the
    loss, the optimizer, the embedding lookup, the log-mel frontend's FFT. The frontend's
    mel filterbank (a dot, forward only: env and asst streams in the model, the speech
    target in the loss) is reported on its own and only enters `hlo_comparable`; so does
    the speech path of the train step (`speech_path_flops`: the reference's log-mel and
    the vocoder's mel -> magnitude least squares, forward only, no gradient).

HLO count (`hlo_dot_flops`): XLA's `compiled.cost_analysis()['flops']` counts the body of a
while loop once, so under scanned layers it undercounts by about the layer count. This walks
the optimized HLO text instead and sums 2 x multiply-adds of every dot and convolution
(GPU gemm custom-calls too), multiplying each computation by the trip counts of the loops
that run it (`known_trip_count` in the while's backend config). With remat 'none' that is
the `hlo_comparable` figure: 3 x forward dots + the frontend filterbank.

Peaks: `VENDOR_PEAK_FLOPS` (dense bfloat16, vendor spec) and `measure_peak_flops` (a large
matmul timed on the device).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

import jax
import jax.numpy as jnp

from omni_jax.models.omni import positions_per_block

TRAIN_MULTIPLIER = 3  # forward + backward (2 x forward)

# Dense bfloat16 peak FLOP/s per device, vendor spec. (device_kind substring, FLOP/s); the
# first match wins, so more specific names come first. PCIe H100s are slower: left out.
VENDOR_PEAK_FLOPS = (
    ("H100 PCIe", None),
    ("H100", 989e12),  # H100 SXM
    ("H200", 989e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),  # v5p reports itself as "TPU v5"
)


@dataclasses.dataclass(frozen=True)
class Flops:
    """FLOPs split by how they run: as dots/convolutions, or elementwise."""

    dot: float = 0.0
    elementwise: float = 0.0

    @property
    def total(self) -> float:
        return self.dot + self.elementwise

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.dot + other.dot, self.elementwise + other.elementwise)

    def __mul__(self, factor: float) -> Flops:
        return Flops(self.dot * factor, self.elementwise * factor)

    __rmul__ = __mul__


def dense(positions: float, d_in: int, d_out: int) -> float:
    return 2.0 * positions * d_in * d_out


def causal_pairs(length: int) -> int:
    """Visible (query, key) pairs of a causal mask over `length` positions."""
    return length * (length + 1) // 2


def decoder_flops(batch: int, length: int, num_layers: int, width: int, num_heads: int,
                  num_kv_heads: int, head_dim: int, mlp_dim: int, lora_rank: int = 0,
                  lora_targets: tuple[str, ...] = ()) -> float:
    """Forward FLOPs of `num_layers` causal GQA + SwiGLU layers over `length` positions."""
    q_dim, kv_dim = num_heads * head_dim, num_kv_heads * head_dim
    shapes = dict(q=(width, q_dim), k=(width, kv_dim), v=(width, kv_dim), o=(q_dim, width),
                  gate=(width, mlp_dim), up=(width, mlp_dim), down=(mlp_dim, width))
    positions = batch * length
    per_layer = sum(dense(positions, d_in, d_out) for d_in, d_out in shapes.values())
    if lora_rank:
        per_layer += sum(2.0 * positions * lora_rank * sum(shapes[t]) for t in lora_targets)
    per_layer += 4.0 * q_dim * batch * causal_pairs(length)
    return num_layers * per_layer


def llm_length(config) -> int:
    """LLM positions per training sequence: prompt + K blocks x positions per block."""
    return config.data.prompt_len + config.data.num_blocks * positions_per_block(config)


def llm_forward_flops(config, batch: int) -> Flops:
    """The LLM over its whole training sequence, the output head at the token positions."""
    llm, d = config.model.llm, config.data
    width, head_dim = llm.width, llm.width // llm.num_heads
    length = llm_length(config)
    lora_rank = llm.lora_rank
    flops = decoder_flops(batch, length, llm.num_layers, width, llm.num_heads,
                          llm.num_kv_heads, head_dim, llm.mlp_dim, lora_rank,
                          tuple(llm.lora_targets))
    flops += dense(batch * d.num_blocks * d.tokens_per_block, width, d.tokenizer.vocab_size)
    if config.model.fusion == "cross_attention":
        q_dim, kv_dim = llm.num_heads * head_dim, llm.num_kv_heads * head_dim
        memory = 2 * d.num_blocks  # env and asst entries per block
        pairs = d.tokens_per_block * d.num_blocks * (d.num_blocks + 1)
        per_layer = (dense(batch * length, width, 2 * q_dim)  # q and o
                     + dense(batch * memory, width, 2 * kv_dim)  # k and v of the memory
                     + 4.0 * q_dim * batch * pairs)
        flops += llm.num_layers // llm.cross_attention_every * per_layer
    if config.model.thinking == "implicit":
        flops += dense(batch * d.num_blocks, width, 1)  # speak head
    return Flops(dot=flops)


def encoder_forward_flops(config, batch: int) -> Flops:
    """Both audio streams (2 x batch sequences) through subsampling, layers and stacking."""
    e, a, k = config.model.encoder, config.audio, config.data.num_blocks
    sequences = 2 * batch
    frames = k * (a.block_ms // a.hop_ms)
    dot = 0.0
    channels = a.n_mels
    for _ in range(int(math.log2(e.subsample))):  # kernel-3 stride-2 convs
        frames //= 2
        dot += dense(sequences * frames, 3 * channels, e.width)
        channels = e.width
    positions = sequences * frames
    width, elementwise = e.width, 0.0
    if e.kind == "mamba":
        inner, n = e.expand * width, e.state_size
        dt_rank = math.ceil(width / 16)
        per_layer = (dense(positions, width, 2 * inner) + dense(positions, inner, dt_rank + 2 * n)
                     + dense(positions, dt_rank, inner) + dense(positions, inner, width)
                     + 2.0 * positions * inner * n)  # read-out C . state
        dot += e.num_layers * per_layer
        # Depthwise causal conv and the recurrence: elementwise multiply-adds.
        elementwise = e.num_layers * 2.0 * positions * inner * (e.conv_kernel + n)
    else:
        window, per_block = e.max_blocks, e.stack
        visible_blocks = sum(min(j + 1, window) for j in range(k))
        pairs = sequences * per_block * per_block * visible_blocks
        per_layer = (dense(positions, width, 4 * width)  # q, k, v, out
                     + dense(positions, width, 8 * width)  # GELU MLP in and out (4x)
                     + 4.0 * width * pairs)
        dot += e.num_layers * per_layer
    dot += dense(sequences * k, e.stack * width, width)  # frame stacking projection
    return Flops(dot=dot, elementwise=elementwise)


def connector_forward_flops(config, batch: int) -> Flops:
    m = config.model
    positions = 2 * batch * config.data.num_blocks
    return Flops(dot=dense(positions, m.encoder.width, m.llm.width)
                 + dense(positions, m.llm.width, m.llm.width))


def synth_forward_flops(config, batch: int) -> Flops:
    s, k, a = config.model.synth, config.data.num_blocks, config.audio
    n, llm_width = config.data.tokens_per_block, config.model.llm.width
    num_kv_heads = s.get("num_kv_heads", s.num_heads)
    dot = dense(batch * k, n * llm_width, s.width)
    dot += decoder_flops(batch, k, s.num_layers, s.width, s.num_heads, num_kv_heads,
                         s.width // s.num_heads, s.get("mlp_dim", 3 * s.width))
    dot += dense(batch * k, s.width, (a.block_ms // a.hop_ms) * a.n_mels)
    return Flops(dot=dot)


def frontend_flops(config, batch: int) -> Flops:
    """The mel filterbank of three streams (env, asst, speech target), forward only."""
    a, k = config.audio, config.data.num_blocks
    win = a.sample_rate * a.win_ms // 1000
    n_fft = 1 << (int(win) - 1).bit_length()
    frames = 3 * batch * k * (a.block_ms // a.hop_ms)
    return Flops(dot=dense(frames, n_fft // 2 + 1, a.n_mels))


def speech_path_flops(config, batch: int) -> Flops:
    """The train step's feedback (omni_jax.audio.feedback) on the reference speech: the
    speech target's filterbank and the streaming vocoder's non-negative least squares
    (a spread, then per iteration a fit and an update: three M x X dots per frame); its
    FFTs are not dots. Scheduled feedback (`train.self_feedback`) runs it twice."""
    a, k = config.audio, config.data.num_blocks
    win = a.sample_rate * a.win_ms // 1000
    bins = (1 << (int(win) - 1).bit_length()) // 2 + 1
    frames = batch * k * (a.block_ms // a.hop_ms)
    per_frame = 1 + 1 + 2 * int(config.model.synth.streaming.nnls_iterations)
    runs = 2 if float(config.train.self_feedback) > 0 else 1
    return Flops(dot=runs * per_frame * dense(frames, bins, a.n_mels))


def train_step_flops(config, batch: int) -> dict[str, float]:
    """Analytic FLOPs of one training step on `batch` sequences (see the module docstring).

    Keys: forward FLOPs per part (encoder, connector, llm, synth, frontend, speech_path),
    `forward` (the four model parts), `train_step` = 3 x forward (the MFU numerator) and
    `hlo_comparable` = 3 x forward dots + frontend and speech path dots.
    """
    parts = dict(encoder=encoder_forward_flops(config, batch),
                 connector=connector_forward_flops(config, batch),
                 llm=llm_forward_flops(config, batch),
                 synth=synth_forward_flops(config, batch))
    forward = sum(parts.values(), Flops())
    frontend = frontend_flops(config, batch)
    speech_path = speech_path_flops(config, batch)
    return dict({name: f.total for name, f in parts.items()}, frontend=frontend.total,
                speech_path=speech_path.total, forward=forward.total,
                train_step=TRAIN_MULTIPLIER * forward.total,
                hlo_comparable=TRAIN_MULTIPLIER * forward.dot + frontend.dot
                + speech_path.dot)


# ---- FLOPs from compiled HLO ---------------------------------------------------------------

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{\s*$")
_NAME = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = ")
_ARRAY = re.compile(r"[a-z0-9]+\[([0-9,]*)\]")
_CALLEE = re.compile(r"(?:calls|to_apply|body|true_computation|false_computation)=%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")


def _closing(text: str, start: int) -> int:
    """Index just past the parenthesis that closes the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return len(text)


def _parse_instruction(line: str):
    """(name, output shape, opcode, operand names, attributes) of one HLO instruction
    line, or None. Tuple shapes such as `(s32[], /*index=5*/f32[8]{0})` are skipped whole."""
    found = _NAME.match(line)
    if not found:
        return None
    rest = line[found.end():]
    shape_end = _closing(rest, 0) if rest.startswith("(") else rest.find(" ")
    shape, rest = rest[:shape_end], rest[shape_end:].lstrip()
    paren = rest.find("(")
    if paren <= 0:
        return None
    operands_end = _closing(rest, paren)
    operands = re.findall(r"%([\w.\-]+)", rest[paren:operands_end])
    return found.group(1), shape, rest[:paren], operands, rest[operands_end:]


def _dims(shape: str) -> tuple[int, ...]:
    match = _ARRAY.search(shape)
    return tuple(int(x) for x in match.group(1).split(",") if x) if match else ()


def _ints(attrs: str, name: str) -> tuple[int, ...]:
    match = re.search(name + r"=\{([0-9,]*)\}", attrs)
    return tuple(int(x) for x in match.group(1).split(",") if x) if match else ()


def _instruction_flops(opcode: str, out_shape: str, operands: list[str], attrs: str,
                       shapes: dict[str, tuple[int, ...]]) -> float:
    out = _dims(out_shape)
    if opcode == "dot":
        lhs = shapes.get(operands[0], ())
        contracted = math.prod(lhs[i] for i in _ints(attrs, "lhs_contracting_dims")
                               if i < len(lhs))
        return 2.0 * math.prod(out) * contracted
    if opcode == "convolution":
        labels = re.search(r"dim_labels=[^_]*_([^-]*)->", attrs)
        kernel = shapes.get(operands[1], ())
        if not labels or len(kernel) != len(labels.group(1)):
            return 0.0
        out_features = kernel[labels.group(1).index("o")]
        return 2.0 * math.prod(out) * math.prod(kernel) / out_features
    if opcode == "custom-call" and re.search(r'custom_call_target="[^"]*(gemm|matmul)', attrs):
        lhs = shapes.get(operands[0], ())
        found = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', attrs)
        dims = [int(x.strip('" ')) for x in found.group(1).split(",")] if found else []
        return 2.0 * math.prod(out) * math.prod(lhs[i] for i in dims if i < len(lhs))
    return 0.0


def hlo_dot_flops(hlo_text: str) -> dict[str, float]:
    """FLOPs of every dot, convolution and gemm custom-call in optimized HLO text
    (`compiled.as_text()`), loop bodies multiplied by their known trip counts.

    Returns {'flops', 'loops', 'loops_without_trip_count'} (a loop without a known trip
    count is counted once)."""
    local_flops: dict[str, float] = {}
    calls: dict[str, list[tuple[str, int]]] = {}
    entry, current, shapes = None, None, {}
    loops = unknown = 0
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header and not line.startswith(" "):
            current, shapes = header.group(1), {}
            local_flops[current], calls[current] = 0.0, []
            if line.startswith("ENTRY"):
                entry = current
            continue
        parsed = _parse_instruction(line) if current else None
        if parsed is None:
            continue
        name, out_shape, opcode, operands, attrs = parsed
        shapes[name] = _dims(out_shape) if not out_shape.startswith("(") else ()
        local_flops[current] += _instruction_flops(opcode, out_shape, operands, attrs, shapes)
        repeat = 1
        if opcode == "while":
            loops += 1
            trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', attrs)
            repeat = int(trips.group(1)) if trips else 1
            unknown += trips is None
        callees = _CALLEE.findall(attrs)
        for group in _BRANCHES.findall(attrs):
            callees += re.findall(r"%([\w.\-]+)", group)
        calls[current] += [(callee, repeat) for callee in callees]
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")

    total = 0.0

    def visit(computation: str, times: float, depth: int = 0):
        nonlocal total
        if depth > 64 or computation not in local_flops:
            return
        total += times * local_flops[computation]
        for callee, repeat in calls[computation]:
            visit(callee, times * repeat, depth + 1)

    visit(entry, 1.0)
    return dict(flops=total, loops=loops, loops_without_trip_count=unknown)


def xla_cost_flops(compiled) -> float | None:
    """`compiled.cost_analysis()['flops']` (a dict, or a list of one dict in older JAX)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return None if flops is None else float(flops)


def compiled_check(compiled, analytic: dict, num_devices: int) -> dict:
    """XLA's own FLOP figures of a compiled training step (per device) against the
    analytic ones (`train_step_flops`), as the benchmarks' result keys."""
    xla = xla_cost_flops(compiled)
    hlo = hlo_dot_flops(compiled.as_text())
    per_device = analytic["train_step"] / num_devices
    comparable = analytic["hlo_comparable"] / num_devices
    return dict(
        xla_cost_flops=xla,
        analytic_over_xla_cost=per_device / xla if xla else None,
        hlo_dot_flops=hlo["flops"], hlo_loops=hlo["loops"],
        hlo_loops_without_trip_count=hlo["loops_without_trip_count"],
        analytic_over_hlo_dots=comparable / hlo["flops"] if hlo["flops"] else None)


# ---- peaks ---------------------------------------------------------------------------------

def vendor_peak_flops(device_kind: str) -> float | None:
    """Dense bfloat16 FLOP/s of one device from `VENDOR_PEAK_FLOPS`, None if unknown."""
    for name, peak in VENDOR_PEAK_FLOPS:
        if name.lower() in device_kind.lower():
            return peak
    return None


def measure_peak_flops(device=None, dtype: str = "bfloat16", size: int | None = None,
                       repeats: int = 10) -> dict:
    """Best FLOP/s of a `size` x `size` matmul in `dtype` on `device` (default: the first).

    Default size: 8192 on accelerators, 2048 on a CPU (a few tenths of a second each).
    Returns {'peak_flops', 'matmul_size', 'matmul_dtype', 'seconds'}.
    """
    device = device or jax.devices()[0]
    size = size or (2048 if device.platform == "cpu" else 8192)
    keys = jax.random.split(jax.random.key(0), 2)
    a_NxN, b_NxN = (jax.device_put(jax.random.normal(k, (size, size), dtype), device)
                    for k in keys)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a_NxN, b_NxN))  # compile
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a_NxN, b_NxN))
        best = min(best, time.perf_counter() - start)
    return dict(peak_flops=2.0 * size ** 3 / best, matmul_size=size, matmul_dtype=str(dtype),
                seconds=best)
