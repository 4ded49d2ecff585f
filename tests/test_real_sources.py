"""Real-corpus sources on the real clips in tests/fixtures (see tests/fixtures/LICENSE.md).

Each layout (LibriSpeech, LibriHeavy, GigaSpeech, a generic manifest) is built into a TFDS
array_record dataset and read back; FSDD digit strings hold a speaker out; real utterances
drive ASR and QA timelines that render to contract-valid records; bad input is an error
naming the item, or a counted skip.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from configs import fsdd_asr, tiny
from data_pipelines import audio_io, augment, contract, corpus, render, scenarios, world
from data_pipelines import tokenizer as tok
from data_pipelines.pipeline import make_dataset
from data_pipelines.scenarios import base, real_speech
from data_pipelines.sources import fsdd, gigaspeech, real, timelines

FIXTURES = Path(__file__).parent / "fixtures"
SR = 16000
LIBRISPEECH = {
    "251-137823-0002": "this isn't part of your testing routine is it",
    "251-137823-0003": "another engineer rushed toward the door to see what was happening outside",
}
CHAPTER = FIXTURES / "librispeech/LibriSpeech/dev-clean/251/137823"
JFK = ("and so my fellow americans, ask not what your country can do for you, ask what you "
       "can do for your country.")
# kind -> (root, split, parts)
LAYOUTS = {
    "librispeech": ("librispeech/LibriSpeech", "eval", ("dev-clean",)),
    "libriheavy": ("libriheavy", "eval", ("libriheavy_cuts_dev.jsonl",)),
    "gigaspeech": ("gigaspeech", "train", ("{XS}",)),
    "manifest": ("manifest", "train", ("train.jsonl",)),
}


def _build(kind, root, data_dir, split, parts, **kwargs):
    builder = real.make_builder(kind, root, data_dir, splits={split: parts}, **kwargs)
    real.prepare(builder)
    return builder, real.open_utterances(builder, split)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    out = {}
    for kind, (root, split, parts) in LAYOUTS.items():
        out[kind] = _build(kind, FIXTURES / root, data_dir, split, parts)
    return out


def _by_id(source):
    return {source[i].id: source[i] for i in range(len(source))}


def test_librispeech_records(sources):
    builder, source = sources["librispeech"]
    record = source._records[0]
    assert np.asarray(record["audio"]).dtype == np.int16
    assert builder.info.metadata["sample_rate"] == SR
    utts = _by_id(source)
    assert {k: u.text for k, u in utts.items()} == LIBRISPEECH
    for utt_id, utt in utts.items():
        assert utt.speaker == "251" and utt.sample_rate == SR
        assert utt.duration_s == pytest.approx(sf.info(CHAPTER / f"{utt_id}.flac").duration,
                                               abs=1e-3)
    assert source.speakers() == ["251"] and source.indices_of("251").tolist() == [0, 1]


def test_libriheavy_segments_of_one_recording(sources):
    _, source = sources["libriheavy"]
    first, second = source[0], source[1]
    assert first.text == "He was not an ill disposed young man."
    assert second.text == "He might even have been made amiable himself."
    assert (first.duration_s, second.duration_s) == pytest.approx((2.99, 3.29), abs=1e-3)
    # The second cut starts 2.99 s into the recording: its samples are the file's there.
    flac = next((FIXTURES / "libriheavy/librilight").rglob("*.flac"))
    whole, rate = sf.read(flac, dtype="float32")
    start = int(2.99 * rate)
    np.testing.assert_allclose(second.audio, whole[start:start + second.audio.size],
                               atol=1e-4)


def test_gigaspeech_stereo_48k_opus_is_downmixed_resampled_and_tags_converted(sources):
    builder, source = sources["gigaspeech"]
    assert len(source) == 1  # the <SIL> segment is not speech: filtered, and counted
    assert builder.info.metadata["train_stats"]["filtered"] == 1
    utt = source[0]
    assert utt.text == JFK and utt.speaker == "POD0000000001"
    opus = FIXTURES / "gigaspeech/audio/podcast/P0000/POD0000000001.opus"
    info = sf.info(opus)
    assert (info.samplerate, info.channels) == (48000, 2)
    assert utt.duration_s == pytest.approx(info.duration, abs=1e-3)
    stereo, _ = sf.read(opus, dtype="float32")
    expected = audio_io.resample(stereo.mean(axis=1), 48000, SR)
    assert np.corrcoef(utt.audio, expected)[0, 1] > 0.999
    assert np.corrcoef(utt.audio, audio_io.resample(stereo[:, 0], 48000, SR))[0, 1] < 0.9999
    assert gigaspeech.convert_text("A <COMMA> B <SIL> <QUESTIONMARK>") == "a, b?"


def test_manifest_records_mp3_and_wav(sources):
    _, source = sources["manifest"]
    utts = _by_id(source)
    assert utts["one_two_three"].text == "one two three"
    assert utts["one_two_three"].duration_s == pytest.approx(2.745, abs=0.06)  # mp3 44.1 kHz
    assert utts["five_five"].duration_s == pytest.approx(
        sf.info(FIXTURES / "manifest/clips/five_five.wav").duration, abs=1e-3)
    assert utts["five_five"].reply == "that makes ten" and utts["one_two_three"].reply == ""


def test_fsdd_digit_strings_hold_a_speaker_out():
    root = FIXTURES / "fsdd"
    assert fsdd.list_speakers(root) == ["jackson", "theo"]
    train = real_speech.FsddBank(str(root), "train", "theo", min_digits=3, max_digits=3)
    held = real_speech.FsddBank(str(root), "eval", "theo", min_digits=2, max_digits=4)
    assert train.speakers() == ["jackson"] and held.speakers() == ["theo"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        utt = train.draw(rng).utterance
        assert utt.voice_id == "jackson" and len(utt.words) == 3
        assert utt.text == " ".join(w.word for w in utt.words)
        assert set(utt.text.split()) <= set(fsdd.DIGIT_WORDS[:5])
        ends = [w.end_s for w in utt.words]
        assert ends == sorted(ends) and ends[-1] == pytest.approx(utt.duration_s)
    assert held.draw(rng).utterance.voice_id == "theo"
    with pytest.raises(base.DoesNotFit):
        train.draw(rng, max_seconds=0.1)
    with pytest.raises(ValueError, match="holdout_speaker 'nobody'"):
        real_speech.FsddBank(str(root), "train", "nobody")


def test_fsdd_official_test_takes_never_train(tmp_path):
    """train: takes 5-49 of all but the held-out speaker; eval: the held-out speaker, every
    take; test: FSDD's official test takes 0-4 of every speaker."""
    import shutil

    folder = tmp_path / "recordings"
    folder.mkdir()
    for clip in (FIXTURES / "fsdd" / "recordings").glob("*.wav"):
        digit, speaker, _ = clip.stem.split("_")
        for take in (3, 12):
            shutil.copy(clip, folder / f"{digit}_{speaker}_{take}.wav")

    def takes(split):
        digits = fsdd.load_digits(tmp_path, *fsdd.split_selection(tmp_path, split, "theo")[:1],
                                  16000, keep_take=fsdd.split_takes(split))
        return {(c.speaker, c.take) for per in digits.clips.values() for cs in per.values()
                for c in cs}

    assert takes("train") == {("jackson", 12)}
    assert takes("eval") == {("theo", 3), ("theo", 12)}
    assert takes("test") == {("jackson", 3), ("theo", 3)}
    bank = real_speech.FsddBank(str(tmp_path), "test", "theo")
    assert bank.speakers() == ["jackson", "theo"]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        fsdd.split_takes("dev")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, sources):
    texts = world.all_texts() + list(LIBRISPEECH.values()) + [JFK, "that makes ten"]
    texts += [sources["libriheavy"][1][i].text for i in range(2)]
    return tok.train_tokenizer(texts, 400, "unigram", tmp_path_factory.mktemp("tok") / "t.model")


