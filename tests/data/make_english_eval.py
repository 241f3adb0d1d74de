"""Regenerate ``english_eval_pydoc.txt``: English prose the demo evaluates forgetting on (never trained on).

Source: CPython's ``Lib/pydoc_data/topics.py`` (the text of the Python Language Reference, as shipped
with Python; PSF License Version 2). ``english_eval_pydoc.txt`` was made with Python 3.11.7: for
each help topic in sorted order, its first paragraph of plain prose (no indented code or grammar,
no markup, >= 200 characters, >= 90% letters and spaces), one paragraph per line::

    python tests/data/make_english_eval.py > tests/data/english_eval_pydoc.txt
"""
import pydoc_data.topics
import re
import sys


def paragraphs() -> list[str]:
    out = []
    for key in sorted(pydoc_data.topics.topics):
        for block in re.split(r"\n\s*\n", pydoc_data.topics.topics[key]):
            lines = block.split("\n")
            if any(line.startswith(" ") for line in lines):
                continue
            text = " ".join(line.strip() for line in lines).strip()
            if len(text) < 200 or not text[0].isupper() or "*" in text or text.count("`") > 2 or "::" in text:
                continue
            if sum(c.isalpha() or c.isspace() for c in text) / len(text) < 0.9:
                continue
            out.append(text)
            break
    return out


if __name__ == "__main__":
    sys.stdout.write("".join(p + "\n" for p in paragraphs()))
