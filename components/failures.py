"""Stage failure records: how a pipeline runner learns why a stage failed, without parsing its log.

A stage process that ends with an uncaught exception writes one small JSON record, its task directory and the root
cause (the last line of its traceback, e.g. ``ValueError: ...``), into the directory named by the environment
variable ``STAGE_FAILURE_DIR_ENV``; ``pipelines.run`` sets it for the stages it launches and reads the records when
kfp.local reports a failed task (kfp.local streams every stage's log to stdout and reports only the task's name).
Without the variable nothing is recorded.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Dict, List, Optional

STAGE_FAILURE_DIR_ENV = "DARTS_STAGE_FAILURE_DIR"


def root_cause_line(exc: BaseException) -> str:
    """The last line Python prints for the uncaught `exc` (``Type: message``), on one line."""
    return " ".join("".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines())


def _task_dir(argv: List[str]) -> Optional[str]:
    """The task directory of a KFP v2 executor command line: where its --executor_input's outputFile lies."""
    try:
        executor_input = json.loads(argv[argv.index("--executor_input") + 1])
        return os.path.dirname(executor_input["outputs"]["outputFile"])
    except (ValueError, IndexError, KeyError, TypeError):
        return None


def record(exc: BaseException, directory: str, argv: Optional[List[str]] = None) -> str:
    """Writes the failure record of this process (`exc`, the task of `argv`) into `directory`; returns its path."""
    from darts_tf.io_utils import atomic_write_text

    path = os.path.join(directory, f"{os.getpid()}.json")
    atomic_write_text(path, json.dumps({"task_dir": _task_dir(list(argv if argv is not None else sys.argv)),
                                        "cause": root_cause_line(exc)}) + "\n")
    return path


def read_records(directory: str) -> List[Dict[str, Optional[str]]]:
    """The failure records in `directory`, oldest first ([] when there is none)."""
    if not os.path.isdir(directory):
        return []
    paths = sorted((os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".json")),
                   key=os.path.getmtime)
    found = []
    for path in paths:
        with open(path) as f:
            found.append(json.load(f))
    return found


def install_from_environment() -> None:
    """Records this process's uncaught exception (then prints it as usual) when ``STAGE_FAILURE_DIR_ENV`` is set."""
    directory = os.environ.get(STAGE_FAILURE_DIR_ENV)
    if not directory or getattr(sys.excepthook, "records_stage_failure", False):
        return
    previous = sys.excepthook

    def hook(kind, exc, tb):
        try:
            record(exc, directory)
        except Exception as e:  # the record is a convenience: never hide the stage's own error
            print(f"(could not record the stage failure in {directory}: {e})", file=sys.stderr)
        previous(kind, exc, tb)

    hook.records_stage_failure = True
    sys.excepthook = hook
