"""A ~1B-parameter duplex model: the size for single-GPU throughput (MFU) work.

  encoder      12 Mamba blocks, d=1024
  LLM          the Llama-3.2-1B shape (16 layers, d=2048, 32 / 8 heads, SwiGLU 8192) with a
               32k vocabulary trained on the corpus
  synthesizer  8 layers, d=1024

  python -m omni_jax.benchmarks --config=configs/omni_1b.py --what=params
"""

from configs import common, default, tiny


def get_config(arg=None):
    c = default.get_config()
    c.name = "omni_1b"
    c.data.num_blocks = 250  # 20 s
    c.data.prompt_len = 32
    c.data.tokenizer.vocab_size = 32000
    c.data.pipeline.batch_size = 32

    e = c.model.encoder
    e.kind, e.num_layers, e.width, e.state_size, e.num_heads = "mamba", 12, 1024, 16, 8

    llm = c.model.llm
    llm.num_layers, llm.width, llm.num_heads, llm.num_kv_heads = 16, 2048, 32, 8
    llm.mlp_dim, llm.rope_theta, llm.max_len = 8192, 500000.0, 2048

    s = c.model.synth
    s.num_layers, s.width, s.num_heads, s.num_kv_heads, s.mlp_dim = 8, 1024, 16, 16, 3072

    c.model.dtype = "bfloat16"
    c.model.remat = "dots_no_batch"
    c.train.learning_rate = 3e-4
    return common.apply_variants(c, arg, tiny.VARIANTS)
