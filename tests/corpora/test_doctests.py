"""The docstring examples of the corpora modules are real, runnable examples."""
from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["corpora.readers", "corpora.wiki_readers", "corpora.wikitext", "corpora.clean", "corpora.dedup", "corpora.build",
                                    "corpora.shards", "corpora.output", "corpora.units", "corpora.multistream",
                                    "corpora.dedup_sharded", "corpora.inputs",
                                    "corpora.sources", "corpora.manifest", "corpora.domains", "corpora.scripts"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module} failed"
