"""The paper-size model (SALMONN-omni v2, arXiv 2505.17060), for compile and memory checks.

  encoder      32 Mamba blocks, d=2048 (distilled from Whisper-large-v3 in the paper)
  LLM          the Llama-3-8B-Instruct shape: 32 layers, d=4096, 32 heads / 8 kv heads,
               SwiGLU 14336, vocab 128256, RoPE theta 500000; LoRA rank 32 on q, k, v, o
  synthesizer  ~0.5B (the paper fine-tunes CosyVoice2-0.5B): 24 layers, d=1280
Stage 1 (the default variant) trains the connector and LoRA only (encoder and LLM frozen);
`:stage2` adds the synthesizer; `:stage3` is DPO (LoRA and connector, lr 1e-6, 40 steps,
--config.train.init_from=STAGE2_RUN). Other variants as in tiny.py.

  python -m omni_jax.benchmarks --config=configs/salmonn_omni_8b.py --what=params

Training it needs a pretrained LLM and encoder and real corpora; nothing here downloads them.
"""

from configs import common, default, tiny


def get_config(arg=None):
    c = default.get_config()
    c.name = "salmonn_omni_8b"
    c.data.num_blocks = 375  # 30 s per training sequence
    c.data.prompt_len = 64
    c.data.tokenizer.vocab_size = 128256
    c.data.pipeline.batch_size = 128  # the paper's global batch

    e = c.model.encoder
    e.kind, e.num_layers, e.width, e.state_size, e.expand, e.num_heads = (
        "mamba", 32, 2048, 16, 2, 16)

    llm = c.model.llm
    llm.num_layers, llm.width, llm.num_heads, llm.num_kv_heads = 32, 4096, 32, 8
    llm.mlp_dim, llm.rope_theta, llm.max_len = 14336, 500000.0, 8192
    llm.lora_rank, llm.lora_alpha, llm.lora_targets = 32, 32.0, ("q", "k", "v", "o")

    s = c.model.synth
    s.num_layers, s.width, s.num_heads, s.num_kv_heads, s.mlp_dim = 24, 1280, 20, 20, 3840

    # FSDP over every device: replicated (data-parallel), the 8B training state and its
    # gradients need ~106 GB per device (docs/BENCHMARKS.md, compile on 64 devices).
    c.mesh.data, c.mesh.fsdp = 1, -1
    c.model.dtype = "bfloat16"
    c.model.remat = "dots_no_batch"
    c.train.learning_rate = 4e-5  # stage 1 in the paper
    variants = dict(tiny.VARIANTS, stage3=common.dpo_stage("dpo"))  # the paper's: lr 1e-6, 40 steps
    return common.apply_variants(c, arg or "stage1", variants)
