"""Tests of the sentencepiece tokenizer: reserved ids, normalization, round trips, errors."""

import pickle

import pytest

from data_pipelines import contract
from data_pipelines import tokenizer as tok

SENTENCES = [
    "What is three plus four?", "The zorb is blue.", "Uh-huh.", "Stop!", "I don't know.",
    "Please read this aloud: the zorb is green.", "Hmm, okay; tell me more about the glim.",
    "Seven times eight is fifty six", "Wait, stop talking", "Where did the 'blue' zorb go?",
]


@pytest.fixture(scope="module", params=["unigram", "bpe", "word"])
def trained(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / f"{request.param}.model"
    return tok.train_tokenizer(SENTENCES * 3, 200, request.param, path), path


def test_normalize():
    assert tok.normalize("  What is THREE plus four?! ") == "what is three plus four"
    assert tok.normalize("Uh-huh.") == "uhhuh"  # a word never splits
    assert tok.normalize("I don't know, 'quoted' rock'n'roll") == "i don't know quoted rock'n'roll"
    assert tok.normalize("...") == ""


def test_reserved_ids(trained):
    tokenizer, _ = trained
    for piece, token_id in contract.STATE_TOKEN_IDS.items():
        assert tokenizer.id_of(piece) == token_id
        assert tokenizer.piece_of(token_id) == piece
    assert [tokenizer.piece_of(i) for i in range(4)] == [
        contract.PAD, contract.UNK, contract.BOS, contract.EOS]


def test_round_trip_and_words(trained):
    tokenizer, _ = trained
    for text in SENTENCES:
        normalized = tokenizer.normalize(text)
        ids = tokenizer.encode(normalized)
        assert contract.UNK_ID not in ids
        assert tokenizer.decode(ids) == normalized
        words = tokenizer.encode_words(text)
        assert len(words) == len(normalized.split())
        assert all(words)
        assert [i for w in words for i in w] == ids


def test_prompt_as_written_has_no_unknowns(trained):
    tokenizer, _ = trained
    ids = tokenizer.encode("Please read this aloud: the zorb is green.")
    assert contract.UNK_ID not in ids


def test_state_tokens_are_atomic(trained):
    tokenizer, _ = trained
    think = contract.STATE_TOKEN_IDS[contract.THINK]
    ids = tokenizer.encode("the zorb <think> is blue<shift>")
    assert ids.count(think) == 1
    assert ids[-1] == contract.STATE_TOKEN_IDS[contract.SHIFT]
    assert ids == (tokenizer.encode("the zorb") + [think] + tokenizer.encode("is blue")
                   + [contract.STATE_TOKEN_IDS[contract.SHIFT]])
    assert tokenizer.decode(ids) == "the zorb is blue"
    assert tokenizer.decode(ids, keep_special=True) == "the zorb <think> is blue <shift>"


def test_load_matches_trained(trained):
    tokenizer, path = trained
    loaded = tok.Tokenizer.load(path)
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode("the zorb is blue") == tokenizer.encode("the zorb is blue")


@pytest.mark.parametrize("model_type", ["unigram", "bpe", "word"])
def test_small_corpus_gives_smaller_vocab(model_type, tmp_path):
    tokenizer = tok.train_tokenizer(SENTENCES, 5000, model_type, tmp_path / "t.model")
    assert 8 + 26 <= tokenizer.vocab_size < 1000
    assert tok.Tokenizer.load(tmp_path / "t.model").vocab_size == tokenizer.vocab_size


def test_pickles(trained):
    tokenizer, _ = trained
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.encode("what is three plus four") == tokenizer.encode("what is three plus four")


def test_lookup_errors(trained):
    tokenizer, _ = trained
    with pytest.raises(KeyError, match="not in the vocabulary"):
        tokenizer.id_of("qqqqzzzz")
    with pytest.raises(KeyError, match="outside the vocabulary"):
        tokenizer.piece_of(tokenizer.vocab_size)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tok.Tokenizer.load(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"this is not a sentencepiece model")
    with pytest.raises(tok.TokenizerError, match="bad.model"):
        tok.Tokenizer.load(bad)


def test_train_errors(tmp_path):
    with pytest.raises(tok.TokenizerError, match="no text"):
        tok.train_tokenizer(["", "  "], 100, "unigram", tmp_path / "x.model")
    with pytest.raises(tok.TokenizerError, match="model_type"):
        tok.train_tokenizer(SENTENCES, 100, "nonsense", tmp_path / "y.model")
