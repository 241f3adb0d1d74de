"""Every docstring example in the project runs: examples are documentation users copy, so a stale
one is a bug. One walker over every stage package, so a new module is covered without a list to
keep. An example that needs a real model says ``# doctest: +SKIP`` on each line that uses it."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ["zhllama", "corpora", "vocab", "pretrain", "sft", "align", "mcq"]


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [m.name for m in pkgutil.walk_packages(path, package + ".") if not m.name.endswith("__main__")]
    return sorted(names)


MODULES = _modules()
# Modules whose docstrings must carry examples at all (mcq's data flow is documented by them).
MUST_HAVE_EXAMPLES = {"mcq.readers", "mcq.data", "mcq.prompt", "mcq.scoring", "mcq.evaluate", "mcq.report", "mcq.cli"}


def test_the_walk_finds_every_stage_module():
    """Invariant: each package contributes itself and its modules (a broken walk would pass vacuously)."""
    assert {m.split(".")[0] for m in MODULES} == set(PACKAGES)
    assert {"corpora.readers", "vocab.curve", "pretrain.engine.loop", "sft.chat_format", "align.dpo", "mcq.prompt"} <= set(MODULES)
    assert MUST_HAVE_EXAMPLES <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring example(s) of {module} failed"
    if module in MUST_HAVE_EXAMPLES:
        assert result.attempted > 0, f"{module} lost its docstring examples"
