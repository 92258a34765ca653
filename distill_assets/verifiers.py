"""Verifiers: checkers that accept or reject one completion, named by a task's `verifier` field.

A verifier is `(prompt, completion, reference) -> bool`. `reference` compares with the
task's reference answer; any other checker is named as `package.module:function` (the
demo's are `distill_assets.demo.verifiers:dates`, `:reverse` and `:units`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

Verifier = Callable[[str, str, "str | None"], bool]


def reference(prompt: str, completion: str, reference: str | None) -> bool:
    """The completion equals the reference answer, ignoring surrounding whitespace."""
    return reference is not None and completion.strip() == reference.strip()


VERIFIERS: dict[str, Verifier] = {"reference": reference}


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
