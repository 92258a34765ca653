"""A user's own function named `package.module:function` in the spec (a verifier, a metric), or a built-in by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def is_function_name(name: str) -> bool:
    """Whether a spec name is a user's `package.module:function` rather than a built-in's."""
    return ":" in name


def check_name(name: str, kind: str, builtins: Iterable[str]) -> None:
    """Raise ValueError unless `name` is a built-in or has the `package.module:function` form (not imported)."""
    if name not in builtins and not is_function_name(name):
        raise ValueError(f"unknown {kind} {name!r}; use one of {sorted(builtins)} or `package.module:function`")


def resolve(name: str, kind: str, builtins: Mapping[str, Any]) -> Callable:
    """The built-in called `name`, or the function `package.module:function` imported; ValueError naming it."""
    if name in builtins:
        return builtins[name]
    module_name, _, attribute = name.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"unknown {kind} {name!r} ({err}); use one of {sorted(builtins)} or `package.module:function`"
        ) from None
    if not callable(found):
        raise ValueError(f"{kind} {name!r} is not callable")
    return found
