"""Named-column input and classifier output: what a model fitted on a pandas DataFrame takes and gives.

A :class:`Column` says what one column takes (a number, an integer, a boolean, a category of known strings, or
any string) and whether null is allowed; an :class:`Output` says what ``predict`` answers (a value, a class
label, or the class probabilities). :class:`RecordSchema` holds the pydantic models that check a request's
records, column by column, so every mistake is a 422 naming the column; :func:`build_frame` turns checked values
into the DataFrame the model was trained on. Both adapters use the same objects. pandas is imported only when a
frame is built, so list-only servers do not pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import numpy as np
from pydantic import AfterValidator, AllowInfNan, BaseModel, ConfigDict, Field, Strict, create_model
from pydantic_core import PydanticCustomError

from servingbench.shared_model.limits import MAX_ABS_FEATURE

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COLUMN_KINDS",
    "OUTPUT_KINDS",
    "OUTPUT_METHODS",
    "Column",
    "Output",
    "RecordSchema",
    "build_frame",
    "records_to_values",
]

ColumnKind = Literal["number", "integer", "boolean", "category", "string"]
COLUMN_KINDS: tuple[ColumnKind, ...] = ("number", "integer", "boolean", "category", "string")
OutputMethod = Literal["predict", "predict_proba"]
OUTPUT_METHODS: tuple[OutputMethod, ...] = ("predict", "predict_proba")
OutputKind = Literal["value", "label", "probabilities"]
OUTPUT_KINDS: tuple[OutputKind, ...] = ("value", "label", "probabilities")
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: How many known categories an "unknown category" message quotes.
QUOTED_CATEGORIES = 5
#: Longest piece of a rejected value quoted back in a message, in characters.
QUOTED_VALUE_CHARS = 40
_FIELD_PREFIX = "c"  # pydantic field names; the column names are their aliases, so any string is a column name

JSONScalar = float | int | str | bool


@dataclass(frozen=True)
class Column:
    """One input column. ``categories``: the values the model knows (for ``category``, or a numeric column the
    model one-hot encodes); with ``unknown_ok`` False any other value is refused, else it is passed on (the model
    maps it to "unknown" or "missing" itself). ``nullable``: the model takes a missing value here."""

    name: str
    kind: ColumnKind
    nullable: bool = False
    categories: tuple[JSONScalar, ...] | None = None
    unknown_ok: bool = True

    @property
    def restricted(self) -> bool:
        """True if only the known categories are accepted."""
        return self.categories is not None and not self.unknown_ok

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "kind": self.kind, "nullable": self.nullable}
        if self.categories is not None:
            doc["categories"] = list(self.categories)
            doc["unknown"] = "accept" if self.unknown_ok else "error"
        return doc

    @classmethod
    def from_json(cls, raw: object) -> Column:
        """Parse :meth:`as_json` output; ValueError or TypeError on anything else."""
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or raw.get("kind") not in COLUMN_KINDS:
            raise ValueError(f"bad column {str(raw)[:80]}")
        categories = raw.get("categories")
        if categories is not None and not isinstance(categories, list):
            raise TypeError(f"column {raw['name']!r}: categories must be a list")
        return cls(
            name=raw["name"],
            kind=raw["kind"],
            nullable=bool(raw.get("nullable", False)),
            categories=None if categories is None else tuple(categories),
            unknown_ok=raw.get("unknown", "accept") != "error",
        )

    def json_schema(self) -> dict[str, Any]:
        """The column's JSON schema, as the served OpenAPI document gives it."""
        base: dict[str, Any]
        if self.kind == "number":
            base = {"type": "number", "minimum": -MAX_ABS_FEATURE, "maximum": MAX_ABS_FEATURE}
        elif self.kind == "integer":
            base = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
        elif self.kind == "boolean":
            base = {"type": "boolean"}
        else:
            base = {"type": "string"}
        if self.restricted:
            base["enum"] = list(cast("tuple[JSONScalar, ...]", self.categories))
        if self.nullable:
            base["type"] = [base["type"], "null"]
            if "enum" in base:
                base["enum"].append(None)
        return base


