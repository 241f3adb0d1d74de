"""The Llama-2 chat format against an independent construction with raw SentencePiece
(``meta_reference`` in conftest.py), for the base and a merged tokenizer."""
from __future__ import annotations

import pytest
import sentencepiece as spm

from sft.chat_format import (
    IGNORE_INDEX,
    HFTextEncoder,
    PromptNotPrefixError,
    TooLongError,
    encode_dialog,
    encode_prompt,
)
from sft.chat_tokenizer import load_chat_tokenizer, save_chat_tokenizer


@pytest.fixture(scope="module", params=["base", "merged"])
def tokenizers(request, base_sp_model, extended_sp_model, base_tokenizer_dir, extended_tokenizer_dir):
    from transformers import AutoTokenizer

    sp_path, tok_dir = ((base_sp_model, base_tokenizer_dir) if request.param == "base"
                        else (extended_sp_model, extended_tokenizer_dir))
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    return sp, HFTextEncoder(AutoTokenizer.from_pretrained(str(tok_dir))), tok_dir


def test_training_and_prompt_ids_equal_metas_reference(tokenizers, random_dialogs, meta_reference):
    sp, enc, _ = tokenizers
    for dialog in random_dialogs(60, seed=1):
        assert encode_dialog(dialog, enc).input_ids == meta_reference(sp, dialog)
        assert encode_prompt(dialog[:-1], enc) == meta_reference(sp, dialog[:-1])


def test_control_token_text_in_a_message_is_ordinary_pieces_as_in_metas_reference(tokenizers, meta_reference):
    sp, enc, _ = tokenizers
    dialog = [{"role": "user", "content": "what does <s> or </s> mean?"}]
    ids = encode_prompt(dialog, enc)
    assert ids == meta_reference(sp, dialog)
    assert ids.count(sp.bos_id()) == 1 and sp.eos_id() not in ids


def test_generation_prompt_of_k_turns_is_a_prefix_of_the_training_ids(tokenizers, random_dialogs):
    _, enc, _ = tokenizers
    for dialog in random_dialogs(40, seed=2):
        offset = 1 if dialog[0]["role"] == "system" else 0
        n_turns = (len(dialog) - offset) // 2
        for k in range(1, n_turns + 1):
            upto = offset + 2 * k
            prompt = encode_prompt(dialog[:upto - 1], enc)
            train = encode_dialog(dialog[:upto], enc).input_ids
            assert train[:len(prompt)] == prompt and len(train) > len(prompt)


def test_labels_decode_to_the_answers_each_followed_by_eos(tokenizers, random_dialogs):
    _, enc, _ = tokenizers
    tok = enc.tokenizer
    for dialog in random_dialogs(30, seed=3):
        ex = encode_dialog(dialog, enc)
        answers = [m["content"].strip() for m in dialog if m["role"] == "assistant"]
        spans, cur = [], []
        for i, lab in enumerate(ex.labels):
            if lab != IGNORE_INDEX:
                assert lab == ex.input_ids[i]
                cur.append(lab)
            elif cur:
                spans.append(cur)
                cur = []
        spans += [cur] if cur else []
        assert len(spans) == len(answers)
        for span, answer in zip(spans, answers, strict=True):
            assert span[-1] == enc.eos_id
            assert tok.decode(span[:-1]).strip() == answer
        assert ex.n_label_chars == sum(len(a) for a in answers)


def test_last_turn_and_prompt_label_modes(tokenizers, random_dialogs):
    _, enc, _ = tokenizers
    dialog = random_dialogs(1, seed=4)[0] + [{"role": "user", "content": "再来"},
                                                        {"role": "assistant", "content": "好的"}]
    every = encode_dialog(dialog, enc, "all_turns")
    last = encode_dialog(dialog, enc, "last_turn")
    both = encode_dialog(dialog, enc, "prompt_and_answers")
    assert every.input_ids == last.input_ids == both.input_ids
    start = last.turn_starts[-1]
    assert all(x == IGNORE_INDEX for x in last.labels[:start]) and last.labels[start:] == every.labels[start:]
    assert both.labels[1:] == both.input_ids[1:] and both.labels[0] == IGNORE_INDEX
    assert 0 < last.n_labels < every.n_labels < both.n_labels


def test_truncation_drops_whole_oldest_turns_and_keeps_the_system_message(tokenizers, random_dialogs, meta_reference):
    sp, enc, _ = tokenizers
    for dialog in random_dialogs(30, seed=5):
        full = encode_dialog(dialog, enc)
        limit = max(len(full.input_ids) - 8, 1)
        try:
            ex = encode_dialog(dialog, enc, max_seq_len=limit)
        except TooLongError:
            last = dialog[:1] + dialog[-2:] if dialog[0]["role"] == "system" else dialog[-2:]
            assert len(meta_reference(sp, last)) > limit
            continue
        assert len(ex.input_ids) <= limit and ex.n_turns_dropped >= 1
        system = dialog[:1] if dialog[0]["role"] == "system" else []
        kept = system + dialog[len(system) + 2 * ex.n_turns_dropped:]
        assert ex.input_ids == meta_reference(sp, kept)  # whole turns: no cut [/INST] or EOS
        assert ex.input_ids[-1] == enc.eos_id and ex.n_labels > 0
        shorter = system + dialog[len(system) + 2 * (ex.n_turns_dropped - 1):]
        assert len(meta_reference(sp, shorter)) > limit  # the fewest turns were dropped


