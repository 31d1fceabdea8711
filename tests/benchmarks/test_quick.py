"""benchmarks/ (run.py and its modules): the schema check, the grids, and (slow) the quick benchmark end to end in
child processes."""

import ctypes.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from benchmarks import child, configs, parent, records

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "run.py"
# one configuration per model family, both search data paths, and mixed precision (skipped on CPU)
QUICK_SUBSET = r"cnn_search/(first_order|second_order_fd)/.*noxla/(fp32|mp16)/cached|cnn_eval|rnn_search/second_order_exact"


def _ok_record(**overrides):
    cfg = configs.BenchConfig("cnn_search", 16, "first_order", layers=5, channels=8, nodes=4, image_size=32,
                              num_classes=10)
    record = records.base_record(cfg, "ok", None, [0.5, 0.5, 0.5])
    record.update(build_s=1.0, trace_compile_s=2.0, examples_per_s=10.0, peak_host_mem_mb=100.0,
                  step_s={"median": 1.0, "min": 0.9, "max": 1.1, "mean": 1.0, "all": [0.9, 1.0, 1.1]})
    record.update(overrides)
    return record


def test_schema_accepts_a_record_and_names_what_is_wrong():
    schema = records.load_schema()
    assert records.validate_record(_ok_record(), schema)
    with pytest.raises(ValueError, match=r"\$\.status: 'fine' is not one of"):
        records.validate_record(_ok_record(status="fine"), schema)
    with pytest.raises(ValueError, match=r"\$: 'step_s' is a required property"):
        bad = _ok_record()
        del bad["step_s"]
        records.validate_record(bad, schema)
    with pytest.raises(ValueError, match=r"\$: Additional properties are not allowed \('extra' was unexpected\)"):
        records.validate_record(_ok_record(extra=1), schema)
    with pytest.raises(ValueError, match=r"\$\.step_s\.median: -1 is less than the minimum of 0"):
        records.validate_record(_ok_record(step_s={"median": -1, "min": 0, "max": 0, "mean": 0, "all": []}), schema)


def test_grids_have_unique_names_and_cover_the_brief():
    full = configs.select(configs.full_grid(), None)
    names = {c.name for c in full}
    for mode in configs.ARCH_MODES:
        for jit in ("xla", "noxla"):
            assert f"cnn_search/{mode}/L8C16b64/{jit}/fp32/cached" in names
            assert f"cnn_search/{mode}/L8C16b16/{jit}/mp16/cached" in names
            assert f"rnn_search/{mode}/U300V10000b256/{jit}/fp32/cached" in names
    assert "cnn_eval/L20C36b96/xla/mp16/cached" in names
    assert {c.name for c in configs.cpu_grid()} <= names
    assert configs.select(configs.quick_grid(), QUICK_SUBSET)
    with pytest.raises(ValueError, match="arch_mode"):
        configs.BenchConfig("cnn_search", 16)


def test_exact_to_fd_ratio_pairs_configurations():
    exact = _ok_record(name="cnn_search/second_order_exact/L5C8b16/noxla/fp32/cached", arch_mode="second_order_exact",
                       step_s={"median": 3.0, "min": 3, "max": 3, "mean": 3, "all": [3]})
    fd = _ok_record(name="cnn_search/second_order_fd/L5C8b16/noxla/fp32/cached", arch_mode="second_order_fd",
                    step_s={"median": 2.0, "min": 2, "max": 2, "mean": 2, "all": [2]})
    assert records.exact_to_fd_ratios([exact, fd]) == {"cnn_search/L5C8b16/noxla/fp32/cached": 1.5}


