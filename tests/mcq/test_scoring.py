"""Batched tree scoring (mcq/scoring.py, mcq/evaluate.py) on the tiny real Llama.

Invariants: each choice's log-likelihood equals the sum of log-softmax values read directly from the
model's logits over ``context + continuation`` (one plain forward pass per choice, built here);
batching and padding change nothing; with one-token letters the letter-logit and continuation
methods give identical numbers; a model rigged to prefer "C" scores exactly the share of C answers.
"""
from __future__ import annotations

import copy

import pytest
import torch

from mcq.data import read_benchmark
from mcq.evaluate import Settings, evaluate_model, fit_all
from mcq.prompt import Request, letter_token_ids
from mcq.scoring import score_requests, score_requests_simple


def direct_logprobs(model, context_ids: list[int], cont: list[int]) -> torch.Tensor:
    """log-softmax rows predicting each token of ``cont``, from one plain forward pass over context + cont."""
    ids = torch.tensor([context_ids + cont])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    n = len(context_ids)
    return torch.log_softmax(logits[n - 1 : n - 1 + len(cont)].double(), dim=-1)


@pytest.fixture(scope="module")
def requests_(tiny, cmmlu_dir):
    """Real 2-shot prompts of the synthetic set, plus requests with multi-token continuations of unequal length."""
    bench = read_benchmark(cmmlu_dir, shots=2, max_questions_per_subject=2)
    fitted = fit_all(tiny.tokenizer, tiny.tokenizer.bos_token_id, bench, Settings(shots=2, window_tokens=256))
    letters = letter_token_ids(tiny.tokenizer)
    tok = tiny.tokenizer
    extra = [Request([1, *tok("长江与黄河：", add_special_tokens=False)["input_ids"]],
                     [tok(t, add_special_tokens=False)["input_ids"] for t in ("北京", "唐朝光合作用", "酸", "宪法诗经")],
                     letters),
             Request([1, 306], [[319], [350, 29871], [315, 13, 13], [360]], letters)]
    return [f.request for _, f in fitted] + extra


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logliks_equal_a_direct_computation_from_the_logits(tiny_llama_dir, requests_, attn):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation=attn).eval()
    assert any(max(len(c) for c in r.continuations) > 1 for r in requests_)  # branches really exercised
    scores = score_requests(model, requests_, batch_tokens=600)
    for req, s in zip(requests_, scores, strict=True):
        rows = [direct_logprobs(model, req.context_ids, c) for c in req.continuations]
        expected = [sum(r[t, tok].item() for t, tok in enumerate(c)) for r, c in zip(rows, req.continuations, strict=True)]
        assert s.loglik == pytest.approx(expected, abs=2e-4)
        assert s.letter_loglik == pytest.approx([rows[0][0, i].item() for i in req.letter_ids], abs=2e-4)


def test_batching_and_padding_change_nothing_and_the_simple_loop_agrees(tiny, requests_):
    alone = score_requests(tiny.model, requests_, batch_tokens=1)  # one question per forward pass
    packed = score_requests(tiny.model, requests_, batch_tokens=1 << 16)  # all in one padded batch
    simple = score_requests_simple(tiny.model, requests_)
    for a, b, c in zip(alone, packed, simple, strict=True):
        assert a.loglik == pytest.approx(b.loglik, abs=1e-4) == c.loglik
        assert a.letter_loglik == pytest.approx(c.letter_loglik, abs=1e-4)


def test_letter_and_continuation_scores_agree_when_each_letter_is_one_token(tiny, requests_):
    one_token = [r for r in requests_ if r.continuations == [[i] for i in r.letter_ids]]
    assert len(one_token) >= len(requests_) - 2  # every real prompt: " A" after "答案：" is the token ▁A
    for s in score_requests(tiny.model, one_token):
        assert s.loglik == s.letter_loglik
        assert s.predicted("continuation") == s.predicted("letter")


class PreferC(torch.nn.Module):
    """The tiny Llama's LM head plus a large bias on the "▁C" logit: a real module, so the model prefers C."""

    def __init__(self, head: torch.nn.Linear, c_id: int, bias: float = 50.0) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("bias", torch.zeros(head.out_features))
        self.bias[c_id] = bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden) + self.bias


def test_a_model_rigged_to_prefer_c_scores_the_share_of_c_answers(tiny, ceval_dir):
    model = copy.deepcopy(tiny.model)
    c_id = letter_token_ids(tiny.tokenizer)[2]
    model.lm_head = PreferC(model.lm_head, c_id)
    bench = read_benchmark(ceval_dir, shots=1)
    result = evaluate_model(model, tiny.tokenizer, bench, Settings(shots=1, method="both", window_tokens=256),
                            bos_id=tiny.tokenizer.bos_token_id)
    assert {r["predicted"] for r in result["questions"]} == {"C"}
    for method in ("continuation", "letter"):
        acc = result["accuracy"][method]
        for s in bench.subjects:
            share = sum(q.answer == "C" for q in s.questions) / len(s.questions)
            assert acc["subjects"][s.key]["accuracy"] == pytest.approx(share)
        all_q = [q for s in bench.subjects for q in s.questions]
        assert acc["micro"] == pytest.approx(sum(q.answer == "C" for q in all_q) / len(all_q))
    assert 0 < result["accuracy"]["continuation"]["micro"] < 1  # the synthetic answers are not all C
