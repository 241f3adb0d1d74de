"""The docstring examples of the align modules are real, runnable examples."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["align.prefs", "align.logprobs", "align.dpo", "align.reward", "align.rl", "align.rewards", "align.chat",
           "align.common", "align.compare"]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module} failed"
