"""The search step under ``tf.distribute.MirroredStrategy`` on two logical CPU devices equals the one-device step on
the same global batch (alphas, weights, optimiser states), in every gradient mode, and keeps alpha and both optimisers'
states identical on every replica.

Logical devices must be configured before TensorFlow initialises, which the test session has done already, so the
comparisons run in a fresh process (this file run as a script: ``python -m tests.test_distributed_search MODE ...``),
which prints its findings as JSON. Every network case traces the bilevel step twice (one device, two replicas): the
moments check and the flag checks run by default; the network comparisons (2-6 minutes each on 2 shared CPU cores),
the end-to-end darts-search runs and the 2-process MultiWorkerMirroredStrategy run are marked slow (--runslow).
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from darts_tf.bilevel import check_replica_batch, optimizer_share
from darts_tf.distribute import WORKER_DIR_PREFIX
from tests.helpers import ENV, ROOT, module_report

REPLICAS = 2
GLOBAL_BATCH = 8
SHAPE, CLASSES = (8, 8, 3), 4
PRIMITIVES = ["none", "max_pool_3x3", "skip_connect", "dil_conv_3x3"]


def _run_case(*args, timeout=600):
    """This file as a script in a fresh process with `REPLICAS` logical CPU devices; its JSON report."""
    return module_report("tests.test_distributed_search", *args, timeout=timeout)


def test_synchronised_moments_are_the_global_batchs_with_exact_second_derivatives():
    found = _run_case("moments")
    for replica in range(REPLICAS):
        np.testing.assert_allclose(found["mean"][replica], found["numpy_mean"], rtol=1e-12)
        np.testing.assert_allclose(found["variance"][replica], found["numpy_variance"], rtol=1e-12)
    assert found["gradient_error"] < 1e-12
    # the Hessian-vector product through the all-reduces: the one-device one, and a finite difference of the gradient
    assert found["hvp_error"] < 1e-12 * max(1.0, found["hvp_scale"])
    assert found["hvp_fd_error"] < 1e-6 * max(1.0, found["hvp_scale"])


def _check_step(found):
    assert found["replicas_differ"] == []  # alphas, weights, BN statistics and both optimisers' slots, bit for bit
    assert found["alpha_moved"] > 1e-4  # the step did move alpha
    # float round-off only (errors relative to each variable's largest entry); Adam's moments hold the alpha
    # gradients, which Adam's scale-free step alone would not show
    assert found["worst"]["alpha"] < 1e-4, found["worst"]
    assert found["worst"]["model"] < 1e-4, found["worst"]
    assert found["worst"]["optimizer"] < 1e-3, found["worst"]
    for key, value in found["logs"]["single"].items():  # the logged losses are the global batch's
        assert found["logs"]["mirrored"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("mode, bilevel", [
    ("first_order", {}),
    ("second_order_fd", {}),
    ("second_order_exact", {}),  # recomputed virtual step (the default)
    ("second_order_exact", {"exact_recompute": False}),  # the kept tape
    # the deterministic guards and SDARTS-RS' perturbation (the same draw on every replica and on one device)
    ("first_order", {"guards": {"sdarts_epsilon": 0.03, "aux_skip_beta": 0.5, "beta_decay": 1.0}}),
])
def test_mirrored_search_steps_equal_the_one_device_steps(mode, bilevel):
    # two steps: the second starts from momentum and Adam slots that the first step all-reduced
    _check_step(_run_case(mode, "2", json.dumps(bilevel)))


@pytest.mark.slow
def test_the_forward_over_reverse_hessian_term_is_refused_under_several_replicas():
    found = _run_case("second_order_exact", "1", json.dumps({"exact_hvp": "forward"}))
    assert re.search(r"exact_hvp='forward' is not available under a distribution strategy of 2 replicas: .* "
                     r"Use exact_hvp='reverse'", found["error"]), found


@pytest.mark.slow
def test_darts_search_with_strategy_mirrored_finds_the_one_device_alphas(tmp_path):
    found = _run_case("search", str(tmp_path))["alphas"]
    assert sorted(found["mirrored"]) == sorted(found["default"])
    # Not to round-off: this digits run amplifies it (Adam's scale-free step on near-zero alpha gradients, the finite
    # difference's division by eps); one-device runs with the fused and with the two-pass BatchNorm arithmetic already
    # differ by 5e-5 after its 2 steps, the mirrored run by 1.6e-4 (alpha steps are 3e-3). The step tests above pin
    # the distributed step to round-off.
    for name in found["default"]:
        np.testing.assert_allclose(found["mirrored"][name], found["default"][name], atol=5e-4)


def run_search_workers(module, out, scratch, n=2):
    """`n` processes of `module` run as a script (``worker OUT``) with the TF_CONFIG of an `n`-worker cluster on
    localhost, temporary directories under `scratch`; each one's last JSON line, once all have finished."""
    from tests.cnn.test_multi_worker import tf_configs, wait_all

    env = {**ENV, "TMPDIR": str(scratch)}
    workers = []
    for i, config in enumerate(tf_configs(n)):
        log = os.path.join(os.path.dirname(str(scratch)), f"worker{i}.log")  # next to scratch
        with open(log, "w") as f:
            proc = subprocess.Popen([sys.executable, "-m", module, "worker", out], cwd=ROOT,
                                    env={**env, "TF_CONFIG": config}, stdout=f, stderr=subprocess.STDOUT)
        workers.append((proc, None, log))
    assert wait_all(workers) == [0] * n, [open(log).read()[-3000:] for _, _, log in workers]
    reported = []
    for _, _, log in workers:
        with open(log) as f:
            reported.append(json.loads([line for line in f if line.startswith("{")][-1]))
    return reported


