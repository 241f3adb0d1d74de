"""Chinese scripts: per-source OpenCC conversion, per-document script detection, conversion figures.

A source declares the script its text is written in (``simplified`` | ``traditional`` | ``mixed``)
and a conversion: ``none``, an OpenCC config (``t2s``, ``tw2s``, ``tw2sp``, ``hk2s``, ``s2t``...), or
a MediaWiki variant (``zh-cn``, ``zh-tw``, ``zh-hk``, ``zh-hans``...: converted with ``zhconv-rs``,
which uses MediaWiki's own tables and applies a page's ``-{...}-`` conversion rules, as zhwiki does).
Text whose users write Traditional keeps its script by default (``none``), so the tokenizer's
Traditional pieces are trained on Traditional text.

    >>> output_script("traditional", "tw2s"), output_script("traditional", "none")
    ('simplified', 'traditional')
    >>> convert_text("我看著軟體", "tw2sp")
    '我看着软件'
    >>> detect_script("這個軟體很好用"), detect_script("这个软件很好用"), detect_script("中文")
    ('traditional', 'simplified', 'mixed')
"""
from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable
from typing import Literal

Script = Literal["simplified", "traditional", "mixed"]
SCRIPTS: tuple[str, ...] = ("simplified", "traditional", "mixed")

#: OpenCC configs that produce Simplified text (``p``: also regional phrases, e.g. 軟體 -> 软件).
TO_SIMPLIFIED = ("t2s", "tw2s", "tw2sp", "hk2s", "hk2sp")
#: OpenCC configs that produce Traditional text (generic, Taiwan or Hong Kong standard).
TO_TRADITIONAL = ("s2t", "s2tw", "s2twp", "s2hk", "s2hkp", "t2tw", "tw2t", "t2hk", "hk2t")
#: MediaWiki variants (``zhconv-rs``): Simplified ones, then Traditional ones.
MW_SIMPLIFIED = ("zh-cn", "zh-hans", "zh-sg", "zh-my")
MW_TRADITIONAL = ("zh-tw", "zh-hk", "zh-hant", "zh-mo")
#: Every value ``convert`` accepts.
CONVERSIONS = ("none", *TO_SIMPLIFIED, *TO_TRADITIONAL, *MW_SIMPLIFIED, *MW_TRADITIONAL)
#: Which variant codes a target reads in ``-{zh-hans;zh-hant|text}-`` (MediaWiki's fallbacks).
_MW_FALLBACKS = {
    "zh-cn": ("zh-cn", "zh-hans"), "zh-sg": ("zh-sg", "zh-hans"), "zh-my": ("zh-my", "zh-hans"),
    "zh-hans": ("zh-hans", "zh-cn"), "zh-tw": ("zh-tw", "zh-hant"), "zh-hk": ("zh-hk", "zh-hant"),
    "zh-mo": ("zh-mo", "zh-hk", "zh-hant"), "zh-hant": ("zh-hant", "zh-tw"),
}
_MW_VARIANT_LIST_RE = re.compile(r"-\{\s*((?:zh(?:-[a-z]+)?\s*;\s*)*zh(?:-[a-z]+)?)\s*;?\s*\|(.*?)\}-", re.DOTALL)

#: Words that stay Taiwan usage after a character-level conversion (their Simplified glyphs);
#: ``tw2sp`` maps them to mainland vocabulary. Counted by :func:`conversion_stats`.
TAIWAN_TERMS = ("软体", "网路", "程式", "资料库", "滑鼠", "萤幕", "伺服器", "预设", "档案", "讯息", "介面", "影音")
#: The Taiwan/HK aspect particle: mainland Simplified writes 看着, Taiwan 看著 (``t2s`` keeps 著).
ZHUO_PARTICLE_RE = re.compile("[看走跟接隨随穿帶带說说笑拿望坐站躺等守想忙靠沿朝向順顺對对]著")


