import json

import numpy as np
import pytest

from darts_tf import genotypes as gt


def _alpha_rows(num_inputs, steps, num_ops):
    return sum(num_inputs + i for i in range(steps)), num_ops


def test_published_genotypes_match_the_reference_file():
    # the facts file shipped beside the project
    import pathlib
    ref = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "published_genotypes.json"
    if not ref.exists():
        pytest.skip("shared/reference not present")
    data = json.loads(ref.read_text())
    for name, g in data["cnn"]["genotypes"].items():
        assert gt.get_genotype(name, "cnn") == gt.genotype_from_dict(g, kind="cnn"), name
    for name, g in data["rnn"]["genotypes"].items():
        assert gt.get_genotype(name, "rnn") == gt.genotype_from_dict({**g, "kind": "rnn"}), name
    assert tuple(data["cnn"]["primitives"]) == gt.CNN_PRIMITIVES
    assert tuple(data["rnn"]["primitives"]) == gt.RNN_PRIMITIVES


def test_derive_cnn_on_hand_built_alphas():
    rows, k = _alpha_rows(2, 4, 8)
    assert rows == 14
    a = np.zeros((rows, k))
    P = gt.CNN_PRIMITIVES.index
    # node 0 (edges 0,1): both inputs, sep_conv_3x3 from 1 strongest, max_pool from 0
    a[0, P("max_pool_3x3")] = 3.0
    a[1, P("sep_conv_3x3")] = 5.0
    # node 1 (edges 2,3,4): 'none' is strongest everywhere but must be ignored; pick states 2 and 0
    a[2:5, P("none")] = 10.0
    a[4, P("dil_conv_5x5")] = 4.0
    a[2, P("skip_connect")] = 3.0
    # node 2 (edges 5..8): predecessor 3 and 1
    a[8, P("avg_pool_3x3")] = 6.0
    a[6, P("sep_conv_5x5")] = 2.0
    # node 3 (edges 9..13): predecessor 4 (edge 13) and 0 (edge 9)
    a[13, P("dil_conv_3x3")] = 7.0
    a[9, P("skip_connect")] = 1.0
    g = gt.derive_genotype(a, a, k=2)
    expected = [("sep_conv_3x3", 1), ("max_pool_3x3", 0),
                ("dil_conv_5x5", 2), ("skip_connect", 0),
                ("avg_pool_3x3", 3), ("sep_conv_5x5", 1),
                ("dil_conv_3x3", 4), ("skip_connect", 0)]
    assert list(g.normal) == expected
    assert list(g.reduce) == expected
    assert g.normal_concat == (2, 3, 4, 5)


def test_derive_rnn_top1():
    a = np.zeros((36, 5))
    P = gt.RNN_PRIMITIVES.index
    start = 0
    for node in range(8):
        n = node + 1
        a[start: start + n, P("none")] = 9.0  # never chosen
        a[start + (node // 2), P("relu")] = 3.0
        start += n
    g = gt.derive_recurrent_genotype(a)
    assert g.recurrent == tuple(("relu", node // 2) for node in range(8))
    assert g.concat == tuple(range(1, 9))


def test_json_round_trip_is_identity(tmp_path):
    for kind, registry in (("cnn", gt.CNN_GENOTYPES), ("rnn", gt.RNN_GENOTYPES)):
        for name, g in registry.items():
            assert gt.genotype_from_json(gt.genotype_to_json(g)) == g
            path = tmp_path / f"{kind}_{name}.json"
            gt.save_genotype(g, str(path), metadata={"seed": 3})
            assert gt.load_genotype_file(str(path), kind=kind) == g
            assert gt.load_genotype_metadata(str(path)) == {"seed": 3}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["normal"].__setitem__(0, ["conv_9x9", 0]), r"'normal'\[0\] uses unknown op 'conv_9x9'"),
    (lambda d: d["reduce"].__setitem__(3, ["sep_conv_3x3", 4]), r"'reduce'\[3\] has predecessor 4 out of range: node 1 may only take states 0..2"),
    (lambda d: d["normal"].pop(), r"'normal' has 7 edges; it needs 2 edges per node"),
    (lambda d: d.__setitem__("normal_concat", [2, 3, 9]), r"concat for 'normal' has state 9 out of range 2..5"),
    (lambda d: d.pop("reduce"), r"missing field\(s\) 'reduce'"),
    (lambda d: d.__setitem__("normal", "sep_conv_3x3"), r"'normal' must be a non-empty list"),
    (lambda d: d["normal"].__setitem__(0, ["none", 0]), r"unknown op 'none'"),
])
def test_malformed_genotypes_raise_documented_error(mutate, message):
    d = json.loads(gt.genotype_to_json(gt.get_genotype("DARTS_V2")))
    mutate(d)
    with pytest.raises(gt.GenotypeError, match=message):
        gt.genotype_from_dict(d)


def test_bad_json_and_unknown_names(tmp_path):
    with pytest.raises(gt.GenotypeError, match="does not parse"):
        gt.genotype_from_json("{not json")
    with pytest.raises(gt.GenotypeError, match=r"Unknown CNN genotype name 'DARTS_V9'. Known: AmoebaNet, DARTS, DARTS_V1, DARTS_V2, NASNet"):
        gt.resolve_genotype("DARTS_V9")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gt.resolve_genotype(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "rnn", "recurrent": [["tanh", 3]], "concat": [1]}))
    with pytest.raises(gt.GenotypeError, match=r"bad.json: .*predecessor 3 out of range"):
        gt.resolve_genotype(str(bad), "rnn")
    with pytest.raises(gt.GenotypeError, match="Expected a CNN genotype"):
        gt.resolve_genotype(str(bad), "cnn")


