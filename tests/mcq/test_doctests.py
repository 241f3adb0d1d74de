"""The docstring examples of the mcq modules are real, runnable examples."""
from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["mcq.readers", "mcq.data", "mcq.prompt", "mcq.scoring", "mcq.evaluate", "mcq.report", "mcq.cli"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module} failed"
    assert result.attempted > 0
