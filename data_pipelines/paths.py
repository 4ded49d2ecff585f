"""Where the data side keeps its TFDS datasets in a run directory (WORKDIR).

  corpus_dir(config, workdir)       the generated corpus (and tfds:NAME datasets)
  real_corpus_dir(config, workdir)  the real corpus of data.source='corpus'
"""

from __future__ import annotations

import os
from pathlib import Path


def corpus_dir(config, workdir: str | os.PathLike) -> Path:
    """The TFDS data_dir of the corpus: config.data.corpus_dir, else WORKDIR/corpus."""
    return Path(config.data.corpus_dir or Path(workdir) / "corpus")


def real_corpus_dir(config, workdir: str | os.PathLike | None = None) -> Path:
    """The TFDS data_dir where the real corpus of data.source='corpus' is built:
    data.corpus.data_dir, else the corpus dir (data.corpus_dir, else WORKDIR/corpus)."""
    if config.data.corpus.data_dir:
        return Path(config.data.corpus.data_dir)
    if workdir is None and not config.data.corpus_dir:
        raise ValueError("config.data.corpus.data_dir: data.source='corpus' builds the real "
                         "corpus under the run's corpus dir, and no workdir was given here; "
                         "set data.corpus.data_dir (or data.corpus_dir)")
    return corpus_dir(config, workdir)
