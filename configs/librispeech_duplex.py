"""The tiny duplex model with real users: every scenario's user turns from LibriSpeech.

The scenarios of `tiny.py` (ASR, QA turn-taking, barge-in with and without echo,
backchannels, third speakers, ...) are generated as before, but the user says one of a
LibriSpeech speaker's own utterances (`data.source="corpus"`, see
`data_pipelines/scenarios/speakers.py` for what a corpus supplies and what it cannot:
scripted phrases come in a stand-in espeak voice, and LibriSpeech has no replies, so the
assistant answers with a world reply). Third speakers are other LibriSpeech speakers. Train
users come from train-clean-100, eval users from dev-clean (speakers disjoint from train).

  python -m omni_jax.main --config=configs/librispeech_duplex.py \\
      --config.data.corpus.root=/path/to/LibriSpeech --workdir=DIR

`root` is the folder that holds `train-clean-100/` and `dev-clean/` (as unpacked from
openslr.org/12; nothing is downloaded). The first run reads the corpus once into an
array_record dataset under DIR/corpus (utterances over `max_seconds` are left out), trains
the tokenizer on the world's text plus up to `data.corpus.tokenizer_texts` train
transcripts, then generates the dialogues. More data: `--config.data.corpus.train_parts=
"('train-clean-100', 'train-clean-360')"`. Expected result: not measured yet.

Variants (comma-separated, also every `tiny.py` variant, e.g. `:short,negative_ce`):
  short        a quick smoke run: 200 dialogues, 100 steps
  libriheavy   LibriHeavy instead: `--config.data.corpus.root=` the folder of its cut
               manifests (libriheavy_cuts_small.jsonl.gz, ..._dev.jsonl.gz) and
               `--config.data.corpus.audio_root=` the LibriLight audio folder
"""

from configs import common, tiny


def _libriheavy(config):
    config.data.corpus.kind = "libriheavy"
    config.data.corpus.train_parts = ()  # the layout's default: the small cuts / dev cuts
    config.data.corpus.eval_parts = ()


def _short(config):
    config.data.train_dialogues = 200
    config.data.eval_dialogues = 20
    config.train.steps = 100
    config.train.warmup_steps = 10
    config.train.eval_every = 100
    config.train.checkpoint_every = 50


VARIANTS = dict(tiny.VARIANTS, short=_short, libriheavy=_libriheavy)


def get_config(arg=None):
    c = tiny.get_config()
    c.name = "librispeech_duplex"
    c.data.source = "corpus"  # users speak the turns of data.corpus
    c.data.corpus.kind = "librispeech"
    c.data.corpus.root = ""  # required: the LibriSpeech folder
    c.data.corpus.train_parts = ("train-clean-100",)
    c.data.corpus.eval_parts = ("dev-clean",)
    # A read sentence must leave room for the reply and interruptions in num_blocks.
    c.data.corpus.max_seconds = 8.0
    c.data.corpus.replies = "no"  # LibriSpeech has none: answers are world replies
    c.data.num_blocks = 150  # 12 s: a real question, a long reply and a barge-in fit
    c.data.tokenizer.vocab_size = 1024  # the corpus's words, not only the world's
    c.data.train_dialogues = 3000
    c.data.eval_dialogues = 100
    # A long or broken recording is skipped and counted (corpus build and dialogues).
    c.data.on_bad_sample = "skip"
    c.train.steps = 1500
    c.train.warmup_steps = 100
    c.train.eval_every = 500
    c.train.checkpoint_every = 250
    return common.apply_variants(c, arg, VARIANTS)
