"""Benchmarks that print figures; the last line of output is one JSON object (always with
`device_kind` and `device_count`). One module per `--what`, each with a plain `run(config,
...) -> dict` that the command line (`__main__`) and the tests call:

  python -m omni_jax.benchmarks --config=configs/tiny.py --what=pipeline
  python -m omni_jax.benchmarks --config=configs/salmonn_omni_8b.py --what=params
  python -m omni_jax.benchmarks --config=configs/tiny.py --what=step
  python -m omni_jax.benchmarks --config=configs/tiny.py --what=train_forms
  python -m omni_jax.benchmarks --config=configs/tiny.py --what=train
  python -m omni_jax.benchmarks --config=configs/tiny.py --what=compile --devices=8
  python -m omni_jax.benchmarks --config=configs/tiny.py --what=vocoder
  python -m omni_jax.benchmarks --config=configs/tiny.py --what=intelligibility
  python -m omni_jax.benchmarks --config=configs/tiny.py --what=scan

pipeline     the Grain pipeline's throughput (corpus and tokenizer built first, not timed).
params       parameter counts per component and in total, from `jax.eval_shape`.
step         latency of the jitted streaming `step` and the number of real-time streams.
train_forms  one training forward+backward in scan form and in parallel form.
train        the Trainer's training step on synthetic batches: steps/s, tokens/s, MFU.
compile      the training step compiled ahead of time on --devices fake CPU devices:
             per-device memory, replicated parameters, optionally a remat x dtype table.
vocoder      the speech path: streaming vocoder time per block as a fraction of the block,
             its delay and look-ahead in ms, the feedback's cost per training batch.
intelligibility  WER by an independent recognizer of the reference assistant speech and
             of its log-mel through each vocoder (the speech path's, Griffin-Lim, random phase).
scan         one Mamba layer's forward+backward per selective-scan form and chunk size.
common       what several share: synthetic and abstract batches, timing, devices, mesh.
flops        analytic FLOPs per training step, FLOPs read from compiled HLO, peaks.
"""
