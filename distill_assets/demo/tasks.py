"""The demo's three tasks: prompts whose answers can be checked exactly.

Each task is a generator of (prompt, answer) pairs from a seeded RNG. The prompts are
what a user would curate; the answers are the ground truth the evaluation scores
against and the tiny teachers were trained on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, timedelta

MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip

LETTERS = "abcdefghijklmnopqrstuvwxyz"


# (from unit, to unit, factor): converting multiplies by a power of ten.
CONVERSIONS = [("km", "m", 1000), ("m", "cm", 100), ("cm", "mm", 10), ("kg", "g", 1000), ("l", "ml", 1000)]


def units(rng: random.Random) -> tuple[str, str]:
    """Convert a quantity with up to two decimals to a smaller unit: decimal arithmetic by a power of ten."""
    source, target, factor = rng.choice(CONVERSIONS)
    hundredths = rng.randint(1, 99999)
    if rng.random() < 0.4:
        hundredths -= hundredths % 100  # a whole number
    value = f"{hundredths // 100}.{hundredths % 100:02d}".rstrip("0").rstrip(".")
    converted = hundredths * factor
    answer = str(converted // 100) if converted % 100 == 0 else f"{converted / 100:.2f}".rstrip("0")
    return f"Convert {value} {source} to {target}", answer


def dates(rng: random.Random) -> tuple[str, str]:
    """Rewrite a date written one of five ways as ISO 8601."""
    d = date(1950, 1, 1) + timedelta(days=rng.randint(0, 365 * 100))
    month = MONTHS[d.month - 1]
    written = rng.choice(
        [
            f"{month} {d.day}, {d.year}",
            f"{d.day} {month} {d.year}",
            f"{month[:3]} {d.day} {d.year}",
            f"{d.day}.{d.month}.{d.year}",
            f"{d.year}/{d.month}/{d.day}",
        ]
    )
    return f"Date in ISO 8601: {written}", d.isoformat()


def reverse(rng: random.Random) -> tuple[str, str]:
    """Reverse a random lowercase word of 3 to 9 letters."""
    word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 9)))
    return f"Reverse the letters: {word}", word[::-1]


TASKS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "units": units,
    "dates": dates,
    "reverse": reverse,
}
