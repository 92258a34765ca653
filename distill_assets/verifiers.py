"""Verifiers: checkers that accept or reject one completion, named by a task's `verifier` field.

A verifier is `(prompt, completion, reference) -> bool`. `reference` compares with the
task's reference answer; any other checker is named as `package.module:function` (the
demo's are `distill_assets.demo.verifiers:dates`, `:reverse` and `:units`).
"""

from __future__ import annotations

from collections.abc import Callable

from distill_assets.plugins import check_name, resolve

Verifier = Callable[[str, str, "str | None"], bool]


def reference(prompt: str, completion: str, reference: str | None) -> bool:
    """The completion equals the reference answer, ignoring surrounding whitespace."""
    return reference is not None and completion.strip() == reference.strip()


VERIFIERS: dict[str, Verifier] = {"reference": reference}


def get_verifier(name: str) -> Verifier:
    """A built-in verifier by name, or a user's `package.module:function`."""
    return resolve(name, "verifier", VERIFIERS)


def check_verifier_name(name: str) -> None:
    check_name(name, "verifier", VERIFIERS)