@dataclass(frozen=True)
class Output:
    """What a request answers: ``value`` (a regressor's number), ``label`` (a class) or ``probabilities`` (one
    number a class, keyed by the class's name). ``classes`` are the classifier's labels in its order."""

    method: OutputMethod = "predict"
    kind: OutputKind = "value"
    classes: tuple[JSONScalar, ...] = ()

    @property
    def class_names(self) -> tuple[str, ...]:
        """The keys of a probabilities answer: each class label as a string."""
        return tuple(_class_name(label) for label in self.classes)

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "kind": self.kind, "classes": list(self.classes)}

    @classmethod
    def from_json(cls, raw: object) -> Output:
        if not isinstance(raw, dict) or raw.get("method") not in OUTPUT_METHODS or raw.get("kind") not in OUTPUT_KINDS:
            raise ValueError(f"bad output {str(raw)[:80]}")
        classes = raw.get("classes", [])
        if not isinstance(classes, list):
            raise TypeError("output classes must be a list")
        output = cls(method=raw["method"], kind=raw["kind"], classes=tuple(classes))
        if output.kind == "probabilities" and (output.method != "predict_proba" or not output.classes):
            raise ValueError("a probabilities output needs method predict_proba and its classes")
        return output


def _class_name(label: object) -> str:
    if isinstance(label, bool):
        return "true" if label else "false"
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)


# --- request checking -------------------------------------------------------------------------------------------


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= QUOTED_VALUE_CHARS else text[: QUOTED_VALUE_CHARS - 3] + "..."


def _membership(column: Column) -> AfterValidator:
    known = frozenset(cast("tuple[JSONScalar, ...]", column.categories))
    sample = ", ".join(_quote(c) for c in list(column.categories or ())[:QUOTED_CATEGORIES])
    more = f" and {len(known) - QUOTED_CATEGORIES} more" if len(known) > QUOTED_CATEGORIES else ""

    def check(value: Any) -> Any:
        # bool is an int in Python; a boolean never stands for a numeric category here
        if value is not None and (value not in known or isinstance(value, bool) != (column.kind == "boolean")):
            raise PydanticCustomError(
                "unknown_category",
                "Unknown category {value}; the model knows {known}",
                {"value": _quote(value), "known": sample + more},
            )
        return value

    return AfterValidator(check)


def _annotation(column: Column) -> Any:
    base: Any
    if column.kind == "number":
        base = Annotated[float, Strict(), AllowInfNan(False), Field(ge=-MAX_ABS_FEATURE, le=MAX_ABS_FEATURE)]
    elif column.kind == "integer":
        base = Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)]
    elif column.kind == "boolean":
        base = Annotated[bool, Strict()]
    else:
        base = Annotated[str, Strict()]
    if column.nullable:
        base = base | None
    if column.restricted:
        base = Annotated[base, _membership(column)]
    return base


_STRICT = ConfigDict(extra="forbid", strict=True)


class RecordSchema:
    """The request models of a named-column model: ``single`` for ``POST /predict``, ``batch`` for the batch route.

    Field ``c<i>`` of a record is column ``i``, aliased to the column's name, so a column may be called anything.
    """

    def __init__(self, columns: Sequence[Column]) -> None:
        import pandas  # noqa: F401  -- loaded with the model, not on the first request

        self.columns = tuple(columns)
        self.fields = tuple(f"{_FIELD_PREFIX}{i}" for i in range(len(self.columns)))
        definitions: dict[str, Any] = {
            field: (_annotation(column), Field(alias=column.name))
            for field, column in zip(self.fields, self.columns, strict=True)
        }
        self.record: type[BaseModel] = create_model("Record", __config__=_STRICT, **definitions)
        self.single: type[BaseModel] = create_model("PredictRecordRequest", __config__=_STRICT, features=self.record)
        self.batch: type[BaseModel] = create_model(
            "BatchRecordRequest",
            __config__=_STRICT,
            instances=(list[self.record], Field(min_length=1)),  # type: ignore[name-defined]
        )

    def values(self, records: Sequence[BaseModel]) -> list[list[Any]]:
        """Column-major values of checked records: one list a column, in the model's column order."""
        return [[getattr(record, field) for record in records] for field in self.fields]


def records_to_values(columns: Sequence[Column], records: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Column-major values of plain dict records (sample rows, probes); a missing key is None."""
    return [[record.get(column.name) for record in records] for column in columns]


def _array(column: Column, values: list[Any]) -> np.ndarray[Any, Any]:
    has_null = any(v is None for v in values)
    if column.kind == "number" or (column.kind == "integer" and has_null):
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    if column.kind == "integer":
        return np.array(values, dtype=np.int64)
    if column.kind == "boolean" and not has_null:
        return np.array(values, dtype=np.bool_)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def build_frame(columns: Sequence[Column], values: Sequence[list[Any]]) -> pd.DataFrame:
    """The DataFrame the model was fitted on, from column-major checked values (see :meth:`RecordSchema.values`).

    number: float64 (null is NaN); integer: int64, or float64 when a value is null; boolean: bool, or object with
    nulls; category and string: object (pandas infers its string dtype, as it did for the training frame).
    """
    import pandas as pd

    data = {column.name: _array(column, list(vals)) for column, vals in zip(columns, values, strict=True)}
    return pd.DataFrame(data, copy=False)