def test_random_genotypes_are_valid_and_uniformly_spread():
    seen = set()
    for seed in range(200):
        g = gt.random_genotype(seed, "cnn")
        g.validate()
        assert len({j for _, j in g.normal[:2]}) == 2  # distinct predecessors per node
        seen.update(op for op, _ in g.normal)
        gt.random_genotype(seed, "rnn").validate()
    assert seen == set(gt.CNN_PRIMITIVES) - {"none"}
    assert gt.random_genotype(5) == gt.random_genotype(5)


def test_derive_from_alphas_picks_the_cell_kind_from_the_saved_names():
    rng = np.random.default_rng(0)
    cnn = {"alpha_normal": rng.normal(size=(14, 8)), "alpha_reduce": rng.normal(size=(14, 8))}
    assert gt.derive_from_alphas(cnn) == gt.derive_genotype(cnn["alpha_normal"], cnn["alpha_reduce"], k=2)
    rnn = {"alpha_recurrent": rng.normal(size=(36, 5))}
    assert gt.derive_from_alphas(rnn) == gt.derive_recurrent_genotype(rnn["alpha_recurrent"])
    with pytest.raises(ValueError, match=r"alphas hold \['a', 'b'\]; expected alpha_normal and alpha_reduce"):
        gt.derive_from_alphas({"a": rnn["alpha_recurrent"], "b": rnn["alpha_recurrent"]})


@pytest.mark.parametrize("kind, name", [("cnn", "DARTS_V2"), ("rnn", "DARTS_V1")])
def test_as_genotype_takes_every_form_of_a_genotype(tmp_path, kind, name):
    genotype = gt.get_genotype(name, kind)
    path = str(tmp_path / "g.json")
    gt.save_genotype(genotype, path)
    for value in (genotype, genotype.to_dict(), name, path, gt.genotype_to_json(genotype),
                  "  " + gt.genotype_to_json(genotype)):
        assert gt.as_genotype(value, kind) == genotype


def test_as_genotype_errors_name_what_was_received(tmp_path):
    with pytest.raises(gt.GenotypeError, match="Expected a RNN genotype but the genotype has kind 'cnn'"):
        gt.as_genotype(gt.CNN_GENOTYPES["DARTS_V2"], "rnn")
    with pytest.raises(gt.GenotypeError, match="Expected a CNN genotype but the genotype has kind 'rnn'"):
        gt.as_genotype(gt.RNN_GENOTYPES["DARTS_V2"].to_dict(), "cnn")
    with pytest.raises(gt.GenotypeError, match=r"genotype must be a published RNN genotype name \(DARTS, DARTS_V1, "
                                               r"DARTS_V2, ENAS\), a genotype JSON file or inline JSON, a "
                                               r"RecurrentGenotype or its dict. Received: ''"):
        gt.as_genotype("", "rnn")
    with pytest.raises(gt.GenotypeError, match=r"a Genotype or its dict. Received: 3"):
        gt.as_genotype(3, "cnn")
    with pytest.raises(gt.GenotypeError, match="Genotype JSON does not parse"):
        gt.as_genotype('{"recurrent": [', "rnn")
    with pytest.raises(gt.GenotypeError, match="Unknown CNN genotype name 'DARTS_V9'"):
        gt.as_genotype("DARTS_V9", "cnn")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gt.as_genotype(str(tmp_path / "missing.json"), "cnn")


@pytest.mark.parametrize("text, problem", [
    ("none,conv_9x9", "unknown conv_9x9"),
    ("sep_conv_3x3,skip_connect,sep_conv_3x3", "repeated sep_conv_3x3"),
    ("sep_conv_3x3", "fewer than 2 ops"),
    ("none, none", "repeated none"),
])
def test_primitive_lists_are_checked_against_the_op_table(text, problem):
    with pytest.raises(ValueError, match=rf"^--primitives must be a comma-separated subset \(at least 2, not only "
                                         rf"'none'\) of none, max_pool_3x3, .*, dil_conv_5x5; {problem}\. "
                                         rf"Received: primitives={text!r}$"):
        gt.parse_primitives(text, gt.CNN_PRIMITIVES)
    assert gt.parse_primitives(" relu,none ,tanh", gt.RNN_PRIMITIVES) == ["relu", "none", "tanh"]  # order kept


@pytest.mark.parametrize("kind, primitives, steps", [("cnn", ("none", "skip_connect", "sep_conv_3x3"), 2),
                                                     ("rnn", ("tanh", "relu"), 3)])
def test_random_genotypes_sample_the_chosen_ops_and_nodes(kind, primitives, steps):
    samples = [gt.random_genotype(seed, kind, steps, primitives) for seed in range(40)]
    ops = {op for g in samples for field in (("normal", "reduce") if kind == "cnn" else ("recurrent",))
           for op, _ in getattr(g, field)}
    assert ops == set(primitives) - {"none"}  # every non-none op drawn, nothing else
    per_node = 2 if kind == "cnn" else 1
    assert {len(g.normal if kind == "cnn" else g.recurrent) for g in samples} == {per_node * steps}
