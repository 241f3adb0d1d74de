"""zhwiki wikitext -> text: what a reader of the page sees, not what survives a template purge.

``wikiextractor`` does the heavy lifting (links, tables, refs, emphasis); around it this module
handles what it gets wrong for Chinese Wikipedia:

- **language-conversion rules**: page-wide rules (``{{NoteTA|1=zh-hans:泡利;zh-hant:包立;}}`` and
  ``-{H|...}-``) are collected and put back in front of the text as ``-{H|...}-`` markup, so that a
  MediaWiki-aware converter (``convert: zh-cn`` etc., :mod:`corpora.scripts`) applies them to the
  whole page; with another conversion they are dropped as before;
- **text-bearing inline templates** (``le``, ``link-xx``, ``tsl``, ``lang``, ``lang-xx``,
  ``convert``, ``ruby``, ``bd``, ``nowrap``, ``math``...) are rendered to their text instead of
  leaving holes in sentences; other templates are dropped;
- **lists** are kept (bullet items as lines, numbered items as ``1. ...``);
- ``<math>``/``<chem>`` keep their TeX source and ``<code>``/``<syntaxhighlight>``/``<source>``/
  ``<pre>`` their text, never wikiextractor's ``formula_N`` / ``codice_N`` placeholders.

    >>> wikitext_to_text("稍后，{{le|卡爾·埃卡特|Carl Eckart}}和[[保罗·狄拉克|狄拉克]]证明了等价性。", "矩阵力学")
    '矩阵力学\\n\\n稍后，卡爾·埃卡特和狄拉克证明了等价性。'
"""
from __future__ import annotations

import re

