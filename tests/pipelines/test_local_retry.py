"""KFP's retry, run by kfp.local: the `search` component killed (os._exit, as SIGKILL would end it) right after its
first epoch's checkpoint is retried by the task's retry policy, resumes at epoch 2 from the state directory of the
pipeline run, and ends with the alphas of an uninterrupted search (--deterministic); its KFP metadata says it resumed.
About 1.5 minutes on 2 CPU cores."""

import glob
import json
import os
import sys
import textwrap

import numpy as np
import pytest

from components import artifacts, ingest, search
from pipelines import presets
from pipelines.dag import configure_task
from pipelines.kfp_components import make_components

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*custom or non-Python base image:RuntimeWarning")]

SEARCH = dict(epochs=2, batch_size=32, layers=3, init_channels=4, nodes=2, deterministic=True,
              primitives="none,max_pool_3x3,skip_connect,sep_conv_3x3", arch_learning_rate=3e-3)
KILL_AFTER_EPOCH = 1

# Imported by every Python the test's stages start (PYTHONPATH): kills the stage process once, after the checkpoint
# of epoch DARTS_TEST_KILL_AFTER_EPOCH, leaving a marker so that the retry runs through.
SITECUSTOMIZE = textwrap.dedent('''
    import os
    if os.environ.get("DARTS_TEST_KILL_AFTER_EPOCH"):
        from darts_tf import checkpoint

        _original = checkpoint.EpochCheckpoint.on_epoch_end

        def on_epoch_end(self, epoch, logs=None):
            _original(self, epoch, logs)
            marker = os.environ["DARTS_TEST_KILL_MARKER"]
            if epoch + 1 == int(os.environ["DARTS_TEST_KILL_AFTER_EPOCH"]) and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(137)

        checkpoint.EpochCheckpoint.on_epoch_end = on_epoch_end
''')


def test_a_killed_search_is_retried_by_kfp_and_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    from kfp import dsl, local

    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugin), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("DARTS_TEST_KILL_AFTER_EPOCH", str(KILL_AFTER_EPOCH))
    monkeypatch.setenv("DARTS_TEST_KILL_MARKER", str(marker))

    c = make_components()
    retry = presets.StageRuntime(retry=presets.Retry(num_retries=1, backoff_duration="0s"))

    @dsl.pipeline(name="search-retry")
    def search_only(state_root: str):
        data = c.ingest(config={"kind": "images", "dataset": "digits"})
        found = c.search(dataset=data.outputs["dataset"], kind="cnn", seed=3, config=SEARCH, state_root=state_root,
                         run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, task=dsl.PIPELINE_TASK_NAME_PLACEHOLDER)
        configure_task(found, retry)

    root, state_root = str(tmp_path / "root"), str(tmp_path / "state")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, enable_caching=False)
    search_only(state_root=state_root)

    assert marker.exists(), "the first attempt was not killed"
    (run_dir,) = glob.glob(os.path.join(root, "search-retry-*"))
    retried = artifacts.read_search_run(os.path.join(run_dir, "search", "search_run"), "test")
    assert retried.lineage["resumed_after_epoch"] == KILL_AFTER_EPOCH and retried.lineage["epochs_done"] == 2
    assert [h["epoch"] for h in retried.metrics["history"]] == [1, 2]
    with open(os.path.join(run_dir, "search", "executor_output.json")) as f:
        recorded = json.load(f)["artifacts"]["search_run"]["artifacts"][0]["metadata"]
    assert recorded["darts_type"] == "SearchRun" and recorded["resumed_after_epoch"] == KILL_AFTER_EPOCH
    assert recorded["seed"] == 3 and len(recorded["alphas_sha256"]) == 64
    assert os.listdir(state_root) == []  # the state is removed once the artifact is published

    # the same search uninterrupted, in this process
    for name in ("DARTS_TEST_KILL_AFTER_EPOCH", "PYTHONPATH"):
        monkeypatch.delenv(name, raising=False)
    data = ingest.run(str(tmp_path / "reference" / "dataset"), {"kind": "images", "dataset": "digits"})
    reference = search.run(data.path, str(tmp_path / "reference" / "search_run"), "cnn", seed=3, config=SEARCH,
                           verbose=0)
    got, want = retried.alphas(), reference.alphas()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)
    assert sys.executable  # the stages ran in this Python (SubprocessRunner(use_venv=False))