def _render(timeline, config, tokenizer):
    dims = contract.Dims.from_config(config)
    record = render.render_fixed(timeline, dims=dims, timing=contract.TimingRules(),
                                 thinking="explicit", tokenizer=tokenizer,
                                 rng=np.random.default_rng(1))
    contract.validate(record, dims, vocab_size=tokenizer.vocab_size)
    return record


def test_real_utterances_make_contract_valid_asr_and_qa(sources, tokenizer):
    config = tiny.get_config()
    ctx = scenarios.make_context(config, "train")
    rng = np.random.default_rng(3)
    fsdd_bank = real_speech.FsddBank(str(FIXTURES / "fsdd"), "train", "theo")
    heavy_bank = real_speech.CorpusBank(sources["libriheavy"][1])
    for bank in (fsdd_bank, heavy_bank):
        timeline = scenarios.generate("asr", rng, ctx, user_speech=bank)
        assert timeline.events and all(e.speaker in bank.speakers() for e in timeline.events)
        record = _render(timeline, config, tokenizer)
        text = tokenizer.decode(record["labels"][record["label_kind"] == 1])
        assert text == tok.normalize(" ".join(t.text for t in timeline.turns))
    qa_bank = real_speech.CorpusBank(sources["manifest"][1])
    timeline = scenarios.generate("qa", rng, ctx, user_speech=qa_bank)  # only five_five replies
    assert [e.text for e in timeline.events] == ["five five"]
    assert timeline.turns[0].text == "that makes ten" and timeline.turns[0].audio.size
    record = _render(timeline, config, tokenizer)
    assert record["speaking"].any() and json.loads(record["events"])["scenario"] == "qa"


