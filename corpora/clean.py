"""Cleaning: Unicode normalisation, markup and control removal, script conversion, filters (wikitext: wikitext.py).

Each step is optional (see :class:`CleanConfig`) and each is a pure ``str -> str`` function, so
they compose and test alone::

    >>> cfg = CleanConfig()
    >>> clean_text("萬民福音部（）是羅馬教廷的機構。\\x07<ref>x</ref>\\n\\n\\n\\n第二段", cfg, convert="t2s")
    '万民福音部是罗马教廷的机构。\\n\\n第二段'
    >>> filter_reason("太短", cfg)
    'too_short'

Defaults keep the text as the Llama tokenizer will see it: NFC only (NFKC would fold full-width
Chinese punctuation ``，`` into ASCII ``,`` and the Llama tokenizer does no normalisation).
"""
from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from corpora.scripts import MW_SIMPLIFIED, MW_TRADITIONAL, convert_text

#: CJK Unified Ideographs (+ extension A, compatibility ideographs, extensions B-F).
HAN_RE = re.compile("[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002ebef]")

# Control characters (Cc) except \n and \t, plus invisible format characters that only confuse
# a tokenizer (BOM, zero-width space, bidi marks, soft hyphen). ZWJ (U+200D) is kept: emoji use it.
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b\u200e\u200f\u202a-\u202e\ufeff\ufffe]")
_HTML_TAGS = (
    "ref|references|br|hr|sup|sub|span|div|small|big|center|font|b|i|u|s|p|code|math|nowiki|table|tr|td|th|"
    "blockquote|abbr|li|ul|ol|dl|dt|dd|onlyinclude|includeonly|noinclude|poem|gallery|section|templatestyles|a|"
    "chem|ce|var|kbd|tt|em|strong|del|ins|q|cite|mark|bdi|ruby|rb|rt|rp|syntaxhighlight|source|score"
)
_TAG_RE = re.compile(rf"</?(?:{_HTML_TAGS})(?:\s[^<>\n]*)?/?>", re.IGNORECASE)
_REF_RE = re.compile(r"<ref(?:\s[^<>\n]*)?>.*?</ref\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
_WIKI_RE = re.compile(r"\[\[|\]\]|\{\{|\}\}|'''+")
# Brackets left empty (or holding only a label and punctuation) once WikiExtractor dropped a
# foreign-language template, e.g. "萬民福音部（）是..." or "（学名：''）" in raw zhwiki extractions.
_EMPTY_BRACKETS_RE = re.compile(r"[（(](?:[^（）()\n:：]{1,8}[:：])?[\s，,；;、:：'\"“”‘’]*[)）]|\[\s*\]")
# wikiextractor's stand-ins for <math>/<code> in already-extracted text (the content is gone):
# dropped, never kept as words ("碳-12(formula_1)" -> "碳-12").
_PLACEHOLDER_RE = re.compile(r"\b(?:formula|codice)_\d+\b")
# MediaWiki language-conversion markup: -{庄}- , -{zh-hans:白罗; zh-hant:白羅;}- , -{H|...}- (a rule only).
_LANGCONV_RE = re.compile(r"-\{(.*?)\}-", re.DOTALL)
_LANGCONV_VARIANT_RE = re.compile(r"(zh(?:-[a-z]+)?)\s*:\s*([^;]*)")
_LANGCONV_FLAGS_RE = re.compile(r"\s*[A-Za-z\-]{1,4}\s*")
_LANGCONV_VARIANT_LIST_RE = re.compile(r"\s*zh(?:-[a-z]+)?(?:\s*;\s*zh(?:-[a-z]+)?)*\s*;?\s*")
_LANGCONV_PREFERENCE = ("zh-hans", "zh-cn", "zh-sg", "zh-my", "zh", "zh-hant", "zh-tw", "zh-hk", "zh-mo")
_SPACES_RE = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f]+")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")


