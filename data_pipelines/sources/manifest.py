"""A folder of audio files described by JSONL manifests, one object per utterance:

  {"path": "clips/a.wav", "text": "hello there", "speaker": "s1"}       required fields
  "id", "start", "duration", "channel", "reply"                          optional fields

Paths are relative to the manifest's folder (or absolute). `splits` maps a split to
manifest files under ROOT, e.g. {"train": ("train.jsonl",), "eval": ("eval.jsonl",)}.
`reply` (e.g. an answer written offline by a text LLM from the transcript) lets the
dialogue scenarios use the utterance as a question; `start`/`duration` cut a segment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from data_pipelines.sources.builder import RealSpeechBuilder
from data_pipelines.sources.utterances import Item, SplitStats, broken, read_jsonl


def manifest_item(entry: dict, folder: Path, where: str) -> Item:
    try:
        path = Path(entry["path"])
        text = entry["text"]
        if text is not None and not isinstance(text, str):
            raise TypeError(f"text is a {type(text).__name__}")
        duration = entry.get("duration")
        channel = entry.get("channel")
        return Item(id=str(entry.get("id") or path.stem),
                    path=path if path.is_absolute() else folder / path, text=text,
                    speaker=str(entry.get("speaker") or ""), where=where,
                    start_s=float(entry.get("start") or 0.0),
                    duration_s=None if duration is None else float(duration),
                    channel=None if channel is None else int(channel),
                    reply=str(entry.get("reply") or ""))
    except (KeyError, TypeError, ValueError) as e:
        return broken(where, f"manifest entry is malformed ({type(e).__name__}: {e})")


class LocalManifest(RealSpeechBuilder):
    """Utterances listed by JSONL manifests over a folder of audio files."""

    name = "local_manifest"
    DEFAULT_SPLITS = {"train": ("train.jsonl",), "eval": ("eval.jsonl",)}

    def list_items(self, parts: Sequence[str], stats: SplitStats) -> Iterator[Item]:
        del stats
        for name in parts:
            manifest = self.root / name
            if not manifest.is_file():
                raise FileNotFoundError(f"manifest {manifest} does not exist")
            for where, entry, problem in read_jsonl(manifest):
                yield (manifest_item(entry, manifest.parent, where) if entry is not None
                       else broken(where, problem))