@pytest.mark.slow
def test_darts_search_with_strategy_multi_worker_on_two_localhost_workers(tmp_path):
    out, scratch = str(tmp_path / "run"), tmp_path / "scratch"  # scratch: the workers' temporary directories
    scratch.mkdir()
    reported = [r["alphas"]["multi_worker"] for r in run_search_workers("tests.test_distributed_search", out, scratch)]
    for name in reported[0]:  # both workers: the same alphas, bit for bit
        np.testing.assert_array_equal(reported[0][name], reported[1][name])
    assert os.path.isfile(os.path.join(out, "multi_worker", "genotype.json"))  # the chief's run directory
    assert not [d for d in os.listdir(scratch) if d.startswith(WORKER_DIR_PREFIX)]  # the other worker's is gone


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match=r"--batch_size must be a multiple of the strategy's 2 replicas .*"
                                         r"Received: batch_size=9"):
        check_replica_batch(9, 2)
    check_replica_batch(9, 1)
    check_replica_batch(8, 2)


def test_the_optimizers_get_one_share_per_replica():
    # Keras sums the replicas' gradients: R shares of 1/R of the (already global) gradient make it whole
    assert optimizer_share(1) is None
    assert optimizer_share(4) == 0.25


def test_strategy_flags_are_checked():
    from darts_tf.cnn.search import SearchConfig as CNNSearchConfig
    from darts_tf.rnn.search import SearchConfig as RNNSearchConfig

    with pytest.raises(ValueError, match=r"strategy must be one of auto, mirrored, multi_worker, default\. "
                                         r"Received: strategy='two'"):
        CNNSearchConfig(output_dir="x", strategy="two").validate()
    with pytest.raises(ValueError, match=r"strategy must be one of auto, mirrored, multi_worker, default\. "
                                         r"Received: strategy='two'"):
        RNNSearchConfig(output_dir="x", strategy="two").validate()


# ------------------------------------------------------------------------------------------------- the child process
def _configure_devices(n):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])


