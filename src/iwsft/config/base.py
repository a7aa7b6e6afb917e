"""The base of every params.yaml section (iwsft.config.schema): strict, frozen, no unknown keys; and
the constrained number types the sections share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Positive = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
# a percentile as written: 90 stays the int 90 (summaries and messages say p90, not p90.0), 97.5 a float
Percentile = Annotated[int, Field(gt=0, lt=100)] | Annotated[float, Field(gt=0, lt=100)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
