"""The Spark schema of the telemetry event, derived from the pydantic model.

``common.contract.TelemetryEvent`` is the one definition of the event. This module walks its
fields and annotations and builds the matching ``StructType`` (and the lists of required
fields and default values the parser needs), so the Spark job cannot drift from the contract:
a new field in the model is a new column here, and a type this module cannot map is an error.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types as at
from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pyspark.sql import types as T

from common.contract import TelemetryEvent, printable_id

_SCALARS: tuple[tuple[type, T.DataType], ...] = (
    (bool, T.BooleanType()),  # before int: bool is an int subclass
    (int, T.LongType()),
    (float, T.DoubleType()),
    (str, T.StringType()),
    (dt.datetime, T.TimestampType()),  # before date: datetime is a date subclass
    (dt.date, T.DateType()),
)


def spark_type(annotation: Any, where: str = "") -> T.DataType:
    """The Spark type of one pydantic field annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return spark_type(args[0], where)
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        if len(present) == 1:
            return spark_type(present[0], where)
        raise TypeError(f"{where}: unions of several types have no Spark type: {annotation!r}")
    if origin is Literal:
        kinds = {type(a) for a in args}
        if len(kinds) == 1:
            return spark_type(kinds.pop(), where)
        raise TypeError(f"{where}: a Literal mixing types has no Spark type: {annotation!r}")
    if origin in (list, tuple, set, frozenset):
        items = [a for a in args if a is not Ellipsis]
        if len(set(items)) != 1:
            raise TypeError(f"{where}: only homogeneous sequences map to arrays: {annotation!r}")
        return T.ArrayType(spark_type(items[0], where), containsNull=True)
    if origin is dict and args and args[0] is str:
        return T.MapType(T.StringType(), spark_type(args[1], where), valueContainsNull=True)
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return spark_schema(annotation)
        for py, spark in _SCALARS:
            if issubclass(annotation, py):
                return spark
        # pydantic's AwareDatetime / NaiveDatetime are marker classes for datetimes
        if annotation.__name__.endswith("Datetime"):
            return T.TimestampType()
    raise TypeError(f"{where}: no Spark type for {annotation!r}")


def spark_schema(model: type[BaseModel] = TelemetryEvent) -> T.StructType:
    """The StructType of ``model``, fields in declaration order, all nullable.

    Every field is nullable because JSON may omit any of them (``from_json`` yields null);
    which fields the contract requires is :func:`required_fields`' business.
    """
    return T.StructType([
        T.StructField(name, spark_type(field.annotation, f"{model.__name__}.{name}"),
                      nullable=True)
        for name, field in model.model_fields.items()
    ])


def required_fields(model: type[BaseModel] = TelemetryEvent, prefix: str = "") -> list[str]:
    """Dotted paths of the fields without a default, nested models included."""
    paths: list[str] = []
    for name, field in model.model_fields.items():
        if not field.is_required():
            continue
        paths.append(prefix + name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths.extend(required_fields(ann, f"{prefix}{name}."))
    return paths


def leaf_fields(schema: T.StructType, prefix: str = "") -> list[str]:
    """Dotted paths of every non-struct field of ``schema``."""
    paths: list[str] = []
    for f in schema.fields:
        if isinstance(f.dataType, T.StructType):
            paths.extend(leaf_fields(f.dataType, f"{prefix}{f.name}."))
        else:
            paths.append(prefix + f.name)
    return paths


def default_values(model: type[BaseModel] = TelemetryEvent) -> dict[str, Any]:
    """Top-level fields that have a default, with the value pydantic would fill in."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.is_required():
            continue
        if field.default_factory is not None:
            out[name] = field.default_factory()  # type: ignore[call-arg]
        elif field.default is not PydanticUndefined:
            out[name] = field.default
    return out


def null_refused(model: type[BaseModel] = TelemetryEvent) -> list[str]:
    """Top-level fields that may be omitted (they have a default) but not sent as ``null``:
    their type does not include None."""
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        args = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union,
                                                                   types.UnionType) else ()
        if not field.is_required() and ann is not None and type(None) not in args:
            out.append(name)
    return out


def allowed_values(model: type[BaseModel] = TelemetryEvent) -> dict[str, tuple[Any, ...]]:
    """Top-level fields typed as a Literal, with the values the contract allows."""
    out: dict[str, tuple[Any, ...]] = {}
    for name, field in model.model_fields.items():
        if typing.get_origin(field.annotation) is Literal:
            out[name] = typing.get_args(field.annotation)
    return out


@dataclass(frozen=True)
class Bounds:
    """The contract's limits on one field (or on each item of a list field): numbers within
    ``ge``/``gt``/``le``/``lt``, lengths within ``min_len``/``max_len``, printable text."""

    path: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_len: int | None = None
    max_len: int | None = None
    printable: bool = False
    items: Bounds | None = None


_LIMITS: dict[type, tuple[str, str]] = {
    at.Ge: ("ge", "ge"), at.Gt: ("gt", "gt"), at.Le: ("le", "le"), at.Lt: ("lt", "lt"),
    at.MinLen: ("min_len", "min_length"), at.MaxLen: ("max_len", "max_length"),
}
"""annotated_types constraint -> (Bounds field, the constraint's attribute)."""


def _limits(metadata: list[Any]) -> dict[str, Any]:
    """The Bounds fields that pydantic field metadata sets."""
    kw: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, FieldInfo):  # Annotated[..., Field(max_length=...)] of a list item
            kw.update(_limits(m.metadata))
        elif type(m) in _LIMITS:
            key, attr = _LIMITS[type(m)]
            kw[key] = getattr(m, attr)
        elif isinstance(m, AfterValidator) and m.func is printable_id:
            kw["printable"] = True
    return kw


def _bounds(path: str, metadata: list[Any], items: Bounds | None = None) -> Bounds | None:
    kw = _limits(metadata)
    return Bounds(path, items=items, **kw) if kw or items is not None else None


def field_bounds(model: type[BaseModel] = TelemetryEvent, prefix: str = "") -> list[Bounds]:
    """Every field's limits in the contract (``Field(ge=..., max_length=...)``, printable
    ids), nested models and list items included: the Spark job refuses what pydantic would."""
    out: list[Bounds] = []
    for name, field in model.model_fields.items():
        ann, path = field.annotation, prefix + name
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(field_bounds(ann, f"{path}."))
            continue
        items = None
        if typing.get_origin(ann) is list:
            (item,) = typing.get_args(ann)
            if typing.get_origin(item) is typing.Annotated:
                items = _bounds(path, list(typing.get_args(item)[1:]))
        b = _bounds(path, field.metadata, items)
        if b is not None:
            out.append(b)
    return out


EVENT_SCHEMA = spark_schema(TelemetryEvent)
"""The telemetry event as Spark sees it (built from the model at import; no Spark needed)."""