def test_a_turn_too_long_for_max_seq_len_is_an_error_not_a_cut(tokenizers):
    _, enc, _ = tokenizers
    dialog = [{"role": "user", "content": "长" * 50}, {"role": "assistant", "content": "短"}]
    with pytest.raises(TooLongError):
        encode_dialog(dialog, enc, max_seq_len=10)


class _MergingEncoder:
    """An encoder whose answer piece swallows the ']' before it: the generation prompt would differ."""

    bos_id, eos_id = 1, 2

    def encode_many(self, texts):
        return [[ord(c) for c in t.replace("] a", "\x01")] for t in texts]


def test_a_prompt_that_is_not_a_prefix_of_the_training_ids_is_refused():
    with pytest.raises(PromptNotPrefixError):
        encode_dialog([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], _MergingEncoder())


def test_chat_template_gives_exactly_the_same_ids(tmp_path, tokenizers, random_dialogs, meta_reference):
    from transformers import AutoTokenizer

    sp, enc, tok_dir = tokenizers
    save_chat_tokenizer(tok_dir, tmp_path / "chat")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "chat"))  # what a serving stack loads
    for dialog in random_dialogs(40, seed=6):
        got = tok.apply_chat_template(dialog[:-1], add_generation_prompt=True)["input_ids"]
        assert got == encode_prompt(dialog[:-1], enc) == meta_reference(sp, dialog[:-1])
        assert tok.apply_chat_template(dialog)["input_ids"] == encode_dialog(dialog, enc).input_ids
        text = tok.apply_chat_template(dialog[:-1], add_generation_prompt=True, tokenize=False)
        assert tok(text, add_special_tokens=False)["input_ids"] == got  # text-rendering stacks too


def test_control_token_typed_in_a_message_is_a_control_token_through_the_template(tokenizers):
    """What the README promises: via apply_chat_template a typed ``</s>`` is the EOS id (serving-stack
    convention); via encode_prompt (sft chat/generate) it stays text, as in Meta's reference."""
    _, enc, tok_dir = tokenizers
    tok = load_chat_tokenizer(tok_dir)
    dialog = [{"role": "user", "content": "end with </s> please"}]
    via_template = tok.apply_chat_template(dialog, add_generation_prompt=True)["input_ids"]
    assert enc.eos_id in via_template and enc.eos_id not in encode_prompt(dialog, enc)


def test_template_refuses_roles_out_of_order(tokenizers):
    _, _, tok_dir = tokenizers
    tok = load_chat_tokenizer(tok_dir)
    with pytest.raises(Exception, match="alternating"):
        tok.apply_chat_template([{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}])


def test_alpaca_format_equals_its_reference_prompt_prefix_and_template(tmp_path, tokenizers, random_dialogs,
                                                                       alpaca_reference):
    from transformers import AutoTokenizer

    from sft.templates import get_chat_format

    sp, enc, tok_dir = tokenizers
    fmt = get_chat_format("alpaca")
    save_chat_tokenizer(tok_dir, tmp_path / "chat", fmt)
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "chat"))
    for dialog in random_dialogs(30, seed=7):
        train = encode_dialog(dialog, enc, fmt=fmt).input_ids
        prompt = encode_prompt(dialog[:-1], enc, fmt)
        assert train == alpaca_reference(sp, dialog) and prompt == alpaca_reference(sp, dialog[:-1])
        assert train[:len(prompt)] == prompt
        assert tok.apply_chat_template(dialog[:-1], add_generation_prompt=True)["input_ids"] == prompt
        assert tok.apply_chat_template(dialog)["input_ids"] == train
    # Truncated: the default system preamble moves to the first kept turn, as in the reference.
    dialog = [m for d in random_dialogs(4, seed=8) for m in d if m["role"] != "system"]
    ex = encode_dialog(dialog, enc, max_seq_len=len(alpaca_reference(sp, dialog)) - 1, fmt=fmt)
    assert ex.n_turns_dropped >= 1 and ex.input_ids == alpaca_reference(sp, dialog[2 * ex.n_turns_dropped:])


def test_formats_are_data_and_placeholders_in_messages_stay_text(tmp_path, tokenizers, meta_reference):
    from sft.templates import LLAMA2, ChatFormat, get_chat_format, load_chat_formats
    from zhllama.config import ConfigError

    assert load_chat_formats()["llama2"] == LLAMA2 == ChatFormat()  # the YAML entry is Meta's format
    sp, enc, tok_dir = tokenizers
    tok = load_chat_tokenizer(tok_dir)
    dialog = [{"role": "system", "content": "{user} {content}"}, {"role": "user", "content": "{system}{answer}"}]
    assert tok.apply_chat_template(dialog, add_generation_prompt=True)["input_ids"] == encode_prompt(dialog, enc) \
        == meta_reference(sp, dialog)
    extra = tmp_path / "formats.yaml"
    extra.write_text("bad:\n  prompt: 'no placeholder'\n")
    with pytest.raises(ConfigError, match="must contain"):
        get_chat_format("bad", extra)
