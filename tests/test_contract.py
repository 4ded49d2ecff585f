"""The BlockSequence validator accepts a well-formed record and names what is broken."""

import numpy as np
import pytest

from data_pipelines import contract
from data_pipelines.contract import ContractError, LabelKind

DIMS = contract.Dims(num_blocks=6, samples_per_block=4, tokens_per_block=1, prompt_len=3)
THINK_ID, SHIFT_ID = contract.THINK_ID, contract.SHIFT_ID


def _record():
    """Listen, shift, text, text (speech), shift, then one padding block."""
    r = contract.empty_record(DIMS)
    r["block_mask"][:5] = True
    r["labels"][:5, 0] = [THINK_ID, SHIFT_ID, 40, 41, SHIFT_ID]
    r["label_kind"][:5, 0] = [LabelKind.THINK, LabelKind.SHIFT, LabelKind.TEXT,
                              LabelKind.TEXT, LabelKind.SHIFT]
    r["tokens"][:5, 0] = [contract.BOS_ID, THINK_ID, SHIFT_ID, 40, 41]
    r["speaking"][1:4] = True
    r["speech_mask"][1:4] = True
    r["speech_target"][3] = 0.5
    r["echo_gain"][()], r["echo_delay"][()] = 0.5, 3
    r["env_audio"][:5] = 0.1
    r["prompt_tokens"][:2] = [50, 51]
    r["prompt_mask"][:2] = True
    r["heard_tokens"][0, :3] = [40, 41, 42]
    return r


def test_valid_record_and_batch_pass():
    record = _record()
    contract.validate(record, DIMS, vocab_size=64)
    batch = {k: np.stack([v, v]) for k, v in record.items()}
    contract.validate(batch, DIMS, batched=True, vocab_size=64)


def _set(field, index, value):
    def mutate(r):
        r[field][index] = value
    return mutate


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.pop("labels"), "labels"),
    (lambda r: r.__setitem__("env_audio", r["env_audio"][:5]), "env_audio"),
    (lambda r: r.__setitem__("tokens", r["tokens"].astype(np.int64)), "tokens"),
    (_set("env_audio", (0, 0), np.nan), "env_audio"),
    (_set("speech_target", (3, 0), 1.5), "speech_target"),
    (_set("label_kind", (0, 0), 9), "label_kind"),
    (_set("labels", (1, 0), 40), "labels"),  # a SHIFT kind whose id is not <shift>
    (_set("labels", (2, 0), THINK_ID), "labels"),  # a TEXT kind holding a state token
    (_set("label_kind", (5, 0), LabelKind.TEXT), "label_kind"),  # supervision on padding
    (_set("speaking", 5, True), "speaking"),
    (_set("speech_target", (0, 1), 0.2), "speech_target"),  # speech while listening
    (_set("speech_mask", 3, False), "speech_mask"),
    (_set("env_audio", (5, 0), 0.1), "env_audio"),  # audio on a padding block
    (_set("echo_gain", (), -0.1), "echo_gain"),
    (_set("echo_gain", (), np.inf), "echo_gain"),
    (_set("echo_delay", (), DIMS.samples_per_block + 1), "echo_delay"),  # past one block
    (_set("echo_delay", (), -1), "echo_delay"),
    (_set("prompt_mask", 2, True), "prompt_tokens"),  # a real prompt token that is PAD
    (_set("prompt_tokens", 2, 7), "prompt_tokens"),
    (_set("block_mask", 5, True), "block_mask"),
    (_set("tokens", (0, 0), 99), "tokens"),  # past vocab_size
    (_set("heard_tokens", (0, 0), THINK_ID), "heard_tokens"),  # a state token heard
    (_set("heard_tokens", (1, 1), 40), "heard_tokens"),  # a real token after padding
    (_set("heard_tokens", (5, 0), 40), "heard_tokens"),  # heard on a padding block
    (_set("heard_tokens", (0, 0), 99), "heard_tokens"),  # past vocab_size
])
def test_broken_records_name_the_field(mutate, field):
    record = _record()
    mutate(record)
    if field == "block_mask":
        record["block_mask"][4] = False  # a hole: real block after padding
        record["label_kind"][4] = LabelKind.IGNORE
    with pytest.raises(ContractError, match=f"field '{field}'"):
        contract.validate(record, DIMS, vocab_size=64, where="dialogue 7")


def test_error_names_the_record():
    record = _record()
    record["speaking"][5] = True
    with pytest.raises(ContractError, match="dialogue 7"):
        contract.validate(record, DIMS, where="dialogue 7")


def test_timing_rules_reject_impossible_values():
    with pytest.raises(ContractError, match="stop_delay_blocks"):
        contract.TimingRules(stop_delay_blocks=4, stop_window_blocks=3)
    with pytest.raises(ContractError, match="synth_delay_tokens"):
        contract.TimingRules(synth_delay_tokens=0)
    rules = contract.TimingRules(block_ms=80)
    assert [rules.heard(t) for t in (0.0, 0.0799, 0.08, 1.0)] == [0, 0, 1, 12]


def test_samples_per_block():
    assert contract.samples_per_block(16000, 80) == 1280
    with pytest.raises(ContractError, match="not a whole number"):
        contract.samples_per_block(22050, 30)


def test_token_ids_have_one_layout():
    """Control ids, then state ids in STATE_TOKENS order, then text from FIRST_TEXT_ID."""
    assert list(contract.CONTROL_TOKEN_IDS.values()) == [0, 1, 2, 3]
    state = [contract.THINK_ID, contract.SHIFT_ID, contract.START_SPEAK_ID,
             contract.END_SPEAK_ID]
    assert state == [contract.STATE_TOKEN_IDS[t] for t in contract.STATE_TOKENS] == [4, 5, 6, 7]
    assert contract.FIRST_TEXT_ID == 8
