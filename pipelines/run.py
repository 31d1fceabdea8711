"""Runs a DARTS pipeline locally with kfp.local (the default way to run it; no cluster, no Docker).

    python -m pipelines.run --pipeline cnn --preset smoke --root runs/pipeline
    python -m pipelines.run --pipeline rnn --preset paper --root runs/rnn --set ingest.data_dir=/data/penn \
        --set transfer_ingest.data_dir=/data/wikitext-2
    tensorboard --logdir runs/pipeline        # every stage's logs

Each stage runs as a subprocess of this Python (`kfp.local.SubprocessRunner(use_venv=False)`), so the
installed darts_tf / components / pipelines packages are what runs. Finished stages are cached by kfp.local
(keyed by the component, its parameters and its input artifacts; entries in ROOT/.kfp_cache): re-running the
same command reuses them; `--no-cache` runs everything again. kfp.local also retries a failed stage as the preset's
retry policy says (`cluster.STAGE.retry`), and a retried search, evaluate or transfer continues from its last finished
epoch: its run directory is kept under ROOT/.state/<run id>/ until its artifact is published (`components.state`). Every stage's settings are checked before any
stage runs (a bad one is one `error:` line, exit status 2); the resolved settings are written to
ROOT/<pipeline>-config.json before the run.

Every stage's log goes to stdout (kfp.local streams it there), in colour only on a terminal. When a stage fails,
stderr ends with one `error:` line and, for each failed stage, its task and the last line of its traceback (the root
cause, e.g. `ValueError: ...`), and the exit status is 1: the settings were valid, the work failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence

from . import presets

if __package__ and __package__.startswith("darts_tf_pipelines."):  # installed (see setup.py)
    from darts_tf_pipelines.components import failures as _failures
else:  # the source tree
    from components import failures as _failures

CACHE_DIR = ".kfp_cache"
STATE_DIR = ".state"  # the state root of local runs (ROOT/.state/<run id>/<task>: components.state)
STAGE_FAILED_STATUS = 1  # a stage failed (valid settings); bad settings exit 2 before any stage runs
_ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")


class StageFailure(RuntimeError):
    """A pipeline stage failed: `failed` holds (task, root-cause line) for each failed stage, oldest first (the
    task is its path in the pipeline run, e.g. 'for-loop-1-iteration-0/search'; the cause is None when the stage
    recorded none, e.g. when it was killed)."""

    def __init__(self, kind: str, failed: List[tuple], kfp_message: str):
        self.kind, self.failed = kind, failed
        stages = ", ".join(repr(task) for task, _ in failed)
        super().__init__(f"the {kind} pipeline failed at stage {stages} ({_ANSI_CODE.sub('', kfp_message)})")

    def report_lines(self) -> List[str]:
        """What `main` prints on stderr after its `error:` line: one line per failed stage, its cause last."""
        return [f"stage {task!r} failed: {cause or 'no Python error recorded (see its log on stdout)'}"
                for task, cause in self.failed]


def _failed_stages(root: str, records: List[Dict[str, Optional[str]]], kfp_message: str) -> List[tuple]:
    """(task, cause) per failure record, the task relative to its pipeline run directory; without records, the
    tasks kfp.local named (the innermost first in its message)."""
    last: Dict[str, Optional[str]] = {}  # a task retried by its retry policy fails once per attempt: its last cause
    for found in records:
        task_dir = found.get("task_dir") or ""
        relative = os.path.relpath(task_dir, root).split(os.sep)[1:] if task_dir.startswith(root + os.sep) else []
        task = "/".join(relative) or task_dir or "?"
        last.pop(task, None)
        last[task] = found.get("cause")
    failed = list(last.items())
    if not failed:
        named = re.findall(r"'([^']+)'", _ANSI_CODE.sub("", kfp_message.split("Inner task failed:")[-1]))
        failed = [(named[0] if named else "?", None)]
    return failed


@contextlib.contextmanager
def _plain_kfp_logs(enabled: bool) -> Iterator[None]:
    """kfp.local colours task names and statuses with ANSI codes (kfp.local.logging_utils.Color); with `enabled`,
    it logs them plain (for stdout that is a file or a pipe), and restores its colours afterwards."""
    from kfp.local import logging_utils

    names = [n for n in vars(logging_utils.Color) if n.isupper()]
    saved = {n: getattr(logging_utils.Color, n) for n in names}
    if enabled:
        for n in names:
            setattr(logging_utils.Color, n, "")
    try:
        yield
    finally:
        for n, value in saved.items():
            setattr(logging_utils.Color, n, value)


@contextlib.contextmanager
def _stage_failure_records() -> Iterator[str]:
    """A fresh directory that the stages launched inside the block record their failures in
    (components.failures), removed afterwards."""
    STAGE_FAILURE_DIR_ENV = _failures.STAGE_FAILURE_DIR_ENV

    directory, previous = tempfile.mkdtemp(prefix="darts-stage-failures-"), os.environ.get(STAGE_FAILURE_DIR_ENV)
    os.environ[STAGE_FAILURE_DIR_ENV] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(STAGE_FAILURE_DIR_ENV, None)
        else:
            os.environ[STAGE_FAILURE_DIR_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


def run_pipeline(kind: str, root: str, config: Optional[presets.PipelineConfig] = None, cache: bool = True,
                 raise_on_error: bool = True) -> Dict[str, Any]:
    """Runs the `kind` pipeline under `root` with `config` (the smoke preset if None); returns its
    settings and root. Raises `StageFailure` (a RuntimeError) naming the failed stages and their root causes when
    a stage fails."""
    from kfp import local

    from .dag import build_pipeline

    config = presets.validate_stages(config or presets.get_preset(kind, "smoke"))
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    params = presets.stage_params(config)
    # kfp.local retries a failed task as a cluster would (the preset's retry policy): the long stages resume there
    params[presets.STATE_ROOT] = config.cluster.state_root or os.path.join(root, STATE_DIR)
    with open(os.path.join(root, f"{kind}-config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=1, sort_keys=True, default=str)
    # The components name the cluster image; locally they run in this Python, which is the point here.
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*", category=RuntimeWarning)
    # The display names, resources and placement are for the cluster; kfp.local warns, once per task, that it ignores
    # them (it does honour the retry policy).
    warnings.filterwarnings("ignore", message=r".*settings \[.*\] have no effect in the current local runner.*",
                            category=UserWarning)
    warnings.filterwarnings("ignore", message=r".*is not used by the current local runner.*", category=UserWarning)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=raise_on_error,
               enable_caching=cache, cache_root=os.path.join(root, CACHE_DIR))
    with _plain_kfp_logs(not sys.stdout.isatty()), _stage_failure_records() as records:
        try:
            build_pipeline(kind, config, caching=cache)(**params)
        except RuntimeError as e:
            raise StageFailure(kind, _failed_stages(root, _failures.read_records(records), str(e)), str(e)) from e
    return {"pipeline": kind, "root": root, "params": params}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", choices=presets.PIPELINES, default="cnn")
    parser.add_argument("--preset", default="smoke", help="registered preset: smoke (CPU minutes) or paper")
    parser.add_argument("--root", required=True, help="pipeline root: every artifact and TensorBoard log goes here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. search.epochs=3, seeds=[1,2], select.overrides.units=64")
    parser.add_argument("--no-cache", action="store_true", help="run every stage again")
    parser.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        config = presets.validate_stages(presets.override(presets.get_preset(args.pipeline, args.preset),
                                                          args.overrides))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(dataclasses.asdict(config), indent=1, sort_keys=True, default=str))
        return 0
    try:
        run_pipeline(args.pipeline, args.root, config, cache=not args.no_cache)
    except StageFailure as e:
        print(f"error: the {args.pipeline} pipeline failed (each stage's log is on stdout; finished stages are cached "
              f"under {os.path.join(args.root, CACHE_DIR)}, so the same command after the fix reruns only what "
              f"failed):", *e.report_lines(), sep="\n", file=sys.stderr)
        return STAGE_FAILED_STATUS
    print(f"The {args.pipeline} pipeline finished. Artifacts and logs: {os.path.abspath(args.root)} "
          f"(tensorboard --logdir {args.root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