def test_results_md_is_the_summary_of_its_runs_and_has_every_configuration_of_the_grid():
    """RESULTS.md's merged table is what `run.py --summarize` makes of the runs it lists (each line schema-checked),
    and those runs hold a record for every configuration of the full grid: measured, or failed with its reason on
    this machine; only mixed precision may be skipped (it needs a GPU)."""
    text = (REPO / "benchmarks" / "RESULTS.md").read_text()
    paths = re.findall(r"--summarize (benchmarks/results/\S+\.jsonl)", text)
    assert paths, "RESULTS.md lists no --summarize runs"
    recs, table = records.summarize([str(REPO / p) for p in paths])
    missing_rows = [row for row in table.splitlines()
                    if row.strip() and "| skipped: mixed precision" not in row and row not in text]
    assert not missing_rows, "RESULTS.md differs from `run.py --summarize` of its runs; regenerate it:\n" + "\n".join(missing_rows)
    by_name = {r["name"]: r for r in recs}
    for cfg in configs.select(configs.full_grid(), None):
        record = by_name.get(cfg.name)
        assert record is not None, f"{cfg.name}: no record in the runs RESULTS.md lists"
        allowed = ("ok", "error", "skipped") if cfg.mixed_precision else ("ok", "error")
        assert record["status"] in allowed, (cfg.name, record["status"], record["reason"])
        if record["status"] == "error":
            assert record["reason"] and record["peak_host_mem_mb"], (cfg.name, record)


@pytest.mark.slow
def test_quick_benchmark_writes_schema_valid_lines(tmp_path):
    output = tmp_path / "quick.jsonl"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--iters=1", f"--output={output}"],
                          capture_output=True, text=True, timeout=900, cwd=REPO,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = output.read_text().splitlines()
    expected = [c.name for c in configs.quick_grid()]  # the whole quick benchmark
    assert len(lines) == len(expected)
    schema = records.load_schema()
    recs = [records.validate_record(json.loads(line), schema) for line in lines]
    assert [r["name"] for r in recs] == expected
    for r in recs:
        if r["mixed_precision"]:
            assert r["status"] == "skipped" and "GPU" in r["reason"]
        else:
            assert r["status"] == "ok", r["reason"]
            assert r["step_s"]["min"] <= r["step_s"]["median"] <= r["step_s"]["max"]
            assert r["trace_compile_s"] > 0 and r["peak_host_mem_mb"] > 0 and r["examples_per_s"] > 0
            assert r["timed_major_faults"] >= 0 and r["peak_swap_mb"] >= 0
            assert 0 < r["timed_cpu_s"] <= 1.05 * (os.cpu_count() or 1) * sum(r["step_s"]["all"])
    table = output.with_suffix(".md").read_text()
    assert table.count("\n| ") >= len(expected) and "second_order_exact" in table


def test_failed_child_records_why_and_its_peak_memory():
    """A child that runs out of time (or memory) becomes an error record that says so, with the peak RSS reaped
    from the child, and TensorFlow's start-up log lines are not mistaken for the error."""
    cfg = configs.BenchConfig("cnn_eval", 2, layers=3, channels=4, image_size=8, num_classes=10)
    record = records.validate_record(parent.run_in_subprocess(cfg, timeout=1))
    assert record["status"] == "error" and record["reason"].startswith("timed out after 1 s")
    assert record["peak_host_mem_mb"] > 0 and record["step_s"] is None
    assert record["peak_swap_mb"] >= 0 and record["timed_major_faults"] is None and record["timed_cpu_s"] is None
    stderr = ("I0000 00:00:1795596816.898085   12560 port.cc:153] oneDNN custom operations are on.\n"
              "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
              "Traceback (most recent call last):\nValueError: bad shape\n"
              "W0000 00:00:1795596818.184904   12560 port.cc:153] more start-up noise\n")
    assert parent.error_tail(stderr) == "Traceback (most recent call last): | ValueError: bad shape"
    assert parent._kill_reason(-9, 24000.0).startswith("killed by SIGKILL at 24000 MiB peak RSS: out of host memory")
    assert parent._kill_reason(1, 10.0) == "child exited 1"
    assert parent._kill_reason(-6, 10.0) == "child died of SIGABRT"
    oom = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
           "tensorflow.python.framework.errors_impl.ResourceExhaustedError: Graph execution error:\n"
           "Out of memory while trying to allocate 23.71GiB.\n [Op:__inference_step]\ndouble free or corruption\n"
           "Fatal Python error: Aborted\n")
    assert parent.error_tail(oom).startswith("Out of memory while trying to allocate 23.71GiB. | [Op:__inference_step]")
    crash = ("F0000 00:00:1795596816.898085   12560 hlo_instruction.cc:1] Check failed: size < limit\n"
             "Fatal Python error: Aborted\n\nCurrent thread 0x00007f1c1bdc6b80 (most recent call first):\n"
             "  Garbage-collecting\n  <no Python frame>\n")
    assert parent.error_tail(crash) == ("F0000 00:00:1795596816.898085   12560 hlo_instruction.cc:1] Check failed: size < limit"
                                     " | Fatal Python error: Aborted")


