"""benchmarks/profile_first_step.py: reading Grappler's log, counting the traced graph's ops, timing wrapped calls,
grouping cProfile's rows, and (slow) the whole profile at a tiny size."""

import json
import pathlib
import subprocess
import sys
import time

import pytest

from benchmarks import profile_first_step as pfs

REPO = pathlib.Path(__file__).resolve().parents[2]

# the shape of TensorFlow 2.21's meta_optimizer log at TF_CPP_VMODULE=meta_optimizer=1 (lines from a real run)
LOG = """\
I0000 00:00:1796142372.080060   19045 meta_optimizer.cc:1059] Starting optimization for grappler item: __inference_Dataset_map_load_146
I0000 00:00:1796142372.081105   19045 meta_optimizer.cc:973] model_pruner: Graph size after: 89 nodes (-5), 102 edges (-1), time = 0.268ms.
I0000 00:00:1796142372.108600   19045 meta_optimizer.cc:1311] Optimized 0 functions: 
I0000 00:00:1796142380.583741   19045 meta_optimizer.cc:1059] Starting optimization for grappler item: __inference_train_step_35213
I0000 00:00:1796142380.592606   19045 meta_optimizer.cc:1080] Deleted 0 unreachable functions from the graph (library size = 0)
I0000 00:00:1796142380.788027   19045 meta_optimizer.cc:973] model_pruner: Graph size after: 13733 nodes (-4448), 24848 edges (-3884), time = 173.455ms.
I0000 00:00:1796142381.045590   19045 meta_optimizer.cc:973] tfg_optimizer{any(tfg-consolidate-attrs,tfg-toposort)}: Graph size after: 13733 nodes (0), 24848 edges (0), time = 234.438ms.
some Python logging in between
I0000 00:00:1796142381.713668   19045 meta_optimizer.cc:973] constant_folding: Graph size after: 10108 nodes (293), 24387 edges (256), time = 428.425ms.
I0000 00:00:1796142383.579105   19045 meta_optimizer.cc:973] model_pruner: Graph size after: 9665 nodes (-443), 20083 edges (0), time = 85.842ms.
I0000 00:00:1796142385.464286   19045 meta_optimizer.cc:1311] Optimized 0 functions: 
I0000 00:00:1796142386.000000   19045 meta_optimizer.cc:1059] Starting optimization for grappler item: graph
"""


def test_grappler_time_is_read_from_the_largest_traced_function_in_its_log():
    g = pfs.grappler_from_log(LOG)
    assert g["found"] and g["item"] == "__inference_train_step_35213"
    assert g["wall_s"] == pytest.approx(1796142385.464286 - 1796142380.583741, abs=1e-3)
    assert g["per_pass_s"] == {"model_pruner": pytest.approx(0.259297, abs=1e-3),
                               "constant_folding": pytest.approx(0.428, abs=1e-3),
                               "tfg_optimizer": pytest.approx(0.234, abs=1e-3)}
    assert g["passes_s"] == pytest.approx(0.173455 + 0.234438 + 0.428425 + 0.085842, abs=1e-3)
    assert g["nodes_before"] == 13733 + 4448 and g["nodes_after"] == 9665
    assert g["other_items"] == 2
    # the absl time-of-day form (MMDD HH:MM:SS.us) works too, and a log without the function says so
    day = LOG.replace("I0000 00:00:1796142380.583741", "I1201 16:59:58.583741").replace(
        "I0000 00:00:1796142385.464286", "I1201 17:00:03.464286")
    assert pfs.grappler_from_log(day)["wall_s"] == pytest.approx(4.880545, abs=1e-3)
    assert pfs.grappler_from_log("nothing here\n") == {"found": False, "items_seen": 0}


