"""Shared helpers of the absl scripts: dataclass config <-> flags, and error reporting."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import app, flags, logging

from darts_tf.bilevel import ARCH_MODES
from darts_tf.io_utils import atomic_write_text


def dataclass_flags(cls, help_texts: Optional[Dict[str, str]] = None,
                    skip=()) -> List[Tuple[Callable[..., Any], str, Any, str]]:
    """(DEFINE function, name, default, help) of one absl flag per dataclass field not yet defined, with the field's
    default (so the dataclass stays the single source). absl lists a flag under the module that calls DEFINE, so a
    script that wants the flags in its own --help calls `define(name, default, text)` itself."""
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
        text = help_texts.get(field.name, field.name.replace("_", " "))
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
            base, flags.DEFINE_string)
        specs.append((define, field.name, default, text))
    return specs


# help of the search flags that the CNN and RNN search scripts share (the bilevel step's)
BILEVEL_FLAG_HELP = {
    "arch_mode": f"Architecture gradient: {', '.join(ARCH_MODES)}.",
    "xi": "Unrolled step size for the second-order modes (default: the current weight learning rate).",
    "exact_recompute": "second_order_exact only: recompute the train batch's pass for the Hessian term after the "
                       "validation pass (bit-identical; one more forward/backward, a much lower peak memory). "
                       "--noexact_recompute keeps it instead (faster when memory allows).",
    "exact_hvp": "second_order_exact only (CNN): 'reverse' differentiates through the virtual step (reverse over "
                 "reverse); 'forward' takes the Hessian-vector product forward over reverse (tf.autodiff."
                 "ForwardAccumulator). Equal up to round-off; they differ in time and memory (benchmarks/RESULTS.md).",
}


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