def test_keeptape_variant_is_its_own_configuration():
    """The exact mode's two strategies (recompute, the default, and keep the tape) get distinct names and the record
    says which one ran; other modes record null."""
    kw = dict(layers=3, channels=8, nodes=4, image_size=32, num_classes=10)
    recompute = configs.BenchConfig("cnn_search", 128, "second_order_exact", **kw)
    keep = configs.BenchConfig("cnn_search", 128, "second_order_exact", exact_recompute=False, **kw)
    first = configs.BenchConfig("cnn_search", 128, "first_order", **kw)
    assert keep.name == "cnn_search/second_order_exact_keeptape/L3C8b128/noxla/fp32/cached"
    assert len({recompute.name, keep.name, first.name}) == 3
    recs = [records.validate_record(records.base_record(c, "skipped", "test", [0.0, 0.0, 0.0]))
            for c in (recompute, keep, first)]
    assert [r["exact_recompute"] for r in recs] == [True, False, None]
    assert [r["exact_hvp"] for r in recs] == ["reverse", "reverse", None]
    forward = configs.BenchConfig("cnn_search", 128, "second_order_exact", exact_hvp="forward", **kw)
    assert forward.name == "cnn_search/second_order_exact_fwdhvp/L3C8b128/noxla/fp32/cached"
    record = records.validate_record(records.base_record(forward, "skipped", "test", [0.0, 0.0, 0.0]))
    assert "| second_order_exact (forward HVP) |" in records.markdown_table([record])
    with pytest.raises(ValueError, match="exact_hvp must be 'reverse' or 'forward'"):
        configs.BenchConfig("cnn_search", 128, "second_order_exact", exact_hvp="both", **kw)
    table = records.markdown_table(recs)
    assert table.count("| second_order_exact (keep tape) |") == 1 and table.count("| second_order_exact |") == 1