#: Private-use characters around an index: what protected <math>/<code> content looks like while
#: wikiextractor runs (it leaves them alone), restored afterwards.
_OPEN, _CLOSE = "\ue000", "\ue001"
_PROTECTED_RE = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
# Content kept verbatim: inline (math, chem, code) and block (its own paragraph).
_INLINE_TAGS = ("math", "chem", "ce", "code", "tt", "kbd", "var")
_BLOCK_TAGS = ("syntaxhighlight", "source", "pre")
_TAG_CONTENT_RE = re.compile(
    rf"<({'|'.join(_INLINE_TAGS + _BLOCK_TAGS)})(?:\s[^<>]*)?>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)

# Innermost templates: no braces inside. Rendering repeats until nothing changes, so nested
# templates are rendered inside out.
_TEMPLATE_RE = re.compile(r"\{\{([^{}]*)\}\}")
_NOTETA_RE = re.compile(r"\{\{\s*[Nn]oteTA\s*\|([^{}]*)\}\}")
_RULE_MARKUP_RE = re.compile(r"-\{\s*H\s*\|(.*?)\}-", re.DOTALL)
_LIST_RE = re.compile(r"^([*#;:]+)\s*(.*)$")

#: Language names for ``{{lang-xx|...}}`` (zhwiki renders "英语：philosophy").
LANGUAGE_NAMES = {
    "en": "英语", "ja": "日语", "fr": "法语", "de": "德语", "la": "拉丁语", "el": "希腊语", "grc": "古希腊语",
    "ru": "俄语", "ko": "韩语", "es": "西班牙语", "it": "意大利语", "pt": "葡萄牙语", "ar": "阿拉伯语",
    "sa": "梵语", "nl": "荷兰语", "vi": "越南语", "th": "泰语", "he": "希伯来语", "fa": "波斯语", "tr": "土耳其语",
    "pl": "波兰语", "sv": "瑞典语", "hi": "印地语", "mn": "蒙古语", "bo": "藏语", "ms": "马来语", "id": "印尼语",
    "yue": "粤语", "zh": "中文", "nan": "闽南语", "hak": "客家语", "uk": "乌克兰语", "fi": "芬兰语", "da": "丹麦语",
}
#: Units for ``{{convert|...}}``, rendered as zhwiki writes them (other units stay as given).
UNIT_NAMES = {
    "km": "公里", "m": "米", "cm": "厘米", "mm": "毫米", "mi": "英里", "ft": "英尺", "in": "英寸", "kg": "千克",
    "g": "克", "t": "吨", "lb": "磅", "km2": "平方公里", "m2": "平方米", "ha": "公顷", "acre": "英亩",
    "km/h": "公里每小时", "mph": "英里每小时", "C": "°C", "F": "°F", "L": "升",
}


def split_params(body: str) -> tuple[str, list[str], dict[str, str]]:
    """``name|a|k=v|[[x|y]]`` -> ``("name", ["a", "[[x|y]]"], {"k": "v"})`` (pipes inside links kept).

    >>> split_params("le|[[哲学家|哲人]]|Philosopher|d=1")
    ('le', ['[[哲学家|哲人]]', 'Philosopher'], {'d': '1'})
    """
    parts, depth, cur = [], 0, []
    i = 0
    while i < len(body):
        two = body[i:i + 2]
        if two in ("[[", "]]"):
            depth += 1 if two == "[[" else -1
            cur.append(two)
            i += 2
            continue
        if body[i] == "|" and depth <= 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(body[i])
        i += 1
    parts.append("".join(cur))
    name = parts[0].strip().replace("_", " ")
    positional, named = [], {}
    for p in parts[1:]:
        key, eq, value = p.partition("=")
        if eq and re.fullmatch(r"\s*[\w\- ]+\s*", key) and "[[" not in key:
            named[key.strip()] = value.strip()
        else:
            positional.append(p.strip())
    return name, positional, named


def _arg(args: list[str], i: int) -> str:
    return args[i] if len(args) > i else ""


def render_template(name: str, args: list[str], named: dict[str, str]) -> str | None:
    """The visible text of a known inline template, or None (unknown: dropped like wikiextractor does).

    >>> render_template("tsl", ["en", "Eckart", "埃卡特"], {}), render_template("lang-en", ["philosophy"], {})
    ('埃卡特', '英语：philosophy')
    >>> render_template("convert", ["100", "km", "mi"], {}), render_template("ruby", ["漢字", "かんじ"], {})
    ('100公里', '漢字（かんじ）')
    """
    key = name.lower()
    if key.startswith("template:"):
        key = key[len("template:"):].strip()
    if key in ("le", "ill", "interlanguage link", "link") or re.fullmatch(r"link-[a-z]{2,3}", key):
        return _arg(args, 2) or named.get("d", "") or _arg(args, 0)  # {{le|中文名|English|显示}}
    if key == "tsl":  # {{tsl|en|Foreign title|中文标题|显示}}
        return _arg(args, 3) or _arg(args, 2) or _arg(args, 1)
    if key == "lang":  # {{lang|en|text}}
        return _arg(args, 1)
    if key.startswith("lang-"):  # {{lang-en|text}} -> 英语：text
        code = key[len("lang-"):]
        text = _arg(args, 0)
        return f"{LANGUAGE_NAMES[code]}：{text}" if code in LANGUAGE_NAMES and text else text
    if key in ("convert", "cvt"):  # {{convert|100|km|mi}} / {{convert|1|-|2|km}}
        if len(args) >= 4 and args[1] in ("-", "to", "and", "–"):
            return f"{args[0]}–{args[2]}{UNIT_NAMES.get(args[3], ' ' + args[3])}"
        if len(args) >= 2:
            return f"{args[0]}{UNIT_NAMES.get(args[1], ' ' + args[1])}"
        return _arg(args, 0)
    if key in ("ruby", "ruby-zh-p", "ruby-ja", "ruby-zh"):
        base, note = _arg(args, 0), _arg(args, 1)
        return f"{base}（{note}）" if note else base
    if key in ("bd", "birth and death"):  # {{bd|1879年|3月14日|1955年|4月18日}}
        return f"{_arg(args, 0)}{_arg(args, 1)}—{_arg(args, 2)}{_arg(args, 3)}".strip("—")
    if key in ("nowrap", "nobr", "small", "小", "big", "sup", "sub", "math", "mvar", "ipa", "unicode", "quote",
               "cquote", "quotation", "center", "smallcaps", "nowiki", "abbr", "tooltip", "not a typo", "via"):
        return _arg(args, 0)
    if key in ("color", "colour", "font color"):
        return _arg(args, 1) or _arg(args, 0)
    if key in ("!", "=", "·", "dot", "•"):
        return {"!": "|", "=": "="}.get(key, "·")
    return None


def collect_conversion_rules(wikitext: str) -> tuple[str, list[str]]:
    """Take page-wide conversion rules out of the wikitext: ``{{NoteTA|1=...}}`` items and ``-{H|...}-``.

    Conversion groups (``G1=Physics``) live in the wiki's Module namespace and cannot be applied
    from an article dump; they are skipped.

    >>> collect_conversion_rules("{{NoteTA\\n|G1=物理学\\n|1=zh-hans:泡利; zh-hant:包立;\\n}}-{H|zh-cn:经典;zh-tw:古典;}-包立")
    ('包立', ['zh-hans:泡利; zh-hant:包立;', 'zh-cn:经典;zh-tw:古典;'])
    """
    rules: list[str] = []

    def note_ta(m: re.Match) -> str:
        _, args, named = split_params("NoteTA|" + m.group(1))
        rules.extend(v for k, v in named.items() if k.isdigit() and ":" in v)
        return ""

    def rule(m: re.Match) -> str:
        rules.append(m.group(1).strip())
        return ""

    text = _NOTETA_RE.sub(note_ta, wikitext)
    return _RULE_MARKUP_RE.sub(rule, text), rules


def render_templates(wikitext: str, max_rounds: int = 8) -> str:
    """Replace templates by their text (known ones) or nothing (others), innermost first.

    Parser functions and magic words (``{{#if:...}}``, ``{{PAGENAME}}``) are left to wikiextractor.

    >>> render_templates("（{{lang-en|{{nowrap|Niels Bohr}}}}，{{cite web|url=x}}）")
    '（英语：Niels Bohr，）'
    """
    for _ in range(max_rounds):
        changed = False

        def repl(m: re.Match) -> str:
            nonlocal changed
            body = m.group(1)
            name = body.split("|", 1)[0].strip()
            if name.startswith("#") or (name.isupper() and "|" not in body and name not in ("!", "=")):
                return m.group(0)
            changed = True
            rendered = render_template(*split_params(body))
            return rendered if rendered is not None else ""

        wikitext = _TEMPLATE_RE.sub(repl, wikitext)
        if not changed:
            break
    return wikitext


def unlist(wikitext: str) -> str:
    """List items become plain lines (numbered ones ``1.``, ``2.``...) so wikiextractor keeps them.

    >>> unlist("公设：\\n# 光速不变\\n# 相对性原理\\n* 注")
    '公设：\\n1. 光速不变\\n2. 相对性原理\\n注'
    """
    out: list[str] = []
    number = 0
    for line in wikitext.split("\n"):
        m = _LIST_RE.match(line)
        if not m or line.startswith(":{|"):
            number = 0
            out.append(line)
            continue
        marks, item = m.groups()
        if marks[0] == ";":  # ;term : definition
            term, _, definition = item.partition(":")
            out.append(f"{term.strip()}：{definition.strip()}" if definition else term)
        elif marks == "#":
            number += 1
            out.append(f"{number}. {item}")
        else:  # bullets and nested items: the text alone
            out.append(item)
    return "\n".join(out)


def protect_verbatim(wikitext: str) -> tuple[str, list[str]]:
    """Replace <math>/<code>/... elements by private-use placeholders (their content saved).

    >>> protect_verbatim("质能<math>E=mc^{2}</math>。")
    ('质能\\ue0000\\ue001。', ['E=mc^{2}'])
    """
    saved: list[str] = []

    def repl(m: re.Match) -> str:
        content = m.group(2).strip("\n")
        block = m.group(1).lower() in _BLOCK_TAGS
        saved.append(content)
        token = f"{_OPEN}{len(saved) - 1}{_CLOSE}"
        return f"\n\n{token}\n\n" if block else token

    return _TAG_CONTENT_RE.sub(repl, wikitext), saved


def wikitext_to_text(wikitext: str, title: str = "") -> str:
    """MediaWiki markup -> the text a reader sees (see the module docstring), title first.

    Page conversion rules come back as a ``-{H|...}-`` prefix for :func:`corpora.scripts.convert_text`.

    >>> wikitext_to_text("{{NoteTA|1=zh-hans:泡利;zh-hant:包立;}}'''包立'''是[[物理學家]]。\\n* 不相容原理", "包立")
    '-{H|zh-hans:泡利;zh-hant:包立;}-包立\\n\\n包立是物理學家。\\n\\n不相容原理'
    """
    from wikiextractor.extract import Extractor

    text, rules = collect_conversion_rules(wikitext)
    text, saved = protect_verbatim(text)
    text = unlist(render_templates(text))
    # An empty template table: templates left after rendering (infoboxes, citations) expand to nothing.
    extractor = Extractor(0, "", "", title, [], templates={})
    paragraphs = extractor.clean_text(text, mark_headers=True, expand_templates=True, html_safe=False)
    blocks: list[str] = []
    heading = ""  # a heading is kept only when a paragraph follows it, on the line above it
    for para in paragraphs:
        para = para.strip()
        if para.startswith("## "):
            heading = para[3:].strip().rstrip(".")  # wikiextractor appends "." to headings
        elif para:
            blocks.append(f"{heading}\n{para}" if heading else para)
            heading = ""
    body = "\n\n".join(blocks)
    body = _PROTECTED_RE.sub(lambda m: saved[int(m.group(1))], body)
    out = f"{title}\n\n{body}" if title else body
    return "".join(f"-{{H|{r}}}-" for r in rules) + out