def test_op_counts_split_forward_gradient_optimizer_passes_and_cells():
    ops = [("net_1/cell_0_1/mixed_op_1/conv/Conv2D", "Conv2D"),
           ("net_1/cell_0_1/mixed_op_1/conv/Relu", "Relu"),
           ("net_1/cell_1/mixed_op_9/sep/Conv2D", "Conv2D"),
           ("gradient_tape/net_1/cell_1/mixed_op_9/sep/Conv2DBackpropInput", "Conv2DBackpropInput"),
           ("gradient_tape/gradient_tape/net_3/cell_0_1/mixed_op_1/conv/ReluGrad", "ReluGrad"),
           ("sgd/Mul_3", "Mul"), ("adam_1/AssignAddVariableOp", "AssignAddVariableOp"),
           ("clip_by_global_norm/mul", "Mul"), ("Const_7", "Const")]
    counts = pfs.op_counts(ops)
    assert counts["total"] == 9
    assert counts["by_kind"] == {"forward": 4, "gradient": 2, "optimizer": 3}
    assert counts["per_cell"] == {"0": {"forward": 2, "gradient": 1}, "1": {"forward": 1, "gradient": 1}}
    assert counts["top_types"]["Conv2D"] == 2 and counts["top_types"]["Mul"] == 2
    assert counts["by_pass"] == {}  # passes are listed from 100 ops on
    big = pfs.op_counts([(f"net_3/cell_2/op_{i}", "Mul") for i in range(120)])
    assert big["by_pass"] == {"net_3": 120}


def test_call_timer_counts_the_outermost_call_and_restores_the_method():
    class Tape:
        def gradient(self, depth):
            time.sleep(0.02)
            return self.gradient(depth - 1) if depth else "done"

    original = Tape.gradient
    timer = pfs.CallTimer()
    timer.wrap(Tape, "gradient", "gradient")
    assert Tape().gradient(2) == "done"
    timer.restore()
    assert Tape.gradient is original
    assert timer.calls["gradient"] == 1 and 0.055 < timer.seconds["gradient"] < 1.0


def test_profile_rows_are_grouped_by_package():
    assert pfs.package_of("/x/site-packages/keras/src/layers/layer.py", "__call__") == "keras"
    assert pfs.package_of("/x/site-packages/tensorflow/python/framework/ops.py", "_create_c_op") == "tensorflow (Python)"
    assert pfs.package_of("~", "<built-in method tensorflow.python.client._pywrap_tf_session.TF_FinishOperation>") \
        == "tensorflow C++ (op creation, shape inference, stacks)"
    assert pfs.package_of("~", "<built-in method builtins.isinstance>") == "Python builtins"
    assert pfs.package_of(str(REPO / "darts_tf" / "cnn" / "ops.py"), "call") == "darts_tf"


@pytest.mark.slow
def test_profile_of_a_tiny_search_step_adds_up(tmp_path):
    output = tmp_path / "tiny.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_first_step.py"), "--layers=3",
                           "--channels=4", "--nodes=2", "--batch_size=4", "--image_size=8", "--steps=1", "--top=5",
                           f"--output={output}"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(output.read_text())
    p = report["phases_s"]
    assert report["name"] == "cnn_search/first_order/L3C4b4/noxla/fp32/cached"
    assert p["trace_gradient"] > 0 and p["trace_optimizer_apply"] > 0 and p["trace_forward_and_rest"] > 0
    assert p["trace_gradient"] + p["trace_optimizer_apply"] + p["trace_forward_and_rest"] == pytest.approx(p["trace"], abs=0.03)
    assert 0 < p["grappler"] < p["first_call"]
    assert p["grappler"] + p["instantiate_and_rest"] + p["steady_step"] == pytest.approx(p["first_call"], abs=0.03)
    assert p["time_to_first_step"] == pytest.approx(p["build"] + p["trace"] + p["first_call"], abs=0.03)
    assert report["gradient_calls"] == 2  # first order: the alpha gradient, then the weight gradient
    ops = report["graph_ops"]
    assert sum(ops["by_kind"].values()) == ops["total"] and ops["by_kind"]["gradient"] > 0
    assert sorted(ops["per_cell"]) == ["0", "1", "2"]
    assert report["grappler"]["nodes_before"] == pytest.approx(ops["total"], rel=0.01)
    assert len(report["cprofile"]["top_by_self_time"]) == 5 and report["cprofile"]["keras_layer_call"]["ncalls"] > 0
    assert report["cprofile"]["tf_op_creation"]["ncalls"] == ops["total"]
    assert pathlib.Path(report["tf_log"]).exists() and "wrote" in proc.stdout
