"""LibriHeavy: its lhotse cut manifests (JSONL, optionally gzipped) over LibriLight audio.

Each line is a cut: `id`, `start`, `duration`, `channel`, `supervisions` (each with `text`
or `custom.texts[0]`, `speaker`, `start` and `duration` relative to the cut) and `recording`
(`sources[0].source`: the audio path, relative to `audio_root`; `sampling_rate`). Every
supervision becomes one utterance, read by seeking into the (long) LibriLight flac.

`splits` maps a split to manifest files under ROOT, e.g. {"train":
("libriheavy_cuts_small.jsonl.gz",), "eval": ("libriheavy_cuts_dev.jsonl.gz",)}. Text is
kept as LibriHeavy writes it (cased, punctuated); the tokenizer normalizes labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from data_pipelines.sources.builder import RealSpeechBuilder
from data_pipelines.sources.utterances import Item, SplitStats, broken, read_jsonl


def supervision_text(sup: dict[str, Any]) -> str | None:
    text = sup.get("text")
    if text is None:
        texts = (sup.get("custom") or {}).get("texts") or [None]
        text = texts[0]
    return text


def cut_items(cut: dict[str, Any], audio_root: Path, where: str) -> Iterator[Item]:
    """One item per supervision of a cut (times made absolute in the recording)."""
    try:
        source = cut["recording"]["sources"][0]["source"]
        path = Path(source) if Path(source).is_absolute() else audio_root / source
        items = [Item(id=sup.get("id") or f"{cut['id']}-{i}", path=path,
                      text=supervision_text(sup), speaker=str(sup.get("speaker", "")),
                      where=where,
                      start_s=float(cut.get("start", 0.0)) + float(sup.get("start", 0.0)),
                      duration_s=float(sup.get("duration", cut["duration"])),
                      channel=int(sup.get("channel", cut.get("channel", 0))))
                 for i, sup in enumerate(cut["supervisions"])]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        items = [broken(where, f"cut {cut.get('id')!r} is malformed "
                               f"({type(e).__name__}: {e})")]
    yield from items


class LocalLibriheavy(RealSpeechBuilder):
    """LibriHeavy utterances from its cut manifests and a local LibriLight copy."""

    name = "local_libriheavy"
    DEFAULT_SPLITS = {"train": ("libriheavy_cuts_small.jsonl.gz",),
                      "eval": ("libriheavy_cuts_dev.jsonl.gz",)}

    def list_items(self, parts: Sequence[str], stats: SplitStats) -> Iterator[Item]:
        del stats
        for name in parts:
            manifest = self.root / name
            if not manifest.is_file():
                raise FileNotFoundError(f"LibriHeavy manifest {manifest} does not exist")
            for where, cut, problem in read_jsonl(manifest):
                yield from (cut_items(cut, self.audio_root, where) if cut is not None
                            else [broken(where, problem)])
