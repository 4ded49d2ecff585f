"""GigaSpeech: its JSON metadata over opus (or wav) files, read from disk.

  ROOT/GigaSpeech.json   {"audios": [{"aid", "path", "segments": [{"sid", "begin_time",
                          "end_time", "text_tn", "speaker", "subsets": ["{XS}", ...]}]}]}
  ROOT/<path>            the long recording (opus in the release; any readable format)

`splits` maps a split to subset tags, e.g. {"train": ("{XS}",), "eval": ("{DEV}",)}.
`text_tn` is upper case with tags: punctuation tags become punctuation, and garbage tags
(<SIL>, <NOISE>, <MUSIC>, <OTHER>) are removed; a segment with no words left is not speech
and is filtered (counted, not an error). GigaSpeech has no speaker ids: the recording id
(`aid`) stands in, so one "speaker" is one podcast/video/audiobook recording.
"""

from __future__ import annotations

import json
import re
from typing import Iterator, Sequence

from data_pipelines.sources.builder import RealSpeechBuilder
from data_pipelines.sources.utterances import Item, SplitStats, broken

METADATA = "GigaSpeech.json"
PUNCTUATION_TAGS = {"<COMMA>": ",", "<PERIOD>": ".", "<QUESTIONMARK>": "?",
                    "<EXCLAMATIONPOINT>": "!"}
GARBAGE_TAGS = ("<SIL>", "<NOISE>", "<MUSIC>", "<OTHER>")
_TAG = re.compile(r"<[A-Z]+>")


def convert_text(text_tn: str) -> str:
    """'HELLO <COMMA> WORLD <PERIOD> <SIL>' -> 'hello, world.'; '' when no words remain."""
    for tag in GARBAGE_TAGS:
        text_tn = text_tn.replace(tag, " ")
    text_tn = " ".join(text_tn.split())
    for tag, mark in PUNCTUATION_TAGS.items():
        text_tn = text_tn.replace(f" {tag}", mark).replace(tag, mark)
    unknown = _TAG.findall(text_tn)
    if unknown:
        raise ValueError(f"unknown GigaSpeech tags {sorted(set(unknown))}")
    text = " ".join(text_tn.split()).lower()
    return text if re.search(r"\w", text) else ""


class LocalGigaspeech(RealSpeechBuilder):
    """GigaSpeech segments from a local copy of the release."""

    name = "local_gigaspeech"
    DEFAULT_SPLITS = {"train": ("{XS}",), "eval": ("{DEV}",)}

    def list_items(self, parts: Sequence[str], stats: SplitStats) -> Iterator[Item]:
        metadata = self.root / METADATA
        if not metadata.is_file():
            raise FileNotFoundError(f"GigaSpeech metadata {metadata} does not exist")
        # The release's metadata is one JSON document (a few GB for XL): read it whole.
        audios = json.loads(metadata.read_text(encoding="utf-8"))["audios"]
        wanted = set(parts)
        for a, audio in enumerate(audios):
            where = f"{metadata}:audios[{a}]"
            try:
                aid, path = audio["aid"], self.audio_root / audio["path"]
                segments = audio["segments"]
            except (KeyError, TypeError) as e:
                yield broken(where, f"audio entry lacks {e}")
                continue
            for s, seg in enumerate(segments):
                seg_where = f"{where}.segments[{s}]"
                try:
                    if not wanted.intersection(seg.get("subsets", ())):
                        continue
                    begin, end = float(seg["begin_time"]), float(seg["end_time"])
                    text = convert_text(seg["text_tn"])
                    sid = seg["sid"]
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    yield broken(seg_where, f"segment is malformed ({type(e).__name__}: {e})")
                    continue
                if not text:
                    stats.filtered += 1  # a <SIL>/<MUSIC>/... segment: not speech
                    continue
                yield Item(id=sid, path=path, text=text, speaker=aid, where=seg_where,
                           start_s=begin, duration_s=end - begin)
