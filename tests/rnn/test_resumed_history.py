"""A resumed RNN training reports the history of every epoch of the run, as an uninterrupted one does (issue 22:
the fault-injection test found metrics.json of a killed and resumed darts-rnn-train holding only the epochs after
the last restart, and an empty history when the restart found the run finished)."""

import numpy as np

from darts_tf.rnn.train import TrainConfig, build_model, compile_model, fit

CONFIG = TrainConfig(units=8, batch_size=8, eval_batch_size=4, bptt=8, max_seq_len_delta=4, epochs=3, nonmono=0,
                     dropout=0.1, dropouth=0.1, dropoutx=0.1, dropouti=0.1, dropoute=0.1, seed=5)


def _fit(out, **kwargs):
    rng = np.random.default_rng(0)
    train_ids, valid_ids = rng.integers(0, 10, 1200).astype("int32"), rng.integers(0, 10, 300).astype("int32")
    return fit(compile_model(build_model(CONFIG, 10), CONFIG), train_ids, valid_ids, CONFIG, output_dir=str(out),
               **kwargs)


def test_the_run_history_of_a_resumed_training_starts_at_epoch_1(tmp_path):
    whole = _fit(tmp_path / "whole")
    assert len(whole.run_history["loss"]) == 3 and whole.run_history == whole.history
    _fit(tmp_path / "killed", epochs=2)  # killed after its second checkpoint
    resumed = _fit(tmp_path / "killed", resume=True)
    assert len(resumed.history["loss"]) == 1  # this call ran one epoch
    assert resumed.run_history.keys() == whole.run_history.keys()
    for key, values in whole.run_history.items():
        np.testing.assert_allclose(resumed.run_history[key], values, rtol=1e-5, err_msg=key)
    restarted = _fit(tmp_path / "killed", resume=True)  # a restart that finds the run finished
    assert restarted.history == {} and restarted.run_history == resumed.run_history
