"""The base of every params.yaml section (iwsft.config.schema): strict, frozen, no unknown keys; and
the constrained number types the sections share."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Positive = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
# a percentile as written: 90 stays the int 90 (summaries and messages say p90, not p90.0), 97.5 a float
Percentile = Annotated[int, Field(gt=0, lt=100)] | Annotated[float, Field(gt=0, lt=100)]


def _strictly_increasing(values: list) -> list:
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"must be strictly increasing, got {values}")
    return values


# quality bins' thresholds, in both domains: p90 < p95 < p98
Percentiles = Annotated[list[Percentile], Field(min_length=1), AfterValidator(_strictly_increasing)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