def check_conversion(name: str, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``name`` is a known conversion.

    >>> check_conversion("t2x", "source 'drcd': convert")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: source 'drcd': convert: unknown conversion 't2x'; choose one of none, t2s, tw2s, ...
    """
    if name not in CONVERSIONS:
        raise ValueError(f"{where}: unknown conversion {name!r}; choose one of {', '.join(CONVERSIONS)}")


def output_script(script: str, convert: str) -> str:
    """The script of a source's text after its conversion (``mixed`` stays per document, see :func:`detect_script`)."""
    if convert in TO_SIMPLIFIED or convert in MW_SIMPLIFIED:
        return "simplified"
    if convert in TO_TRADITIONAL or convert in MW_TRADITIONAL:
        return "traditional"
    return script


@functools.lru_cache(maxsize=8)
def opencc_converter(config: str):
    """A cached ``opencc.OpenCC(config)`` (building one reads dictionaries: do it once per process)."""
    import opencc

    return opencc.OpenCC(config)


def mediawiki_convert(text: str, variant: str) -> str:
    """Convert to a MediaWiki variant with ``zhconv-rs``, applying ``-{...}-`` rules as zhwiki does.

    ``-{zh-hans;zh-hant|text}-`` (text shown to the listed variants only), which zhconv-rs 0.4 leaves
    in the output, is resolved here first.

    >>> mediawiki_convert("-{H|zh-hans:泡利;zh-hant:包立;}-包立與-{zh-hans;zh-hant|量子}-力學", "zh-cn")
    '泡利与量子力学'
    """
    from zhconv_rs import zhconv

    if "-{" in text:
        wanted = _MW_FALLBACKS[variant]

        def listed(m: re.Match) -> str:
            codes = {c.strip() for c in m.group(1).split(";")}
            return f"-{{R|{m.group(2)}}}-" if codes & set(wanted) else ""

        text = _MW_VARIANT_LIST_RE.sub(listed, text)
    return zhconv(text, variant, True)


def convert_text(text: str, convert: str) -> str:
    """Apply a conversion: ``none`` (unchanged), an OpenCC config, or a MediaWiki variant.

    >>> convert_text("羅馬教廷", "t2s"), convert_text("罗马", "none"), convert_text("軟體", "zh-cn")
    ('罗马教廷', '罗马', '软件')
    """
    if convert == "none":
        return text
    if convert in _MW_FALLBACKS:
        return mediawiki_convert(text, convert)
    return opencc_converter(convert).convert(text)


@functools.lru_cache(maxsize=1)
def _script_patterns() -> tuple[re.Pattern, re.Pattern]:
    # Characters that only one script uses: t2s changes a Traditional-only character, s2t a
    # Simplified-only one; characters both change (干/乾/幹 families) tell nothing and are left out.
    chars = [chr(c) for c in (*range(0x4E00, 0xA000), *range(0x3400, 0x4DC0))]
    joined = "\n".join(chars)
    to_s = opencc_converter("t2s").convert(joined).split("\n")
    to_t = opencc_converter("s2t").convert(joined).split("\n")
    assert len(to_s) == len(to_t) == len(chars), "OpenCC changed the line structure"
    trad = {c for c, s, t in zip(chars, to_s, to_t, strict=True) if s != c and t == c}
    simp = {c for c, s, t in zip(chars, to_s, to_t, strict=True) if t != c and s == c}
    return re.compile(f"[{''.join(sorted(trad))}]"), re.compile(f"[{''.join(sorted(simp))}]")


def script_counts(text: str) -> tuple[int, int]:
    """``(simplified_only, traditional_only)``: characters that exist in one script only.

    >>> script_counts("这個")
    (1, 1)
    """
    trad_re, simp_re = _script_patterns()
    return len(simp_re.findall(text)), len(trad_re.findall(text))


def detect_script(text: str, majority: float = 0.8) -> str:
    """``traditional`` / ``simplified`` when at least ``majority`` of the script-specific characters
    are of that script, else ``mixed`` (also when the text has none: 中文, 人口).

    >>> detect_script("維基百科是一个自由的百科全书")   # 1 Traditional-only, 3 Simplified-only characters
    'mixed'
    """
    simp, trad = script_counts(text)
    if simp + trad == 0:
        return "mixed"
    if trad >= majority * (simp + trad):
        return "traditional"
    if simp >= majority * (simp + trad):
        return "simplified"
    return "mixed"


def _changed_chars(a: str, b: str) -> tuple[int, int]:
    """(characters of ``a`` changed or removed, replaced spans) between a text and its conversion."""
    if len(a) == len(b):
        changed = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        spans = sum(1 for k, i in enumerate(changed) if k == 0 or changed[k - 1] != i - 1)
        return len(changed), spans
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    edits = [(i1, i2) for tag, i1, i2, _, _ in ops if tag != "equal"]
    return sum(i2 - i1 for i1, i2 in edits), len(edits)


def conversion_stats(texts: Iterable[str], conversions: Iterable[str]) -> dict[str, dict]:
    """What each conversion does to ``texts``: characters changed, changed spans, residual 著 particles
    and Taiwan terms, script of the result.

    >>> s = conversion_stats(["我看著軟體。"], ["t2s", "tw2sp"])
    >>> s["t2s"]["chars_changed"], s["t2s"]["zhuo_particle"], s["tw2sp"]["zhuo_particle"], s["tw2sp"]["taiwan_terms"]
    (2, 1, 0, 0)
    """
    texts = list(texts)
    out: dict[str, dict] = {}
    han_re = re.compile("[\u4e00-\u9fff\u3400-\u4dbf]")
    chars = sum(len(t) for t in texts)
    han = sum(len(han_re.findall(t)) for t in texts)
    for conv in ["none", *conversions]:
        changed = spans = zhuo = terms = 0
        simp = trad = 0
        for text in texts:
            # Line by line: the line lengths bound the rare difflib fallback (length-changing phrases).
            converted = convert_text(text, conv)
            for a, b in zip(text.split("\n"), converted.split("\n"), strict=False):
                c, s = _changed_chars(a, b)
                changed += c
                spans += s
            zhuo += len(ZHUO_PARTICLE_RE.findall(converted))
            terms += sum(converted.count(w) for w in TAIWAN_TERMS)
            s_only, t_only = script_counts(converted)
            simp += s_only
            trad += t_only
        out[conv] = {
            "chars": chars, "han": han, "chars_changed": changed, "changed_share": changed / max(chars, 1),
            "changed_spans": spans, "zhuo_particle": zhuo, "taiwan_terms": terms,
            "traditional_only_chars": trad, "simplified_only_chars": simp,
        }
    return out
