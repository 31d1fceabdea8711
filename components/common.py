"""Helpers shared by the stage executors: typed configs from plain dicts (what a pipeline passes)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Optional, Type, TypeVar

T = TypeVar("T")


def config_from_dict(cls: Type[T], values: Optional[Dict[str, Any]], stage: str, **fixed: Any) -> T:
    """`cls(**values, **fixed)`, refusing keys `cls` does not have (the error lists the known ones).

    `fixed` are the fields the stage sets itself (output_dir, seed, ...); they win over `values`.
    """
    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"[stage '{stage}'] unknown {cls.__name__} setting(s) {', '.join(unknown)}. "
                         f"Known: {', '.join(names)}")
    values.update(fixed)
    return cls(**coerce_numbers(cls, values))


def coerce_numbers(cls: type, values: Dict[str, Any]) -> Dict[str, Any]:
    """Integral floats back to int for `int` fields of dataclass `cls`.

    KFP passes dict parameters as protobuf Structs, whose numbers are all doubles: `{"epochs": 1}` arrives
    as `{"epochs": 1.0}`.
    """
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for name, value in values.items():
        hint = hints.get(name)
        if typing.get_origin(hint) is typing.Union:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = args[0] if len(args) == 1 else hint
        if hint is int and isinstance(value, float) and value.is_integer():
            out[name] = int(value)
    return out


def log_scalars(log_metric, metrics: Dict[str, Any], prefix: str = "") -> None:
    """Reports the numeric top-level entries of `metrics` through `log_metric(name, value)` (e.g. a KFP
    `Output[Metrics].log_metric`, which the Kubeflow UI shows); does nothing when `log_metric` is None."""
    if log_metric is None:
        return
    for name, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            log_metric(prefix + name, float(value))
