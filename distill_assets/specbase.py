"""The base of every spec model, in a module of its own so the method files can define settings without spec.py."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", description="lowercase letters, digits, _")]


class StrictModel(BaseModel):
    """A frozen model that rejects unknown fields, so a misspelt key in the spec fails by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