def _stream(steps, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    n = steps * GLOBAL_BATCH

    def half():
        return (rng.normal(size=(n,) + SHAPE).astype(np.float32), rng.integers(0, CLASSES, n).astype(np.int64))

    return tf.data.Dataset.from_tensor_slices({"train": half(), "validation": half()}).batch(GLOBAL_BATCH, True)


def _model(strategy, mode, **bilevel):
    import keras

    from darts_tf.bilevel import BilevelConfig
    from darts_tf.cnn.search_space import build_cnn_search_network
    from darts_tf.collapse import CollapseGuards

    bilevel = dict(bilevel)
    guards = CollapseGuards(**bilevel.pop("guards", {}))
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = build_cnn_search_network(SHAPE, CLASSES, C=4, num_layers=3, steps=1, multiplier=1,
                                         primitives=PRIMITIVES, bilevel=BilevelConfig(mode=mode, **bilevel),
                                         guards=guards)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      arch_optimizer=keras.optimizers.Adam(3e-3, beta_1=0.5, beta_2=0.999))
    return model


def _state(model):
    """Every variable that a step changes: alphas, weights, BN statistics, both optimisers' slots (by name)."""
    arch = {id(v) for v in model.arch_variables}
    variables = [("alpha" if id(v) in arch else "model", v) for v in model.variables]
    return variables + [("optimizer", v) for opt in (model.optimizer, model.arch_optimizer) for v in opt.variables]


def _replica_values(v):
    """The per-replica copies of a (Keras) variable: one for a one-device variable."""
    value = getattr(v, "value", v)
    return [np.asarray(x.numpy()) for x in getattr(value, "values", [value])]


def _compare(mode, steps, **bilevel):
    import tensorflow as tf

    from darts_tf.distribute import make_strategy

    mirrored = make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == REPLICAS, mirrored.num_replicas_in_sync
    single, many = _model(tf.distribute.get_strategy(), mode, **bilevel), _model(mirrored, mode, **bilevel)
    many.set_weights(single.get_weights())
    initial_alphas = [np.array(v.numpy()) for v in single.arch_variables]
    logs = {}
    for name, model in (("single", single), ("mirrored", many)):
        logs[name] = {k: float(v[-1]) for k, v in model.fit(_stream(steps), epochs=1, steps_per_epoch=steps,
                                                               verbose=0, shuffle=False).history.items()}
    a, b = _state(single), _state(many)
    assert len(a) == len(b) and all(k == l for (k, _), (l, _) in zip(a, b)), "the two models' variables differ"
    worst = {"alpha": 0.0, "model": 0.0, "optimizer": 0.0}
    replicas_differ = []
    for (kind, v), (_, w) in zip(a, b):
        reference, copies = _replica_values(v)[0], _replica_values(w)
        if len(copies) != REPLICAS or any(not np.array_equal(copies[0], c) for c in copies[1:]):
            replicas_differ.append(w.path)
        if reference.size:  # relative to the variable's largest entry (Adam's second moments are ~1e-8)
            scale = max(float(np.max(np.abs(reference))), 1e-30)
            worst[kind] = max(worst[kind], float(np.max(np.abs(copies[0] - reference))) / scale)
    moved = max(float(np.max(np.abs(v.numpy() - a0))) for v, a0 in zip(single.arch_variables, initial_alphas))
    return {"mode": mode, "worst": worst, "replicas_differ": replicas_differ, "logs": logs,
            "variables": len(a), "alpha_moved": moved}


def _normalised(x, c):
    """sum(c * (x - mean) / sqrt(var + eps)) with ``numerics.moments`` over all but the channel axis."""
    import tensorflow as tf

    from darts_tf.numerics import moments

    mean, variance = moments(x, [0, 1, 2])
    return tf.reduce_sum(c * (x - mean) * tf.math.rsqrt(variance + 1e-5))


def _gradient_and_hvp(x, c, v):
    """d/dx and (d^2/dx^2) v of ``_normalised`` by nested tapes (what the exact mode does through BatchNorm)."""
    import tensorflow as tf

    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = _normalised(x, c)
        g = inner.gradient(loss, x)
        gv = tf.reduce_sum(g * v)
    return g, outer.gradient(gv, x)


