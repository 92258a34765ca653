"""json_valid: 1 when the answer parses as JSON and, with a `schema`, validates against it (`jsonschema`).

A Markdown code fence around the JSON (```json ... ```) is taken off first unless
`strip_code_fence` is false. The reference is not used.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from distill_assets.specbase import StrictModel


class Settings(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)  # `schema` in the spec

    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="a JSON Schema the answer must satisfy, written in the spec"
    )
    strip_code_fence: bool = True

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict | None) -> dict | None:
        if schema is not None:
            from jsonschema import exceptions, validators

            try:
                validators.validator_for(schema).check_schema(schema)
            except exceptions.SchemaError as err:
                raise ValueError(f"not a valid JSON Schema: {err.message}") from None
        return schema


compares = False  # the answer alone is judged
DEFAULTS = Settings()

_FENCE = re.compile(r"^\s*```[\w-]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


def score(prediction: str, reference: str | None, settings: Settings = DEFAULTS) -> float:
    text = prediction
    if settings.strip_code_fence and (fenced := _FENCE.match(text)):
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except ValueError:
        return 0.0
    if settings.schema_ is None:
        return 1.0
    from jsonschema import validators

    validator = validators.validator_for(settings.schema_)(settings.schema_)
    return float(validator.is_valid(value))