def test_real_noise_and_multichannel_rir_folders_augment():
    cfg = augment.AugmentConfig(noise_prob=1.0, reverb_prob=1.0, snr_db=(10.0, 10.0),
                                noise_dir=str(FIXTURES / "noise"),
                                rir_dir=str(FIXTURES / "rir"))
    speech = (0.1 * np.sin(np.arange(SR) * 0.05)).astype(np.float32)
    out, info = augment.augment_environment(speech, 0.07, cfg, SR, np.random.default_rng(0))
    assert info["noise"] == "friction1.wav" and info["rir"] == "real_8ch.wav"
    assert out.shape == speech.shape and np.all(np.isfinite(out))


def _bad_manifest(tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(FIXTURES / "manifest", root)
    (root / "clips/garbage.wav").write_bytes(b"RIFF not really a wav file")
    (root / "clips/empty.wav").write_bytes(b"")
    lines = [dict(path="clips/five_five.wav", text="five five", speaker="s"),
             dict(path="clips/missing.wav", text="gone", speaker="s"),
             dict(path="clips/garbage.wav", text="garbage", speaker="s"),
             dict(path="clips/empty.wav", text="empty", speaker="s")]
    (root / "bad.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


@pytest.mark.parametrize("item,reason", [("missing", "no such file"),
                                         ("garbage", "unreadable"), ("empty", "empty file")])
def test_bad_manifest_item_raises_naming_it(tmp_path, item, reason):
    root = _bad_manifest(tmp_path)
    lines = (root / "bad.jsonl").read_text().splitlines()
    keep = [line for line in lines if item in line or "five_five" in line]
    (root / "bad.jsonl").write_text("\n".join(keep) + "\n")
    with pytest.raises(real.BadSample, match=f"item '{item}'.*{reason}"):
        _build("manifest", root, tmp_path / "tfds", "train", ("bad.jsonl",))


def test_bad_items_are_skipped_and_counted(tmp_path):
    root = _bad_manifest(tmp_path)
    builder, source = _build("manifest", root, tmp_path / "tfds", "train", ("bad.jsonl",),
                             on_bad_sample="skip")
    assert [source[i].id for i in range(len(source))] == ["five_five"]
    stats = builder.info.metadata["train_stats"]
    assert (stats["written"], stats["skipped"]) == (1, 3)
    assert all(any(name in r for r in stats["reasons"]) for name in ("missing", "garbage",
                                                                      "empty"))


def test_librispeech_transcript_line_without_audio_and_audio_without_line(tmp_path):
    root = tmp_path / "LibriSpeech"
    chapter = root / "dev-clean/251/137823"
    shutil.copytree(CHAPTER, chapter)
    trans = chapter / "251-137823.trans.txt"
    trans.write_text(trans.read_text() + "251-137823-0009 A LINE WITH NO AUDIO\n")
    shutil.copy(chapter / "251-137823-0002.flac", chapter / "251-137823-0010.flac")
    with pytest.raises(real.BadSample, match="251-137823-0009.*without an audio file"):
        _build("librispeech", root, tmp_path / "a", "eval", ("dev-clean",))
    builder, source = _build("librispeech", root, tmp_path / "b", "eval", ("dev-clean",),
                             on_bad_sample="skip")
    # Never re-paired: the two good lines keep their own audio and text.
    assert {source[i].id: source[i].text for i in range(len(source))} == LIBRISPEECH
    reasons = builder.info.metadata["eval_stats"]["reasons"]
    assert builder.info.metadata["eval_stats"]["skipped"] == 2
    assert any("251-137823-0010" in r and "no transcript" in r for r in reasons)


def test_fsdd_config_builds_a_speaker_independent_corpus(tmp_path):
    """configs/fsdd_asr.py end to end through the corpus: train never hears the held-out
    speaker, eval hears only it, and every dialogue renders to a valid record."""
    config = fsdd_asr.get_config("short")
    config.data.real_dir = str(FIXTURES / "fsdd")
    config.data.train_dialogues, config.data.eval_dialogues = 6, 3
    config.data.fsdd.max_digits = 3
    config.data.pipeline.batch_size = 3
    tokenizer = corpus.build_tokenizer(config, tmp_path / "tokenizer.model")
    corpus.ensure_corpus(config, tmp_path)
    for split, speakers in (("train", {"jackson"}), ("eval", {"theo"})):
        source = timelines.open_source(config, tmp_path, split)
        heard = {e.speaker for i in range(len(source)) for e in source[i].events}
        assert heard == speakers, (split, heard)
        batch = next(iter(make_dataset(config, split, tokenizer, seed=0, workdir=tmp_path)))
        assert batch["block_mask"].any(axis=1).all()
