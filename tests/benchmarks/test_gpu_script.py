"""benchmarks/gpu.sh: its lanes cover the grid, it skips cleanly without a GPU, names what is wrong with its
arguments, its install and a CPU-only TensorFlow, records every configuration when its budget runs out, and (slow)
runs the whole path at tiny sizes on this CPU in under two minutes."""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from benchmarks import child, configs, records

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu.sh"


def _fake_nvidia_smi(tmp_path, listing: str, rc: int = 0) -> str:
    """A PATH whose nvidia-smi prints `listing` (and exits `rc`) in front of this one's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\necho '{listing}'\nexit {rc}\n")
    fake.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def _run(*args, env=None, timeout=120):
    env = {**os.environ, "OUT": "", **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env)


def _records(results):
    schema = records.load_schema()
    return [records.validate_record(json.loads(line), schema)
            for line in (results / "gpu.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("tiny, grid", [(False, configs.gpu_grid), (True, configs.gpu_tiny_grid)])
def test_every_configuration_runs_in_exactly_one_lane(tiny, grid):
    proc = _run("--list", *(["--tiny"] if tiny else []))
    assert proc.returncode == 0, proc.stderr
    lanes = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [name for _, name in lanes] == [c.name for c in grid()]
    by_lane = {}
    for lane, name in lanes:
        by_lane.setdefault(int(lane), []).append(name)
    # the longest first call has a lane of its own; the paper's three modes are all there, XLA and mixed precision too
    assert by_lane[1] == [c.name for c in grid() if c.arch_mode == "second_order_exact" and not c.jit_compile
                          and not c.mixed_precision]
    assert set(by_lane) <= {1, 2, 3, 4, 5}
    names = "\n".join(name for _, name in lanes)
    for part in ("second_order_exact", "second_order_fd", "first_order", "cnn_eval", "/xla/", "/noxla/", "/mp16/"):
        assert part in names


def test_the_gpu_grid_is_the_papers_search_at_batch_64_and_the_evaluation_network():
    names = {c.name for c in configs.gpu_grid()}
    for mode in configs.ARCH_MODES:
        for jit in ("xla", "noxla"):
            for precision in ("fp32", "mp16"):
                assert f"cnn_search/{mode}/L8C16b64/{jit}/{precision}/cached" in names
    assert "cnn_eval/L20C36b96/noxla/fp32/cached" in names and "cnn_eval/L20C36b96/xla/mp16/cached" in names
    assert names <= {c.name for c in configs.full_grid()}  # the same configurations as the full grid, more steps


def test_without_a_gpu_it_says_so_installs_nothing_and_exits_0(tmp_path):
    path = _fake_nvidia_smi(tmp_path, "No devices were found", rc=6)
    proc = _run("--results", str(tmp_path / "results"), "--venv", str(tmp_path / "venv"), env={"PATH": path})
    assert proc.returncode == 0, proc.stderr
    assert "no GPU is visible" in proc.stdout and "--tiny" in proc.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "venv").exists()


@pytest.mark.parametrize("args, message", [
    (["--budget=soon"], r"--budget must be a whole number of seconds, e.g. --budget=480. Received: budget=soon"),
    (["--lanes", "0"], r"--lanes must be a whole number >= 1, e.g. --lanes=5. Received: lanes=0"),
    (["--wheels", "/nonexistent/wheels"], r"--wheels must be a folder of wheel files. Received: wheels=/nonexistent"),
    (["--fast"], r"unknown argument '--fast' \(see --help\)"),
])
def test_bad_arguments_name_the_fix(args, message):
    import re

    proc = _run(*args)
    assert proc.returncode == 2
    assert re.search(message, proc.stderr), proc.stderr


@pytest.mark.slow
def test_a_failed_install_exits_3_and_says_what_to_do(tmp_path):
    """With a GPU listed but no wheel to install from, the install fails with the ways out (no PyPI: --wheels or
    --python), and nothing is measured."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    path = _fake_nvidia_smi(tmp_path, "GPU 0: Fake GPU (UUID: GPU-0)")
    proc = _run("--results", str(tmp_path / "results"), "--venv", str(tmp_path / "venv"), "--wheels", str(wheels),
                "--budget", "60", env={"PATH": path})
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "tensorflow[and-cuda]==2.21.0" in proc.stdout + proc.stderr  # the version requirements.txt pins
    assert "give a folder of wheels with --wheels DIR, or a Python that has them with --python PY" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_cpu_only_tensorflow_under_a_listed_gpu_exits_4(tmp_path):
    path = _fake_nvidia_smi(tmp_path, "GPU 0: Fake GPU (UUID: GPU-0)")
    proc = _run("--python", sys.executable, "--results", str(tmp_path / "results"),
                env={"PATH": path, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 4, (proc.stdout, proc.stderr)
    assert "sees no GPU although nvidia-smi lists one" in proc.stderr


def test_a_spent_budget_still_gives_every_configuration_a_schema_checked_record(tmp_path):
    """Every configuration gets its line even when the budget is gone; the results go to $OUT when it is set."""
    results = tmp_path / "out"
    results.mkdir()
    proc = _run("--tiny", "--budget=0", env={"OUT": str(results), "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in results.iterdir()) == ["gpu.jsonl", "gpu.log", "gpu.md", "gpu_env.txt"]
    recs = _records(results)
    assert [r["name"] for r in recs] == [c.name for c in configs.gpu_tiny_grid()]
    for r in recs:
        assert r["status"] == "skipped" and r["reason"].startswith("gpu.sh's budget of 0 s was spent"), r
    summary = (results / "gpu.md").read_text()
    assert "time to first step s" in summary and summary.count("skipped: gpu.sh's budget") == 2 * len(recs)
    assert (results / "gpu_env.txt").read_text().startswith("date: ")


@pytest.mark.slow
def test_tiny_run_measures_the_same_path_on_cpu_in_under_two_minutes(tmp_path):
    results = tmp_path / "results"
    start = time.monotonic()
    proc = _run("--tiny", "--results", str(results), env={"CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    wall = time.monotonic() - start
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert wall < 120, f"gpu.sh --tiny took {wall:.0f} s"
    recs = {r["name"]: r for r in _records(results)}
    assert list(recs) == [c.name for c in configs.gpu_tiny_grid()]
    # on an idle machine every one is measured (mixed precision skipped); on a loaded one, what did not fit in the
    # budget says so, and the budget still bounds the run
    budget_reasons = ("timed out after", "gpu.sh's budget of 100 s was spent", child.MIXED_PRECISION_ON_CPU)
    for r in recs.values():
        assert r["status"] == "ok" or r["reason"].startswith(budget_reasons), r
    measured = [r for r in recs.values() if r["status"] == "ok"]
    assert measured, "no configuration was measured in gpu.sh --tiny's 100 s"
    for r in measured:
        assert r["build_s"] > 0 and r["trace_compile_s"] > 0 and r["step_s"]["median"] > 0 and r["device"] == "cpu"
    assert recs["cnn_search/first_order/L3C4b8/noxla/mp16/cached"]["status"] != "ok"  # mixed precision needs a GPU
    summary = (results / "gpu.md").read_text()
    assert summary.startswith("Command: `bash benchmarks/gpu.sh --tiny --budget=100 --lanes=2`")
    assert f"| {measured[0]['name']} | ok |" in summary
