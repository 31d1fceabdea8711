"""A stage that fails inside `python -m pipelines.run` (issue 22): stderr ends with one `error:` line and, per failed
stage, its task and the last line of its traceback; exit status 1 (the settings were valid: bad settings exit 2
before any stage runs, tests/pipelines/test_validation.py); no ANSI colour codes when the output is not a terminal."""

import json
import subprocess
import sys

import pytest

from components import failures
from pipelines import run as pipeline_run
from tests.helpers import ENV

ANSI_ESCAPE = "\x1b["
CORPUS_LAYOUT = ("expected layout: DIR/train.txt, DIR/valid.txt, DIR/test.txt (one sentence per line, words separated "
                 "by spaces, as PTB / WikiText-2).")


@pytest.mark.parametrize("pipeline, settings, causes", [
    # ingest of a text corpus that is not there: the settings are valid, only the stage can find out (~13 s)
    ("rnn", ["ingest.dataset=penn", "ingest.data_dir=/nonexistent/penn"],
     [("ingest", f"FileNotFoundError: Corpus directory '/nonexistent/penn' does not exist; {CORPUS_LAYOUT}")]),
    # a batch larger than the ingested split: both searches of the ParallelFor fail (~17 s)
    ("cnn", ["search.batch_size=100000", "search.retry.num_retries=0"],  # no retry: the smoke preset retries once
     [(f"for-loop-1-iteration-{i}/search", "ValueError: batch_size=100000 is larger than the weight-training split "
                                           "(718 examples); lower --batch_size or lower --train_portion.")
      for i in (0, 1)]),
])
def test_a_failed_stage_ends_stderr_with_its_name_and_root_cause_exit_1(tmp_path, pipeline, settings, causes):
    root = tmp_path / "root"
    sets = [arg for setting in settings for arg in ("--set", setting)]
    proc = subprocess.run([sys.executable, "-m", "pipelines.run", "--pipeline", pipeline, "--root", str(root), *sets],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == pipeline_run.STAGE_FAILED_STATUS == 1, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    reported = lines[-len(causes):]
    assert sorted(reported) == [f"stage {task!r} failed: {cause}" for task, cause in causes], lines[-4:]
    header = lines[-len(causes) - 1]
    assert header == (f"error: the {pipeline} pipeline failed (each stage's log is on stdout; finished stages are "
                      f"cached under {root}/.kfp_cache, so the same command after the fix reruns only what failed):")
    assert [line for line in lines if line.startswith("error:")] == [header]
    assert ANSI_ESCAPE not in proc.stderr and ANSI_ESCAPE not in proc.stdout
    failed_task = causes[0][0].split("/")[-1]
    assert f"ERROR - Task '{failed_task}' finished with status FAILURE" in proc.stdout  # kfp.local's log, plain
    assert "have no effect in the current local runner" not in proc.stderr


def test_a_stage_without_a_record_is_named_from_kfps_message(tmp_path):
    """A stage killed by a signal records nothing: the task kfp.local names is reported, without its colours."""
    kfp_message = ("Pipeline \x1b[95m'darts-cnn'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. Inner task "
                   "failed: \x1b[96m'search'\x1b[0m inside \x1b[96m'for-loop-1'\x1b[0m.")
    failure = pipeline_run.StageFailure("cnn", pipeline_run._failed_stages(str(tmp_path), [], kfp_message),
                                        kfp_message)
    assert failure.report_lines() == ["stage 'search' failed: no Python error recorded (see its log on stdout)"]
    assert str(failure) == ("the cnn pipeline failed at stage 'search' (Pipeline 'darts-cnn' finished with status "
                            "FAILURE. Inner task failed: 'search' inside 'for-loop-1'.)")


def test_a_failure_record_names_the_task_directory_and_the_last_traceback_line(tmp_path):
    executor_input = {"outputs": {"outputFile": str(tmp_path / "run-1" / "select" / "executor_output.json")}}
    try:
        raise ValueError("first line\nsecond line")
    except ValueError as e:
        failures.record(e, str(tmp_path / "records"), ["executor_main", "--executor_input", json.dumps(executor_input)])
    [found] = failures.read_records(str(tmp_path / "records"))
    assert found == {"task_dir": str(tmp_path / "run-1" / "select"), "cause": "ValueError: first line second line"}
    assert pipeline_run._failed_stages(str(tmp_path), [found], "") == [("select", found["cause"])]
    assert failures.read_records(str(tmp_path / "none")) == []
