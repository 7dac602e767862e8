"""training.fit builds the optimizer's and the metrics' variables before Keras traces the train step: one
trace instead of two, and the same weights as a plain `model.fit` (Keras 3, in this process)."""

import numpy as np
import pytest

from bnexp.toolkit import data, models, training


def _model(fw, seed: int, flag_style: str = "functional"):
    fw.keras.backend.clear_session()
    fw.set_seed(seed)
    m = models.build(fw, "small_cnn", (28, 28, 1), 10, momentum=0.9, flag_style=flag_style)
    training.compile_model(fw, m, "adam", 1e-3)
    return m


def _counting_train_step(model) -> list:
    """Count the Python executions of model.train_step: one per trace of Keras' train step."""
    calls = []
    step = model.train_step

    def counted(batch):
        calls.append(1)
        return step(batch)

    model.train_step = counted
    return calls


@pytest.mark.parametrize("flag_style", ["functional", "subclass"])
def test_fit_traces_the_train_step_once_with_the_weights_of_a_plain_fit(fw, flag_style):
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)

    plain = _model(fw, 3, flag_style)
    plain_calls = _counting_train_step(plain)
    plain.fit(data.train_batches(x, y, 16, 3, seed=1), epochs=1, steps_per_epoch=3, verbose=0)
    plain_weights = [w.numpy() for w in plain.weights]

    ours = _model(fw, 3, flag_style)
    calls = _counting_train_step(ours)
    training.fit(ours, data.train_batches(x, y, 16, 3, seed=1), 3)

    assert len(plain_calls) == 2  # Keras' own path: a variable-creating trace, then the real one
    assert len(calls) == 1 and ours.optimizer.built
    assert [w.name for w in ours.weights] == [w.name for w in plain.weights]
    for got, want in zip(ours.weights, plain_weights):
        np.testing.assert_array_equal(got.numpy(), want)  # bit for bit, moving statistics included


def test_build_before_trace_leaves_other_inputs_and_built_models_alone(fw):
    m = _model(fw, 0)
    training.build_before_trace(m, [(np.zeros((2, 28, 28, 1), np.float32), np.zeros(2))])  # no element_spec
    assert not m.optimizer.built
    x = np.zeros((8, 28, 28, 1), np.float32)
    ds = data.train_batches(x, np.zeros(8, np.int64), 4, 1, seed=0)
    training.build_before_trace(m, ds)
    assert m.optimizer.built
    before = [v.name for v in m.optimizer.variables]
    training.build_before_trace(m, ds)  # a second fit on the same model: nothing more to build
    assert [v.name for v in m.optimizer.variables] == before


def test_steps_per_execution_divides_each_logged_chunk_and_is_one_off_tensorflow(fw):
    assert training.steps_per_execution(fw, 256) == 32
    assert training.steps_per_execution(fw, 30) == 30
    assert training.steps_per_execution(fw, 100) == 25  # the largest divisor up to 32: epochs end where they did
    assert training.steps_per_execution(fw, 37) == 1  # a prime: one step per call
    assert training.steps_per_execution(fw, 1) == 1
    for name, backend in (("keras3", "jax"), ("tf_keras", "tensorflow")):
        other = type("Flavour", (), {"name": name, "backend": backend})()
        assert training.steps_per_execution(other, 256) == 1


@pytest.mark.parametrize("flag_style", ["functional", "subclass"])
def test_several_steps_per_call_train_bit_for_bit_like_one(fw, flag_style):
    """The loop Keras runs inside the graph gives the weights, moving statistics and logged history of one
    step per call (12 steps of batch 4 in 3 logged chunks: 4 steps per call)."""
    rng = np.random.default_rng(1)
    x = rng.random((96, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 96)
    runs = {}
    for epoch_steps in (1, 4):
        m = _model(fw, 5, flag_style)
        training.compile_model(fw, m, "sgd", 0.05, epoch_steps=epoch_steps)
        history: list = []
        training.fit(m, data.train_batches(x, y, 4, 12, seed=2), 12, log_points=3, history=history)
        runs[epoch_steps] = ([w.numpy() for w in m.weights], history, m.steps_per_execution)
    assert runs[1][2] == 1 and runs[4][2] == 4
    assert runs[4][1] == runs[1][1]  # loss and accuracy at each logged step
    for got, want in zip(runs[4][0], runs[1][0]):
        np.testing.assert_array_equal(got, want)
