"""Prompts and token requests (mcq/prompt.py) against an independent construction of lm-eval's CMMLU task.

The reference is built here from lm-eval's task definition itself: the Jinja ``doc_to_text`` of
its CMMLU/C-Eval YAML rendered with jinja2, the ``description`` header, target delimiter " " and
few-shot delimiter "\\n\\n"; continuation tokens as lm-eval's ``_encode_pair`` takes them.
"""
from __future__ import annotations

import copy

import jinja2
import pytest

from mcq.data import read_benchmark
from mcq.prompt import (
    CEVAL_HEADER,
    CMMLU_HEADER,
    build_prompt,
    encode_request,
    fit_request,
    letter_token_ids,
    shot_token_counts,
    wrap_chat,
)
from mcq.readers import LETTERS, Question

# lm-eval's lm_eval/tasks/cmmlu/_default_template_yaml `doc_to_text` (C-Eval's is the same with `question`).
LM_EVAL_DOC_TO_TEXT = "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案："


def lm_eval_context(description: str, shots: list[dict], doc: dict) -> str:
    """lm-eval's few-shot context: description + (doc_to_text + " " + target + "\\n\\n") per shot + doc_to_text."""
    tmpl = jinja2.Environment().from_string(LM_EVAL_DOC_TO_TEXT)
    return description + "".join(tmpl.render(**ex) + " " + ex["answer"] + "\n\n" for ex in shots) + tmpl.render(**doc)


def _q(subject: str, row: dict) -> Question:
    return Question(subject, 0, row["question"], tuple(row[L] for L in LETTERS), row["answer"])


@pytest.mark.parametrize("k", [0, 1, 5])
def test_prompt_equals_lm_evals_cmmlu_template(spec, k):
    rows = spec["law"]
    shots, doc = rows["dev"][:k], rows["test"][1]  # test row 1 has spaces, a quote, a comma and a newline
    ours = build_prompt(CMMLU_HEADER, "法学", [_q("law", r) for r in shots], _q("law", doc))
    assert ours == lm_eval_context("以下是关于法学的单项选择题，请直接给出正确答案的选项。\n\n", shots, doc)


def test_ceval_header_and_passage_placement(spec):
    doc = spec["art"]["test"][0]
    q = Question("art", 0, doc["question"], tuple(doc[L] for L in LETTERS), doc["answer"], passage=" 材料：一段文字。\n")
    ours = build_prompt(CEVAL_HEADER, "艺术学", [], q)
    expected = lm_eval_context("以下是中国关于艺术学的单项选择题，请选出其中的正确答案。\n\n", [],
                               {**doc, "question": "材料：一段文字。\n" + doc["question"].strip()})
    assert ours == expected


@pytest.mark.parametrize("context", ["问题？\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：", "Question: 2+2=?\nAnswer: \n"])
def test_continuations_are_lm_evals_encode_pair(tiny, context):
    tok = tiny.tokenizer
    req = encode_request(tok, tok.bos_token_id, context, letter_token_ids(tok))
    # lm-eval _encode_pair: trailing whitespace moves to the continuation, then whole[len(context):]
    n_spaces = len(context) - len(context.rstrip())
    ctx = context[: len(context) - n_spaces]
    ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
    for letter, cont in zip(LETTERS, req.continuations, strict=True):
        whole = tok(ctx + context[len(ctx):] + " " + letter, add_special_tokens=False)["input_ids"]
        assert cont == whole[len(ctx_ids):]
    assert req.context_ids == [tok.bos_token_id, *ctx_ids]


def test_letter_tokens_are_the_continuations_for_llamas_tokenizer(tiny):
    tok = tiny.tokenizer
    req = encode_request(tok, 1, "1+1=?\nA. 1\nB. 2\nC. 3\nD. 4\n答案：", letter_token_ids(tok))
    assert req.continuations == [[i] for i in req.letter_ids]
    assert tok.convert_ids_to_tokens(req.letter_ids) == ["▁A", "▁B", "▁C", "▁D"]


def _fit(tok, subject, window, shot_tokens=True):
    shots = subject.dev[:5]
    return fit_request(tok, tok.bos_token_id, letter_token_ids(tok), header=CMMLU_HEADER, subject_name=subject.key,
                       shots=shots, question=subject.questions[0], window_tokens=window,
                       shot_tokens=shot_token_counts(tok, shots) if shot_tokens else None)


def test_long_prompts_drop_shots_from_the_left_then_cut_tokens(tiny, cmmlu_dir):
    tok = tiny.tokenizer
    subject = read_benchmark(cmmlu_dir).subjects[0]
    full = _fit(tok, subject, 10_000)
    assert (full.shots_used, full.shots_dropped, full.tokens_cut) == (5, 0, 0)
    one_less = _fit(tok, subject, full.request.n_input_tokens - 1)
    assert (one_less.shots_used, one_less.shots_dropped) == (4, 1)
    assert one_less.request.n_input_tokens <= full.request.n_input_tokens - 1
    assert subject.dev[0].question.strip() not in one_less.prompt and subject.dev[4].question.strip() in one_less.prompt
    assert _fit(tok, subject, full.request.n_input_tokens).shots_used == 5  # exactly the window still fits
    zero = build_prompt(CMMLU_HEADER, subject.key, [], subject.questions[0])
    zero_req = encode_request(tok, tok.bos_token_id, zero, letter_token_ids(tok))
    cut = _fit(tok, subject, zero_req.n_input_tokens - 7)
    assert (cut.shots_used, cut.shots_dropped, cut.tokens_cut) == (0, 5, 7)
    assert cut.request.n_input_tokens == zero_req.n_input_tokens - 7
    assert cut.request.context_ids[0] == tok.bos_token_id
    assert cut.request.context_ids[1:] == zero_req.context_ids[1 + 7:]  # the left of the text was cut


def test_the_shot_estimate_picks_what_trying_every_k_picks(tiny, cmmlu_dir):
    tok = tiny.tokenizer
    subject = read_benchmark(cmmlu_dir).subjects[1]
    full = _fit(tok, subject, 10_000).request.n_input_tokens
    for window in range(full - 120, full + 1, 7):
        fast, slow = _fit(tok, subject, window), _fit(tok, subject, window, shot_tokens=False)
        assert (fast.shots_used, fast.tokens_cut, fast.request) == (slow.shots_used, slow.tokens_cut, slow.request)
        assert fast.request.n_input_tokens <= window


def test_chat_template_wraps_the_prompt_as_one_user_turn_with_one_bos(tiny):
    tok = copy.deepcopy(tiny.tokenizer)
    tok.chat_template = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    wrapped = wrap_chat(tok, "题目\n答案：")
    assert wrapped == "[INST] 题目\n答案： [/INST]"
    req = encode_request(tok, tok.bos_token_id, wrapped, letter_token_ids(tok))
    assert req.context_ids.count(tok.bos_token_id) == 1


def test_chat_template_on_a_tokenizer_without_one_is_a_clear_error(tiny):
    from zhllama.cli import UserError

    tok = copy.deepcopy(tiny.tokenizer)
    tok.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        wrap_chat(tok, "x")
