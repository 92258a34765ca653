"""`${VARIABLE}` references in spec values (a teacher's base_urls), read from the environment when used."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
URL_ENV = "DISTILL_TEACHER_URL"  # where `python -m distill_assets.serve` puts the URL of the server it started


def expand_env(value: str, environ: Mapping[str, str] | None = None, field: str = "base_urls") -> str:
    """`value` with each `${NAME}` replaced by that environment variable; a clear error naming `field` if unset."""
    environ = os.environ if environ is None else environ

    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if not environ.get(name):
            hint = " (python -m distill_assets.serve sets it for the command it runs)" if name == URL_ENV else ""
            raise ValueError(f"{field}: {value!r} names ${name}, which is not set{hint}")
        return environ[name]

    return ENV_REFERENCE.sub(lookup, value)