def test_summarize_merges_runs_and_names_a_bad_line(tmp_path):
    """--summarize: the later record of a configuration replaces the earlier one; a line that breaks the schema is
    reported with its file and line number."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    old = _ok_record(step_s={"median": 9.0, "min": 9.0, "max": 9.0, "mean": 9.0, "all": [9.0]})
    exact = _ok_record(name="cnn_search/second_order_exact/L5C8b16/noxla/fp32/cached", arch_mode="second_order_exact")
    fd = _ok_record(name="cnn_search/second_order_fd/L5C8b16/noxla/fp32/cached", arch_mode="second_order_fd",
                    step_s={"median": 0.5, "min": 0.5, "max": 0.5, "mean": 0.5, "all": [0.5]})
    first.write_text(json.dumps(old) + "\n" + json.dumps(exact) + "\n")
    second.write_text(json.dumps(_ok_record()) + "\n" + json.dumps(fd) + "\n")
    recs, text = records.summarize([str(first), str(second)])
    assert [r["name"] for r in recs] == [exact["name"], old["name"], fd["name"]]
    assert "9.000" not in text and "1.000 (0.900-1.100)" in text
    assert "cnn_search/L5C8b16/noxla/fp32/cached: 2.0x" in text
    second.write_text(json.dumps({**fd, "batch_size": 0}) + "\n")
    with pytest.raises(ValueError, match=r"b\.jsonl:1: .*batch_size"):
        records.summarize([str(second)])


def test_grappler_options_variant_is_its_own_configuration():
    """A configuration run with other Grappler options is named and recorded apart from the default one; a value that
    set_experimental_options could not take is refused before any process starts."""
    kw = dict(layers=3, channels=8, nodes=4, image_size=32, num_classes=10)
    default = configs.BenchConfig("cnn_search", 16, "second_order_exact", **kw)
    off = configs.BenchConfig("cnn_search", 16, "second_order_exact", grappler_options={"disable_meta_optimizer": True},
                              **kw)
    assert off.name == default.name + "/grappler[disable_meta_optimizer=1]"
    recs = [records.validate_record(records.base_record(c, "skipped", "test", [0.0, 0.0, 0.0])) for c in (default, off)]
    assert [r["grappler_options"] for r in recs] == [None, {"disable_meta_optimizer": True}]
    assert "| second_order_exact (grappler: disable_meta_optimizer=True) |" in records.markdown_table(recs)
    with pytest.raises(ValueError, match="grappler_options must be a non-empty JSON object of booleans"):
        configs.BenchConfig("cnn_search", 16, "first_order", grappler_options={"disable_meta_optimizer": "yes"}, **kw)


def test_malloc_variant_is_its_own_configuration_and_the_child_runs_under_it(monkeypatch):
    """A configuration measured under tcmalloc is named and recorded apart from the system-malloc one, its child
    process really has the library loaded, a child without it refuses to measure, and a machine without the library
    is told which package to install."""
    kw = dict(layers=3, channels=8, nodes=4, image_size=32, num_classes=10)
    default = configs.BenchConfig("cnn_search", 16, "second_order_exact", **kw)
    tc = configs.BenchConfig("cnn_search", 16, "second_order_exact", malloc="tcmalloc", **kw)
    assert tc.name == default.name + "/malloc[tcmalloc]"
    recs = [records.validate_record(records.base_record(c, "skipped", "test", [0.0, 0.0, 0.0])) for c in (default, tc)]
    assert [r["malloc"] for r in recs] == ["system", "tcmalloc"]
    assert "| second_order_exact (tcmalloc) |" in records.markdown_table(recs)
    with pytest.raises(ValueError, match="malloc must be one of system, tcmalloc, jemalloc"):
        configs.BenchConfig("cnn_search", 16, "first_order", malloc="mimalloc", **kw)

    with monkeypatch.context() as m:
        m.setattr("ctypes.util.find_library", lambda name: None)
        with pytest.raises(ValueError, match=r"apt-get install libjemalloc2"):
            child.malloc_preload("jemalloc")
    assert child.malloc_preload("system") is None
    dockerfile = (REPO / "Dockerfile").read_text()  # the image preloads the library measured here
    soname, package = configs.MALLOCS["tcmalloc"]
    assert f"ENV LD_PRELOAD={soname}\n" in dockerfile and f" {package} " in dockerfile

    if ctypes.util.find_library("tcmalloc_minimal") is None:
        pytest.skip("tcmalloc is not installed (apt-get install libtcmalloc-minimal4; scripts/ensure_env.sh does it)")
    probe = "from benchmarks import child; print(child.MALLOCS['tcmalloc'][0] in child._loaded_libraries())"
    for cfg, loaded in ((default, "False"), (tc, "True")):
        out = subprocess.run([sys.executable, "-c", probe], env=child.child_env(cfg), cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
        assert out == [loaded], (cfg.malloc, out)
    refused = records.validate_record(child.run_child(tc))  # this test process has no tcmalloc preloaded
    assert refused["status"] == "error" and "libtcmalloc_minimal.so.4 is not loaded" in refused["reason"]


def test_swap_is_sampled_and_shown_beside_the_peak_rss():
    """A child's swapped-out memory is read from /proc (0 for a process that is gone), and a record that used swap
    shows it, with the major page faults of its timed steps, in the table's memory column."""
    assert parent.swapped_kb(os.getpid()) >= 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert parent.swapped_kb(child.pid) == 0
    assert "| 100 | ok |" in records.markdown_table([_ok_record(peak_swap_mb=0.0, timed_major_faults=0)])
    swapped = records.validate_record(_ok_record(peak_swap_mb=5120.4, timed_major_faults=3, timed_cpu_s=4.5))
    assert "| 100 + 5120 swap (3 major faults timed, 1.50 CPU-s per s) | ok |" in records.markdown_table([swapped])
    with pytest.raises(ValueError, match=r"\$\.timed_major_faults: -1 is less than the minimum of 0"):
        records.validate_record(_ok_record(timed_major_faults=-1))
