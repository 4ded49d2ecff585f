"""The text tokenizer: sentencepiece trained on the world's text, with reserved state tokens.

Every tokenizer agrees on the ids of the control tokens (`contract.PAD_ID` ...) and of the
state tokens (`contract.STATE_TOKEN_IDS`); `train_tokenizer` checks this and raises
otherwise. State tokens are atomic: `encode` splits them out of the text itself, so the
result does not depend on how the sentencepiece model type treats user-defined symbols.

`normalize` is the one text form of labels and WER: lowercase, punctuation removed (an
apostrophe inside a word stays), single spaces. Removing punctuation never splits a
word ("uh-huh" -> "uhhuh"), so the words of a normalized text are its whitespace words.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from data_pipelines import contract

_CONTROL_IDS = (contract.PAD_ID, contract.UNK_ID, contract.BOS_ID, contract.EOS_ID)
_STATE_PATTERN = re.compile("(" + "|".join(re.escape(t) for t in contract.STATE_TOKENS) + ")")
_PUNCTUATION = re.compile(r"[^\w\s']|_")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")
_WORD_START = "\u2581"  # sentencepiece's word-boundary marker
# config.data.tokenizer.model_type: the sentencepiece model types `train_tokenizer` supports.
TOKENIZER_TYPES = ("unigram", "bpe", "word")


class TokenizerError(ValueError):
    """A tokenizer that cannot be trained or loaded, or that breaks the reserved ids."""


def normalize(text: str) -> str:
    """Lowercase, no punctuation (apostrophes inside words stay), single spaces."""
    text = _PUNCTUATION.sub("", text.lower())
    text = _LOOSE_APOSTROPHE.sub("", text)
    return _SPACES.sub(" ", text).strip()


class Tokenizer:
    """A sentencepiece model plus the project's conventions (normalization, state tokens)."""

    def __init__(self, model_proto: bytes, where: str = "tokenizer"):
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError / OSError on bad protos
            raise TokenizerError(f"{where}: not a valid sentencepiece model ({e})") from None
        self._check_reserved_ids(where)
        pieces = [self._sp.id_to_piece(i) for i in range(self.vocab_size)]
        # Ids whose piece begins a new word; encode_words splits at these.
        self._starts_word = np.array([p.startswith(_WORD_START) for p in pieces])
        self._special_ids = frozenset(_CONTROL_IDS) | frozenset(contract.STATE_TOKEN_IDS.values())

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model {str(path)!r} does not exist "
                                    "(train one with data_pipelines.tokenizer.train_tokenizer)")
        return cls(path.read_bytes(), where=f"tokenizer model {str(path)!r}")

    def _check_reserved_ids(self, where: str):
        expected = {contract.PAD: contract.PAD_ID, contract.UNK: contract.UNK_ID,
                    contract.BOS: contract.BOS_ID, contract.EOS: contract.EOS_ID,
                    **contract.STATE_TOKEN_IDS}
        size = self._sp.get_piece_size()
        actual = {piece: self._sp.piece_to_id(piece) for piece in expected}
        wrong = {p: (i, actual[p]) for p, i in expected.items()
                 if actual[p] != i or i >= size or self._sp.id_to_piece(i) != p}
        if wrong:
            raise TokenizerError(f"{where}: reserved token ids differ from the contract "
                                 f"(piece: (expected, actual)) {wrong}")

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    normalize = staticmethod(normalize)

    def encode(self, text: str) -> list[int]:
        """Ids of `text` as written (no normalization); state tokens map to their own ids."""
        ids: list[int] = []
        for part in _STATE_PATTERN.split(text):
            if part in contract.STATE_TOKEN_IDS:
                ids.append(contract.STATE_TOKEN_IDS[part])
            elif part.strip():
                ids.extend(self._sp.encode(part))
        return ids

    def encode_words(self, text: str) -> list[list[int]]:
        """One id list per word of normalize(text); together they are encode(normalize(text))."""
        words = normalize(text).split()
        if not words:
            return []
        ids = self._sp.encode(" ".join(words))
        starts = np.flatnonzero(self._starts_word[ids]).tolist()
        if len(starts) == len(words) and starts[0] == 0:
            bounds = starts + [len(ids)]
            return [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        # A model whose pieces do not mark every word start: encode word by word.
        return [self._sp.encode(w) for w in words]

    def decode(self, ids: Iterable[int], keep_special: bool = False) -> str:
        """Text of `ids`; control and state tokens are dropped unless `keep_special`."""
        ids = [int(i) for i in ids]
        if not keep_special:
            return self._sp.decode([i for i in ids if i not in self._special_ids])
        # Keep the special tokens visible as their names, between the decoded text runs.
        out, run = [], []
        for i in ids:
            if i in self._special_ids:
                out += [self._sp.decode(run), self.piece_of(i)] if run else [self.piece_of(i)]
                run = []
            else:
                run.append(i)
        if run:
            out.append(self._sp.decode(run))
        return " ".join(s for s in out if s)

    def id_of(self, piece: str) -> int:
        token_id = self._sp.piece_to_id(piece)
        if token_id == contract.UNK_ID and piece != contract.UNK:
            raise KeyError(f"piece {piece!r} is not in the vocabulary")
        return token_id

    def piece_of(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise KeyError(f"token id {token_id} outside the vocabulary [0, {self.vocab_size})")
        return self._sp.id_to_piece(int(token_id))


def _drop_pieces(model_proto: bytes, drop: Sequence[str]) -> bytes:
    """The model without the given pieces (the word model adds '▁<think>' copies of symbols)."""
    from sentencepiece import sentencepiece_model_pb2  # protobuf: only the word model

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(model_proto)
    keep = [p for p in model.pieces if p.piece not in drop]
    del model.pieces[:]
    model.pieces.extend(keep)
    return model.SerializeToString()


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_type: str,
                    path: str | Path) -> Tokenizer:
    """Trains a sentencepiece model on `texts` and writes it to `path`.

    Each text is trained on as written and normalized, so both prompts (as written) and
    labels (normalized) encode without unknown characters. A corpus too small for
    `vocab_size` gives a smaller vocabulary (see `Tokenizer.vocab_size`).
    """
    if model_type not in TOKENIZER_TYPES:
        raise TokenizerError(f"train_tokenizer: model_type {model_type!r} is not one of "
                             f"{list(TOKENIZER_TYPES)}")
    corpus = []
    for text in texts:
        corpus.extend({text.strip(), normalize(text)} - {""})
    if not corpus:
        raise TokenizerError("train_tokenizer: no text to train on")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sorted(corpus)), model_writer=model,
            vocab_size=vocab_size, model_type=model_type,
            user_defined_symbols=list(contract.STATE_TOKENS),
            pad_id=contract.PAD_ID, unk_id=contract.UNK_ID,
            bos_id=contract.BOS_ID, eos_id=contract.EOS_ID,
            pad_piece=contract.PAD, unk_piece=contract.UNK,
            bos_piece=contract.BOS, eos_piece=contract.EOS,
            hard_vocab_limit=False, character_coverage=1.0,
            normalization_rule_name="identity", num_threads=1, minloglevel=2)
    except (RuntimeError, OSError, ValueError) as e:
        raise TokenizerError(f"train_tokenizer(vocab_size={vocab_size}, "
                             f"model_type={model_type!r}) failed: {e}") from None
    proto = model.getvalue()
    if model_type == "word":
        proto = _drop_pieces(proto, [_WORD_START + t for t in contract.STATE_TOKENS])
    tokenizer = Tokenizer(proto, where=f"trained tokenizer ({model_type})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto)
    return tokenizer