@dataclass
class CleanConfig:
    """What the cleaner does; every step can be switched off.

    Example (YAML)::

        clean: {min_chars: 20, min_han_fraction: 0.3}

    Script conversion is per source (``SourceConfig.convert``), not here.
    """

    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"
    """Unicode normalisation; NFC keeps the text, NFKC folds full-width punctuation (not wanted)."""
    remove_control: bool = True
    """Drop control characters (except newline/tab) and invisible format characters."""
    strip_markup: bool = True
    """Drop stray markup: <ref>..</ref>, HTML tags and comments, entities, wiki brackets, empty （）."""
    tidy_whitespace: bool = True
    """Collapse runs of spaces, strip line ends, keep at most one blank line between paragraphs."""
    min_chars: int = 20
    """Reject documents shorter than this many characters after cleaning (``too_short``)."""
    min_han_fraction: float = 0.3
    """Reject documents whose Han share of non-whitespace characters is below this (``low_han_fraction``)."""
    max_line_chars: int = 20000
    """Reject documents with a line longer than this many characters (``long_line``: tables, dumps)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_han_fraction <= 1.0:
            raise ValueError(f"min_han_fraction must be in [0, 1], got {self.min_han_fraction}")
        if self.min_chars < 0 or self.max_line_chars < 1:
            raise ValueError("min_chars must be >= 0 and max_line_chars >= 1")


def normalize_unicode(text: str, form: str = "NFC") -> str:
    """NFC/NFKC normalisation (``"none"`` returns the text unchanged).

    >>> normalize_unicode("e\\u0301") == "\\u00e9"
    True
    >>> normalize_unicode("，", "NFC"), normalize_unicode("，", "NFKC")
    ('，', ',')
    """
    return text if form == "none" else unicodedata.normalize(form, text)


def remove_control(text: str) -> str:
    """Drop control and invisible format characters; newlines and tabs stay.

    >>> remove_control("a\\x00b\\u200bc\\n\\td")
    'abc\\n\\td'
    """
    return _CONTROL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n"))


def _langconv(match: re.Match) -> str:
    body = match.group(1)
    flags, bar, rest = body.partition("|")
    if bar and _LANGCONV_VARIANT_LIST_RE.fullmatch(flags):  # -{zh-hans;zh-hant|text}-: text as written
        return rest
    if bar and _LANGCONV_FLAGS_RE.fullmatch(flags):  # -{H|...}- / -{A|...}- / -{R|...}- / -{T|...}- ...
        f = flags.strip().upper()
        if "R" in f:
            return rest  # raw: no conversion
        if "A" not in f and any(c in f for c in "HTD-"):
            return ""  # a rule for the page, its title or a description: not text
        body = rest
    variants = dict(_LANGCONV_VARIANT_RE.findall(body))
    if not variants:
        return body
    for code in _LANGCONV_PREFERENCE:
        if code in variants:
            return variants[code].strip()
    return next(iter(variants.values())).strip()


def resolve_language_conversion(text: str) -> str:
    """Replace MediaWiki ``-{...}-`` conversion markup by its (Simplified-preferred) text.

    >>> resolve_language_conversion("街-{庄}-与-{zh-hans:赫丘勒·白罗; zh-hant:赫丘勒·白羅;}-，-{H|zh-cn:软件;zh-tw:軟體;}-")
    '街庄与赫丘勒·白罗，'
    >>> resolve_language_conversion("-{zh-hans;zh-hant|Paul Dirac}-与-{R|zh-tw:x}-")
    'Paul Dirac与zh-tw:x'
    """
    return _LANGCONV_RE.sub(_langconv, text) if "-{" in text else text


def strip_markup(text: str) -> str:
    """Remove markup that survived extraction: refs, tags, comments, entities, ``[[ ]]``, ``{{ }}``, ``'''``,
    ``-{ }-`` language conversion, ``formula_N``/``codice_N`` placeholders, brackets emptied by dropped templates.

    >>> strip_markup("数学&amp;<b>逻辑</b>[[哲学]]<ref name=a>引用</ref>（）-{庄}-（学名：''）。")
    '数学&逻辑哲学庄。'
    """
    text = resolve_language_conversion(text)
    text = _COMMENT_RE.sub("", text)
    text = _REF_RE.sub("", text)
    text = _TAG_RE.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    text = _WIKI_RE.sub("", text)
    if "_" in text:
        text = _PLACEHOLDER_RE.sub("", text)
    return _EMPTY_BRACKETS_RE.sub("", text)


def tidy_whitespace(text: str) -> str:
    """One space for runs of spaces/tabs, no spaces at line ends, at most one blank line in a row.

    >>> tidy_whitespace("  第一段  \\t结尾 \\n\\n\\n\\n 第二段\\n")
    '第一段 结尾\\n\\n第二段'
    """
    lines = [_SPACES_RE.sub(" ", line).strip(" \u3000") for line in text.split("\n")]
    return _MANY_NEWLINES_RE.sub("\n\n", "\n".join(lines)).strip("\n")


def clean_text(text: str, cfg: CleanConfig, convert: str = "none") -> str:
    """Apply the configured steps in order: normalise, control, markup, ``convert``, whitespace.

    A MediaWiki variant (``zh-cn``...) converts *before* markup removal: it applies the page's
    ``-{...}-`` conversion rules, which markup removal would otherwise drop.

    >>> clean_text("-{H|zh-hans:泡利;zh-hant:包立;}-包立<ref>x</ref>是物理學家", CleanConfig(), "zh-cn")
    '泡利是物理学家'
    """
    text = normalize_unicode(text, cfg.unicode_form)
    if cfg.remove_control:
        text = remove_control(text)
    mediawiki = convert in MW_SIMPLIFIED or convert in MW_TRADITIONAL
    if mediawiki:
        text = convert_text(text, convert)
    if cfg.strip_markup:
        text = strip_markup(text)
    if not mediawiki:
        text = convert_text(text, convert)
    if cfg.tidy_whitespace:
        text = tidy_whitespace(text)
    return text


def han_fraction(text: str) -> float:
    """Share of Han characters among non-whitespace characters (0.0 for an empty text).

    >>> han_fraction("数学 is 2")
    0.4
    """
    visible = len(text) - sum(text.count(c) for c in " \n\t\u3000")
    han = len(text) - len(HAN_RE.sub("", text))  # 2x faster than len(findall()): no list built
    return han / visible if visible > 0 else 0.0


def filter_reason(text: str, cfg: CleanConfig) -> str | None:
    """Why a cleaned document is rejected (``empty``, ``too_short``, ``low_han_fraction``, ``long_line``), or None.

    >>> filter_reason("数学是研究数量、结构以及空间等概念的一门学科。", CleanConfig(min_chars=10))
    >>> filter_reason("mathematics is the study of numbers", CleanConfig(min_chars=10))
    'low_han_fraction'
    """
    if not text.strip():
        return "empty"
    if len(text) < cfg.min_chars:
        return "too_short"
    if cfg.min_han_fraction > 0 and han_fraction(text) < cfg.min_han_fraction:
        return "low_han_fraction"
    if len(text) > cfg.max_line_chars and max(len(line) for line in text.split("\n")) > cfg.max_line_chars:
        return "long_line"
    return None