def _moments_case():
    """Synchronised moments on the replicas' shares against the global batch's (values, gradient, Hessian-vector
    product), in float64; the replicas' results concatenated in replica order."""
    import tensorflow as tf

    from darts_tf.distribute import make_strategy
    from darts_tf.numerics import moments

    rng = np.random.default_rng(3)
    x, c, v = (rng.normal(size=(GLOBAL_BATCH, 3, 3, 2)) for _ in range(3))
    x = x * np.array([1.0, 3.0]) + np.array([0.5, -2.0])
    mirrored = make_strategy("mirrored")
    share = GLOBAL_BATCH // REPLICAS

    def per_replica(array):
        return mirrored.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(array[ctx.replica_id_in_sync_group * share:][:share]))

    @tf.function
    def step(x, c, v):
        mean, variance = moments(x, [0, 1, 2])
        g, hv = _gradient_and_hvp(x, c, v)
        return mean, variance, g, hv

    results = mirrored.run(step, args=(per_replica(x), per_replica(c), per_replica(v)))
    local = [mirrored.experimental_local_results(r) for r in results]
    g_one, hv_one = _gradient_and_hvp(tf.constant(x), tf.constant(c), tf.constant(v))
    eps = 1e-5  # the one-device Hessian-vector product by a central difference of the gradient
    g_plus, _ = _gradient_and_hvp(tf.constant(x + eps * v), tf.constant(c), tf.constant(v))
    g_minus, _ = _gradient_and_hvp(tf.constant(x - eps * v), tf.constant(c), tf.constant(v))
    hv_fd = (g_plus.numpy() - g_minus.numpy()) / (2 * eps)
    return {"mean": [np.asarray(m).tolist() for m in local[0]], "variance": [np.asarray(m).tolist() for m in local[1]],
            "numpy_mean": x.mean(axis=(0, 1, 2)).tolist(), "numpy_variance": x.var(axis=(0, 1, 2)).tolist(),
            "gradient_error": float(np.max(np.abs(np.concatenate(local[2]) - g_one.numpy()))),
            "hvp_error": float(np.max(np.abs(np.concatenate(local[3]) - hv_one.numpy()))),
            "hvp_scale": float(np.max(np.abs(hv_one.numpy()))),
            "hvp_fd_error": float(np.max(np.abs(np.concatenate(local[3]) - hv_fd)))}


# digits: 718 images train w, as many alpha; a batch of 256 makes an epoch of 2 steps (as in the step test: with more,
# Adam's scale-free steps turn the round-off of near-zero alpha gradients into full steps of either sign)
SEARCH = dict(dataset="digits", batch_size=256, epochs=1, init_channels=4, layers=3, nodes=1, seed=3,
              primitives=",".join(PRIMITIVES), arch_mode="second_order_fd", arch_learning_rate=3e-3)


def _search_case(output_dir, strategies=("mirrored", "default")):
    """darts-search's run_search on digits for one epoch under each strategy; the final alphas of each."""
    from darts_tf.cnn.search import SearchConfig, run_search

    alphas = {}
    for strategy in strategies:
        result = run_search(SearchConfig(output_dir=os.path.join(output_dir, strategy), strategy=strategy, **SEARCH),
                            verbose=0)
        alphas[strategy] = {k: np.asarray(v).tolist() for k, v in result["alphas"].items()}
        if strategy != "multi_worker":  # there, the chief's (checked once every worker has finished)
            assert os.path.isfile(result["genotype_path"])
    return {"alphas": alphas}


def _main(argv):
    if argv[0] == "worker":  # one of the multi-worker processes (TF_CONFIG set): one CPU device, one replica each
        print(json.dumps(_search_case(argv[1], strategies=("multi_worker",))))
        return
    _configure_devices(REPLICAS)
    if argv[0] == "moments":
        print(json.dumps(_moments_case()))
        return
    if argv[0] == "search":
        if len(argv) > 2:  # other settings of the search, as JSON
            SEARCH.update(json.loads(argv[2]))
        print(json.dumps(_search_case(argv[1])))
        return
    mode, steps = argv[0], int(argv[1])
    bilevel = json.loads(argv[2]) if len(argv) > 2 else {}
    try:
        found = _compare(mode, steps, **bilevel)
    except ValueError as e:  # a configuration the distributed step refuses: its message
        found = {"error": str(e)}
    print(json.dumps(found))


if __name__ == "__main__":
    _main(sys.argv[1:])
