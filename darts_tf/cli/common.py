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


def fit_verbose() -> int:
    """Keras fit's verbosity: --verbose where the script has it and it was given, else a progress bar on a terminal
    and one line per epoch when stdout or stderr is not one (a log file gets no carriage returns or escape codes)."""
    if "verbose" in flags.FLAGS and flags.FLAGS["verbose"].present:
        return flags.FLAGS.verbose
    return 1 if sys.stdout.isatty() and sys.stderr.isatty() else 2


VERBOSE_HELP = ("fit progress: 0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a terminal, 2 when the "
                "output goes to a file or pipe).")


def config_from_flags(cls, **overrides):
    """`cls` with the flags given on the command line; every other field keeps the dataclass default (not the flag's
    default: where several scripts' modules share a process, a flag may have been defined by another config)."""
    values = {f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(cls)
              if f.name in flags.FLAGS and flags.FLAGS[f.name].present}
    values.update(overrides)
    return cls(**values)


# What a script refuses as bad input (a wrong flag value, a missing or damaged file, a refused genotype): one
# `error:` line on stderr and exit status 2. ValueError covers the library's own errors (GenotypeError,
# OutputLocationError, CheckpointError, DamagedFileError, NonFiniteError, ...).
BAD_INPUT = (ValueError, FileNotFoundError, app.UsageError)
BAD_INPUT_STATUS = 2


def fail(message: str) -> None:
    """Prints the one line that reports a refused input and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(BAD_INPUT_STATUS)


def run_main(body: Callable[[], Any], errors: Tuple[type, ...] = ()) -> None:
    """Runs a script body; bad input (`BAD_INPUT`, plus `errors`) prints one `error:` line and exits 2."""
    try:
        body()
    except BAD_INPUT + tuple(errors) as e:
        fail(str(e).replace("\n", " "))


# absl's help flags: each prints its text and exits with status 1, as if the request had failed.
_HELP_FLAGS = ("help", "h", "?", "helpshort", "helpfull", "helpxml")


def _asks_for_help(args: List[str]) -> bool:
    for arg in args:
        if arg == "--":
            return False
        if arg.startswith("-") and arg.lstrip("-").split("=", 1)[0] in _HELP_FLAGS:
            return True
    return False


def parse_flags(argv: List[str]) -> List[str]:
    """The `flags_parser` of `app.run`: absl's, except that an unknown flag or a bad value is one `error:` line and
    exit status 2 (absl prints two lines and exits 1), and that asking for help exits 0 (absl exits 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = " ".join(str(e).split())
        fail(f"Flags parsing error: {message} (--help lists this script's flags).")
    except SystemExit as e:
        if e.code == 1 and _asks_for_help(argv[1:]):
            sys.exit(0)
        raise


def reject_positional_args(argv) -> None:
    """absl usage error for positional arguments (the scripts that take none)."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")


def run_main_without_args(argv, body: Callable[[], Any]) -> None:
    """The absl main of a script that takes no positional arguments: `run_main(body)`."""
    reject_positional_args(argv)
    run_main(body)


def adopt_script_flags(script_module: str) -> None:
    """Makes the flags of the darts_tf.cli modules key flags of the program being run, and the script module's
    docstring its usage text: absl's --help lists the key flags of sys.argv[0] under __main__'s docstring, and a
    console script's __main__ is the installer's wrapper, which has neither."""
    cli_dir = os.path.dirname(os.path.abspath(__file__))
    for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
        if module.startswith(__package__ + ".") or os.path.dirname(os.path.abspath(module)) == cli_dir:
            for flag in module_flags:
                flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    main_module = sys.modules["__main__"]
    if not main_module.__doc__ and script_module in sys.modules:
        main_module.__doc__ = sys.modules[script_module].__doc__


def start(main: Callable[[Any], Any], define_flags: Optional[Callable[[], None]] = None) -> None:
    """Console-script entry point: defines the script's flags (where it defines them on demand), makes --help list
    them, and runs `main`; bad input anywhere (flags, arguments, the body) is one `error:` line and exit status 2."""
    if define_flags is not None:
        define_flags()
    adopt_script_flags(main.__module__)
    app.run(lambda argv: run_main(lambda: main(argv)), flags_parser=parse_flags)


def write_result_json(path: str, result: Dict[str, Any]) -> None:
    """The --output_json file of the evaluation scripts."""
    from darts_tf.io_utils import absolute  # a remote path (gs://) stays as it is

    atomic_write_text(absolute(path), json.dumps(result, indent=1) + "\n")


def report_search(result: Dict[str, Any]) -> None:
    """What the search scripts print: the genotype to the log, the path of its file to stdout."""
    logging.info("genotype: %s", result["genotype"])
    print(result["genotype_path"])
