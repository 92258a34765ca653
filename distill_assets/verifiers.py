"""Verifiers: checkers that accept or reject one completion, named by a task's `verifier` field.

A verifier is `(prompt, completion, reference) -> bool`. `reference` compares with the
task's reference answer; the demo verifiers re-derive the answer from the prompt, so
they also work for prompts without one. A user's own checker is `package.module:function`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal, InvalidOperation

from distill_assets.demo.tasks import CONVERSIONS, MONTHS

Verifier = Callable[[str, str, "str | None"], bool]


def reference(prompt: str, completion: str, reference: str | None) -> bool:
    """The completion equals the reference answer, ignoring surrounding whitespace."""
    return reference is not None and completion.strip() == reference.strip()


_MONTH = {m.lower(): i + 1 for i, m in enumerate(MONTHS)} | {m[:3].lower(): i + 1 for i, m in enumerate(MONTHS)}
_DATE_FORMATS = [
    (re.compile(r"^([A-Za-z]+) (\d{1,2}),? (\d{4})$"), ("month", "day", "year")),
    (re.compile(r"^(\d{1,2}) ([A-Za-z]+) (\d{4})$"), ("day", "month", "year")),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$"), ("day", "month", "year")),
    (re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"), ("year", "month", "day")),
]


def solve_date(prompt: str) -> str | None:
    """The ISO 8601 form of the date in a demo `dates` prompt, or None if it has none."""
    written = prompt.rsplit(":", 1)[-1].strip()
    for pattern, order in _DATE_FORMATS:
        match = pattern.match(written)
        if not match:
            continue
        parts = dict(zip(order, match.groups()))
        month = parts["month"]
        month_number = int(month) if month.isdigit() else _MONTH.get(month.lower())
        try:
            return date(int(parts["year"]), month_number or 0, int(parts["day"])).isoformat()
        except ValueError:
            return None
    return None


def solve_reverse(prompt: str) -> str | None:
    match = re.search(r"Reverse the letters: (\S+)$", prompt.strip())
    return match.group(1)[::-1] if match else None


_FACTORS = {(source, target): factor for source, target, factor in CONVERSIONS}


def solve_units(prompt: str) -> str | None:
    """The converted quantity, written as the demo writes it (no trailing zeros)."""
    match = re.match(r"^Convert ([0-9.]+) (\w+) to (\w+)$", prompt.strip())
    if not match or (match.group(2), match.group(3)) not in _FACTORS:
        return None
    try:
        value = Decimal(match.group(1)) * _FACTORS[(match.group(2), match.group(3))]
    except InvalidOperation:
        return None
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _solved_by(solve: Callable[[str], str | None]) -> Verifier:
    def verify(prompt: str, completion: str, reference: str | None) -> bool:
        answer = solve(prompt)
        return answer is not None and completion.strip() == answer

    verify.__doc__ = f"The completion equals the answer {solve.__name__} derives from the prompt."
    return verify


VERIFIERS: dict[str, Verifier] = {
    "reference": reference,
    "demo_dates": _solved_by(solve_date),
    "demo_reverse": _solved_by(solve_reverse),
    "demo_units": _solved_by(solve_units),
}


def get_verifier(name: str) -> Verifier:
    """A built-in verifier by name, or a user's `package.module:function`."""
    if name in VERIFIERS:
        return VERIFIERS[name]
    module_name, _, attribute = name.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"unknown verifier {name!r} ({err}); use one of {sorted(VERIFIERS)} or `package.module:function`"
        ) from None
    if not callable(found):
        raise ValueError(f"verifier {name!r} is not callable")
    return found


def check_verifier_name(name: str) -> None:
    if name not in VERIFIERS and ":" not in name:
        raise ValueError(f"unknown verifier {name!r}; use one of {sorted(VERIFIERS)} or `package.module:function`")
