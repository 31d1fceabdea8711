"""A run killed in the middle of a write leaves the writer's temporary behind (never read, but a model-sized file per
kill); the next run accepted in the directory removes them (darts_tf.checkpoint.check_run_config), a refused one
touches nothing. Found by the fault-injection test (tests/test_kill_resume.py): a kill while darts-train saved
model.keras left `.tmp-<pid>-model.keras` behind for good."""

import json

import pytest

from darts_tf import checkpoint
from darts_tf.io_utils import remove_temporaries

STALE = [".tmp-6690-model.keras", ".tmp-k2j3h4g5alphas.npz", "genotypes/.tmp-a1b2c3d4epoch_002.json",
         ".tmp-saved_model-x1y2z3/saved_model.pb", ".old-saved_model-q9w8e7/saved_model.pb"]
REAL = ["model.keras", "alphas.npz", "genotypes/epoch_001.json", "saved_model/saved_model.pb", "training_state.npz"]


def _run_dir(root):
    for name in STALE + REAL:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    (root / "run_config.json").write_text(json.dumps({"seed": 1}))
    return root


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_resumed_run_removes_the_temporaries_of_the_killed_one_and_keeps_every_real_file(tmp_path):
    root = _run_dir(tmp_path / "run")
    checkpoint.check_run_config(str(root), {"seed": 1}, resume=True)
    assert _listing(root) == sorted(REAL + ["run_config.json"])
    assert remove_temporaries(str(root)) == []


def test_a_refused_resume_removes_nothing(tmp_path):
    root = _run_dir(tmp_path / "run")
    before = _listing(root)
    with pytest.raises(ValueError, match=r"holds another run's checkpoint with different flags \(seed: checkpoint has "
                                         r"1, now 2\)"):
        checkpoint.check_run_config(str(root), {"seed": 2}, resume=True)
    assert _listing(root) == before
