"""Every configuration field, with its default and a one-line meaning.

Experiment files (`tiny.py`, ...) start from `get_config()` here and change what they need.
Run anything with `--config=configs/FILE.py[:VARIANT]` and override fields with
`--config.FIELD=VALUE`, e.g. `--config=configs/tiny.py --config.train.steps=100`.
`omni_jax.configuration.validate` rejects impossible settings, naming the field.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = ml_collections.ConfigDict()
    c.name = "default"  # experiment name (used in logs and reports)
    c.seed = 0  # master seed: corpus generation, pipeline shuffling/augmentation, init

    # ---- audio --------------------------------------------------------------------------
    c.audio = ml_collections.ConfigDict()
    c.audio.sample_rate = 16000  # Hz; every stream is resampled to this
    c.audio.block_ms = 80  # one block: the model hears, emits tokens and speaks this long
    c.audio.win_ms = 25  # log-mel analysis window
    c.audio.hop_ms = 10  # log-mel hop (100 Hz frames); block_ms must be a multiple
    c.audio.n_mels = 80  # mel bins

    # ---- data ---------------------------------------------------------------------------
    c.data = ml_collections.ConfigDict()
    c.data.num_blocks = 100  # K: blocks per training sequence (8 s at 80 ms)
    c.data.tokens_per_block = 1  # N: LLM tokens per block
    c.data.prompt_len = 24  # P: text-prompt tokens before block 0 (padded)
    c.data.heard_tokens_per_block = 4  # H: slots per block of the heard words' tokens (CTC)
    c.data.corpus_dir = ""  # where the generated corpus lives; "" = WORKDIR/corpus
    c.data.source = "embedded"  # embedded (generated world) | tfds:NAME (a built dataset)
    c.data.train_dialogues = 2000  # dialogues generated for the train split
    c.data.eval_dialogues = 200  # dialogues per evaluation split (held-out voices)
    # Scenario mixture: name -> relative weight (0 disables it).
    c.data.scenarios = ml_collections.ConfigDict(dict(
        asr=1.0,  # streaming ASR: transcript emitted while listening
        enhancement=0.5,  # re-speak noisy/reverberant input clean
        target_speaker=0.5,  # enrolment phrase, then re-speak only the target speaker
        tts=0.5,  # read aloud the text given in the prompt
        qa=2.0,  # spoken question, spoken answer (turn-taking)
        pause=0.5,  # the question in two parts, a 0.5-1.5 s pause between: answer at the end
        barge_in_ci=1.0,  # context-independent barge-in (stop on a trigger word)
        barge_in_echo=1.0,  # the same while hearing own echo (gains 0, 0.1, 1.0)
        barge_in_cd=1.0,  # context-dependent barge-in (relevant vs irrelevant question)
        backchannel=1.0,  # user backchannels while the assistant speaks: keep speaking
        third_speaker=1.0,  # unrelated third-speaker chatter: keep speaking
        multi_turn=1.0,  # dialogues mixing the above
    ))
    c.data.max_text_words = 24  # a reply or question longer than this is an error
    c.data.on_bad_sample = "raise"  # raise | skip (skips are counted and logged)

    # Voices (espeak-ng variants); the five sets are disjoint (by family of variants), and the
    # evaluation ones speak at pitches and rates no training voice has (voices.voice_sets).
    c.data.voices = ml_collections.ConfigDict()
    c.data.voices.num_user = 24  # user voices for training
    c.data.voices.num_eval_user = 6  # user voices reserved for evaluation only
    c.data.voices.num_third = 8  # third-speaker voices for training
    c.data.voices.num_eval_third = 4  # third-speaker voices reserved for evaluation only
    c.data.voices.num_assistant = 1  # assistant voices (the synthesizer's targets)
    c.data.voices.language = "en-us"  # espeak-ng language

    # data.source="corpus": the generated scenarios with their users' turns drawn from this
    # real speech corpus (data_pipelines/sources/real.py, scenarios/real_speech.py).
    c.data.corpus = ml_collections.ConfigDict()
    c.data.corpus.kind = "librispeech"  # librispeech | libriheavy | gigaspeech | manifest
    c.data.corpus.root = ""  # the corpus folder on disk (required with source="corpus")
    c.data.corpus.audio_root = ""  # libriheavy: the LibriLight audio folder ("" = root)
    c.data.corpus.train_parts = ()  # the layout's parts of the train split; () = its default
    c.data.corpus.eval_parts = ()  # the layout's parts of the eval split; () = its default
    c.data.corpus.max_seconds = 0.0  # longer utterances are left out of the build (0 = keep)
    c.data.corpus.replies = "auto"  # auto | yes | no: turns carry replies (auto: scan a manifest)
    c.data.corpus.data_dir = ""  # where the array_record build goes; "" = data.corpus_dir
    c.data.corpus.tokenizer_texts = 20000  # train transcripts (evenly spread) tokenizer learns

    # Timing rules (see data_pipelines.contract.TimingRules).
    c.data.timing = ml_collections.ConfigDict()
    c.data.timing.response_delay_blocks = 2  # user turn end -> start transition
    c.data.timing.synth_delay_tokens = 4  # text tokens before speech starts (v2: 4)
    c.data.timing.stop_delay_blocks = 1  # trigger word end -> stop label
    c.data.timing.stop_window_blocks = 3  # a stop later than this is a miss (evaluation)
    c.data.timing.asr_lag_blocks = 1  # heard word end -> its transcript tokens

    # Augmentation of the environment stream (targets stay clean).
    c.data.augment = ml_collections.ConfigDict()
    c.data.augment.noise_prob = 0.5  # chance of background noise in a dialogue
    c.data.augment.snr_db = (5.0, 30.0)  # noise SNR range against the user speech
    c.data.augment.reverb_prob = 0.3  # chance of room reverb on the environment
    c.data.augment.rt60_s = (0.15, 0.6)  # synthetic room RT60 range
    c.data.augment.echo_prob = 0.3  # chance of own echo in scenarios that do not set it
    c.data.augment.echo_gain = (0.05, 1.0)  # random echo gain range
    c.data.augment.echo_delay_ms = (10.0, 60.0)  # acoustic echo delay range
    c.data.augment.noise_dir = ""  # optional folder of real noise files (never required)
    c.data.augment.rir_dir = ""  # optional folder of real room impulse responses
    c.data.augment.gain_db = (-6.0, 3.0)  # random level of the whole environment stream

    # Tokenizer (sentencepiece, trained on the world's text).
    c.data.tokenizer = ml_collections.ConfigDict()
    c.data.tokenizer.vocab_size = 384  # including control and state tokens
    c.data.tokenizer.model_type = "unigram"  # unigram | bpe | word
    c.data.tokenizer.path = ""  # "" = WORKDIR/tokenizer.model, trained when missing

    # Grain pipeline.
    c.data.pipeline = ml_collections.ConfigDict()
    c.data.pipeline.batch_size = 8  # global batch (split over processes)
    c.data.pipeline.shuffle = True  # shuffle the source each epoch
    c.data.pipeline.worker_count = 0  # grain multiprocess workers (0 = in-process)
    c.data.pipeline.prefetch_buffer = 4  # batches prefetched per worker
    c.data.pipeline.crop = "start"  # start | random: how a long dialogue is cut to K blocks
    c.data.pipeline.num_epochs = -1  # -1 = repeat forever

    # ---- model --------------------------------------------------------------------------
    c.model = ml_collections.ConfigDict()
    c.model.fusion = "interleave"  # interleave (v2) | cross_attention (v1)
    c.model.thinking = "explicit"  # explicit (v2) | negative_ce (v1) | implicit
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
    c.model.remat = "none"  # none | full | dots | dots_no_batch: named remat policy

    c.model.encoder = ml_collections.ConfigDict()
    c.model.encoder.kind = "mamba"  # mamba (causal selective SSM) | transformer (cached)
    c.model.encoder.num_layers = 4  # encoder blocks
    c.model.encoder.width = 128  # encoder model width
    c.model.encoder.num_heads = 4  # transformer kind only
    c.model.encoder.state_size = 16  # mamba SSM state size
    c.model.encoder.conv_kernel = 4  # mamba depthwise causal conv width
    c.model.encoder.expand = 2  # mamba inner expansion
    c.model.encoder.subsample = 4  # 100 Hz mel -> 25 Hz (two stride-2 convs)
    c.model.encoder.stack = 2  # frames stacked per embedding (25 Hz x 2 = one per 80 ms)
    c.model.encoder.scan = "auto"  # mamba scan in a chunk: auto | associative | sequential
    c.model.encoder.scan_chunk = 32  # mamba scan: frames per rematerialised chunk (0 = one)
    c.model.encoder.max_blocks = 128  # transformer kind: attention window / cache, in blocks
    c.model.encoder.ctc_head = False  # a CTC head on the encoder over the heard words (loss.ctc)
    c.model.encoder.remat = ""  # remat policy of the encoder layers ("" = model.remat)

    c.model.llm = ml_collections.ConfigDict()
    c.model.llm.num_layers = 4  # decoder layers
    c.model.llm.width = 256  # model width
    c.model.llm.num_heads = 4  # query heads
    c.model.llm.num_kv_heads = 2  # key/value heads (grouped-query attention)
    c.model.llm.mlp_dim = 768  # SwiGLU hidden size
    c.model.llm.rope_theta = 10000.0  # RoPE base
    c.model.llm.max_len = 1024  # positions a serving cache holds (>= prompt + K blocks)
    # Sliding window of a stream (positions after the prompt, whole blocks; 0 = max_len -
    # prompt_len): past it the cache keeps the prompt and the last `window` positions, so
    # a stream has no length limit (omni_jax/models/kv_cache.py).
    c.model.llm.window = 0
    c.model.llm.cache_update = "once"  # once (one write after the layer scan) | per_layer
    c.model.llm.cross_attention_every = 2  # cross_attention fusion: every Nth layer
    c.model.llm.lora_rank = 0  # 0 = no LoRA adapters
    c.model.llm.lora_alpha = 32.0  # LoRA scaling numerator (scale = alpha / rank)
    c.model.llm.lora_targets = ("q", "v")  # projections that get LoRA adapters
    c.model.llm.remat = ""  # remat policy of the LLM layers ("" = model.remat)
    c.model.llm.qkv_bias = False  # biases on q/k/v (Qwen2-style checkpoints)
    # Parallel self-attention: auto (cuDNN's fused kernel on a GPU in bf16/fp16, else the
    # reference einsums) | reference | xla (jax.nn.dot_product_attention) | cudnn.
    c.model.llm.attention = "auto"
    # A Llama/Qwen2 checkpoint directory (HF safetensors) a fresh run starts the LLM from.
    c.model.llm.pretrained_path = ""  # "" = random init (see omni_jax/models/pretrained.py)
    c.model.llm.pretrained_vocab = "exact"  # exact | prefix: copy the first min(V) rows

    c.model.synth = ml_collections.ConfigDict()
    c.model.synth.num_layers = 2  # synthesizer decoder layers
    c.model.synth.width = 128  # synthesizer width
    c.model.synth.num_heads = 4  # synthesizer heads
    c.model.synth.num_kv_heads = 4  # synthesizer key/value heads
    c.model.synth.mlp_dim = 384  # synthesizer SwiGLU hidden size
    c.model.synth.rope_theta = 10000.0  # RoPE base over block positions
    c.model.synth.llm_layer = -1  # LLM hidden layer it reads (-1 = last)
    c.model.synth.vocoder = "griffin_lim"  # offline listening: griffin_lim | a registered one
    # The speech path (omni_jax/audio/feedback.py): streaming Griffin-Lim with look-ahead,
    # the same in training, the engine, the runner and the export.
    c.model.synth.streaming = ml_collections.ConfigDict()
    c.model.synth.streaming.kind = "griffin_lim"  # a registered streaming vocoder
    c.model.synth.streaming.lookahead_frames = 2  # frames refined before commit (10 ms each)
    c.model.synth.streaming.iterations = 16  # fast Griffin-Lim iterations per block
    c.model.synth.streaming.momentum = 0.99  # fast Griffin-Lim momentum
    c.model.synth.streaming.nnls_iterations = 20  # mel -> linear magnitude refinements
    c.model.synth.remat = ""  # remat policy of the synthesizer layers ("" = model.remat)

    # ---- loss ---------------------------------------------------------------------------
    c.loss = ml_collections.ConfigDict()
    c.loss.text = 1.0  # weight of L_text
    c.loss.speech = 0.1  # weight of L_speech (log-mel L1 + L2: ~10x the token CE at init)
    c.loss.think = 0.1  # explicit: weight of <think> labels
    c.loss.shift = 1.0  # explicit: weight of <shift> labels
    c.loss.transition = 1.0  # negative_ce: weight of <start_speak>/<end_speak> labels
    c.loss.lambda_think = -0.1  # negative_ce: weight at think positions (< 0)
    c.loss.think_form = "paper"  # paper (negative CE) | unlikelihood (-log(1 - p))
    c.loss.speak_head = 1.0  # implicit: weight of the speak/listen head
    c.loss.dpo_beta = 0.1  # DPO: beta of the sigmoid loss
    c.loss.dpo_sft = 0.0  # DPO: weight of the SFT loss on the chosen side
    c.loss.ctc = 0.0  # weight of the encoder's CTC loss on data's heard_tokens (needs ctc_head)

    # ---- training -----------------------------------------------------------------------
    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000  # optimizer steps
    c.train.learning_rate = 1e-3  # peak learning rate
    c.train.warmup_steps = 100  # linear warmup
    c.train.weight_decay = 0.01  # AdamW weight decay
    c.train.grad_clip = 1.0  # global-norm clipping
    c.train.frozen = ()  # parameter-path regexes kept frozen
    c.train.objective = "sft"  # sft (the losses) | dpo (stage 3: preference pairs)
    c.train.init_from = ""  # a run directory whose newest checkpoint's params start this run
    c.train.dpo_on_policy = False  # DPO: rejected = the starting model's own failures
    c.train.dpo_on_policy_dialogues = 0  # DPO on-policy: train dialogues observed (0 = all)
    c.train.self_feedback = 0.0  # share of rows fed the model's own speech (scheduled feedback)
    c.train.log_every = 10  # steps between progress lines
    c.train.eval_every = 500  # steps between evaluations
    # Steps between runs of the suites during training (0 = only after the last step; a
    # multiple of eval_every): their headline figures join metrics.jsonl as suites/NAME/KEY.
    c.train.suites_every = 0
    c.train.checkpoint_every = 200  # steps between checkpoints
    c.train.max_consecutive_nonfinite = 10  # non-finite steps in a row before the run stops
    # Persistent XLA compilation cache shared by runs ("" = off): a restart loads its steps.
    c.train.compilation_cache_dir = "~/.cache/omni_jax/xla"
    c.train.compilation_cache_min_s = 1.0  # keep compiles that took at least this long
    c.train.profile_steps = 0  # > 0: a jax.profiler trace of that many steps in DIR/profile

    # ---- evaluation suites (omni_jax.evaluation.suites) --------------------------------
    c.eval = ml_collections.ConfigDict()
    c.eval.suites = "auto"  # auto (trained scenarios) | all | none | comma list of suites
    c.eval.cases = 16  # dialogues per suite (held-out voices)
    c.eval.temperature = 0.0  # 0 = greedy
    c.eval.seed = 0  # dialogues and sampling
    c.eval.echo_delay_s = 0.03  # acoustic delay of the model's own echo
    c.eval.early_stop_tolerance_s = 0.4  # a stop this close to the reply's end is not a stop
    c.eval.max_turn_latency_s = 1.0  # a reply starting later fails turn-taking
    c.eval.min_reply_s = 1.0  # a reply is sustained with >= this much speech (FDB's rule)
    c.eval.min_reply_words = 3  # ... or more than this many words
    c.eval.recognizer = "pocketsphinx_world"  # independent recognizer of speech (recognizer.py)
    c.eval.align_max_lag_s = 0.16  # lag search when aligning speech to its reference
    c.eval.pictures = 2  # PNG timelines and wavs per suite
    c.eval.splits = ("eval",)  # user-speech splits scored (fsdd also has "test")

    # ---- checkpoints --------------------------------------------------------------------
    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.keep_last = 3  # newest checkpoints kept
    c.checkpoint.keep_every = 0  # also keep every Nth step forever (0 = none)
    c.checkpoint.async_save = True  # write in the background while training goes on

    # ---- parallelism --------------------------------------------------------------------
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # data-parallel axis size (-1 = the rest of the devices)
    c.mesh.fsdp = 1  # fully-sharded data-parallel axis size
    c.mesh.tensor = 1  # tensor-parallel axis size
    # Logical axis -> mesh axes (None = replicated). Parallelism is data, not code.
    c.mesh.rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv", None),
        ("vocab", "tensor"),
        ("layers", None),
        ("length", None),
        ("blocks", None),
        ("state", None),
        ("conv", None),
        ("mel", None),
    )
    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = False  # call jax.distributed.initialize() (multi-host)
    c.distributed.coordinator_address = ""  # host:port; "" = auto-detect (Slurm, TPU, GKE)
    c.distributed.num_processes = 0  # 0 = auto-detect
    c.distributed.process_id = -1  # -1 = auto-detect
    return c
