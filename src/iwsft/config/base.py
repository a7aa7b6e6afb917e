"""The base of every params.yaml section (iwsft.config.schema): strict, frozen, no unknown keys; and
the constrained number types the sections share."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from iwsft.errors import UserError

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


def describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (a typo? see params.yaml's comments for the known ones)"
    if error["type"] == "missing":
        return f"{key}: missing"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(value, str) and error["type"] in {"float_type", "int_type"}:
        try:
            float(value)
            message += f" (YAML read {value!r} as text: write it as a plain number, e.g. 1.0e-3 for 1e-3)"
        except ValueError:
            pass
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{key or 'params'}: {message}{shown}"


def validated(model: type[Section], params: dict, source: str) -> Section:
    """`model` built from a params mapping, or one UserError naming every bad value with its dotted key."""
    if not isinstance(params, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    try:
        return model.model_validate(params)
    except ValidationError as error:
        problems = [describe(e) for e in error.errors()]
        raise UserError(f"{source}: {len(problems)} invalid setting{'s' * (len(problems) > 1)}:\n  "
                        + "\n  ".join(problems)) from None
