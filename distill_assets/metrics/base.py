"""What the metric files share: text folding, the empty settings block, and the `Unscorable` outcome."""

from __future__ import annotations

import re
import unicodedata

from distill_assets.specbase import StrictModel


class Unscorable(ValueError):
    """An answer a metric cannot score (a reference with no number, a judge reply with no score).

    It is counted and reported with its reason, never scored 0.
    """


class NoSettings(StrictModel):
    """A metric without settings."""


_SPACE = re.compile(r"\s+")


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def fold(text: str) -> str:
    """Compatibility-normalised (NFKC), case-folded, inner whitespace collapsed, surrounding punctuation and
    whitespace stripped: "  Billing. " and "billing" fold alike, as do "ＡＢＣ" and "abc"."""
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    start, end = 0, len(text)
    while start < end and (_is_punctuation(text[start]) or text[start].isspace()):
        start += 1
    while end > start and (_is_punctuation(text[end - 1]) or text[end - 1].isspace()):
        end -= 1
    return text[start:end]


def words(text: str) -> list[str]:
    """The text's words after NFKC and case folding, punctuation taken as a space (any script)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(" " if _is_punctuation(c) else c for c in text).split()
