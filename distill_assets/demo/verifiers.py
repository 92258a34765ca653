"""The demo tasks' verifiers: each re-derives the answer from the prompt, so a prompt needs no reference.

The demo spec names them as `distill_assets.demo.verifiers:dates` (and `:reverse`, `:units`),
the way a user names their own checker; the core does not import this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal, InvalidOperation

from distill_assets.demo.tasks import CONVERSIONS, MONTHS
from distill_assets.verifiers import Verifier

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


dates = _solved_by(solve_date)
reverse = _solved_by(solve_reverse)
units = _solved_by(solve_units)
