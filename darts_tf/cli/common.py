"""Shared helpers of the absl scripts: dataclass config <-> flags, and error reporting."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import app, flags, logging

from darts_tf.io_utils import atomic_write_text

# The flags defined through these helpers belong to the script that calls them (its --help lists them), not to this
# module (absl attributes a flag to the first module on the stack that has not disclaimed key flags).
flags.disclaim_key_flags()


def _define_enum(choices, name, default, text):
    flags.DEFINE_enum(name, default, list(choices), text)


def dataclass_flags(cls, help_texts: Optional[Dict[str, str]] = None,
                    skip=()) -> List[Tuple[Callable[..., Any], str, Any, str]]:
    """(DEFINE function, name, default, help) of one absl flag per dataclass field not yet defined, with the field's
    default (so the dataclass stays the single source). A field whose metadata has `choices` becomes an enum flag (absl
    refuses any other value when it parses the command line); the help is `help_texts`', else the field metadata's
    `help`. Call `define(name, default, text)`."""
    help_texts = help_texts or {}
    hints = typing.get_type_hints(cls)
    specs = []
    for field in dataclasses.fields(cls):
        if field.name in skip or field.name in flags.FLAGS:
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        kind = hints[field.name]
        origin = typing.get_args(kind)
        base = next((a for a in origin if a is not type(None)), kind) if origin else kind
        text = help_texts.get(field.name) or field.metadata.get("help") or field.name.replace("_", " ")
        if "choices" in field.metadata:
            define = functools.partial(_define_enum, field.metadata["choices"])
        else:
            define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
                base, flags.DEFINE_string)
        specs.append((define, field.name, default, text))
    return specs


def define_flags_from_dataclass(cls, help_texts: Optional[Dict[str, str]] = None, skip=()) -> None:
    """One absl flag per dataclass field (see `dataclass_flags`)."""
    for define, name, default, text in dataclass_flags(cls, help_texts, skip):
        define(name, default, text)


def given(name: str) -> Any:
    """The flag's value if it was given on the command line, else None."""
    return flags.FLAGS[name].value if flags.FLAGS[name].present else None


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


def reject_positional_args(argv) -> None:
    """absl usage error for positional arguments (the scripts that take none)."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")


def run_main_without_args(argv, body: Callable[[], Any]) -> None:
    """The absl main of a script that takes no positional arguments: `run_main(body)`."""
    reject_positional_args(argv)
    run_main(body)


def start(main: Callable[[Any], Any], define_flags: Optional[Callable[[], None]] = None) -> None:
    """Console-script entry point: defines the script's flags (where it defines them on demand) and runs `main`."""
    if define_flags is not None:
        define_flags()
    app.run(main)


def write_result_json(path: str, result: Dict[str, Any]) -> None:
    """The --output_json file of the evaluation scripts."""
    atomic_write_text(os.path.abspath(path), json.dumps(result, indent=1) + "\n")


def report_search(result: Dict[str, Any]) -> None:
    """What the search scripts print: the genotype to the log, the path of its file to stdout."""
    logging.info("genotype: %s", result["genotype"])
    print(result["genotype_path"])
