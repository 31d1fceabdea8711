"""Shared helpers of the absl scripts: dataclass config <-> flags, and error reporting."""

from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any, Callable, Dict, Optional

from absl import flags, logging


def define_flags_from_dataclass(cls, help_texts: Optional[Dict[str, str]] = None, skip=()) -> None:
    """One absl flag per dataclass field, with the field's default (so the dataclass stays the single source)."""
    help_texts = help_texts or {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or field.name in flags.FLAGS:
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        kind = hints[field.name]
        origin = typing.get_args(kind)
        base = next((a for a in origin if a is not type(None)), kind) if origin else kind
        text = help_texts.get(field.name, field.name.replace("_", " "))
        if base is bool:
            flags.DEFINE_bool(field.name, default, text)
        elif base is int:
            flags.DEFINE_integer(field.name, default, text)
        elif base is float:
            flags.DEFINE_float(field.name, default, text)
        else:
            flags.DEFINE_string(field.name, default, text)


def config_from_flags(cls, **overrides):
    values = {f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(cls) if f.name in flags.FLAGS}
    values.update(overrides)
    return cls(**values)


def run_main(body: Callable[[], Any]) -> None:
    """Runs a script body; a ValueError/FileNotFoundError (bad input) prints one clear line and exits 2."""
    try:
        body()
    except (ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
