"""Multiple-choice knowledge benchmarks (part of the evaluation stage): C-Eval / CMMLU CSV directories
and AGIEval-style JSONL, scored as lm-evaluation-harness's CMMLU task does.

Modules: ``data`` (readers, accounting), ``prompt`` (prompt text, tokens, truncation), ``scoring``
(batched tree scoring of the four answers), ``evaluate`` (one model -> records and accuracy),
``report`` (Markdown, PNG), ``cli`` (``python -m mcq score|compare``).
"""
