"""Training with plain Keras `fit`, in a few logged chunks, so the harness adds nothing per step."""

from __future__ import annotations

import math
import time
from pathlib import Path

from bnexp.errors import Diverged, UserError
from bnexp.names import OPTIMIZERS

SGD_MOMENTUM = 0.9

# Where fit() logs for the current run (set once per child process by `log_to`): Keras' own callbacks.
_LOG: dict = {}


def log_to(fw, run_dir: Path, tensorboard: bool = False) -> None:
    """Every later fit() prints a progress line per logged chunk, appends its epochs to run_dir/history.csv
    (Keras' CSVLogger) and, if `tensorboard`, writes TensorBoard logs to run_dir/tensorboard."""
    _LOG.update(fw=fw, run_dir=Path(run_dir), tensorboard=tensorboard)


def _callbacks(steps: int, per_epoch: int) -> list:
    if not _LOG:
        return []
    cb, run_dir = _LOG["fw"].keras.callbacks, _LOG["run_dir"]

    def progress(epoch, logs):
        numbers = " ".join(f"{k} {v:.3f}" for k, v in (logs or {}).items())
        print(f"progress: step {(epoch + 1) * per_epoch}/{steps} {numbers}", flush=True)

    out = [cb.LambdaCallback(on_epoch_end=progress), cb.CSVLogger(str(run_dir / "history.csv"), append=True)]
    if _LOG["tensorboard"]:
        out.append(cb.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    return out


def optimizer(fw, name: str, lr: float, graph: bool = False):
    """The optimizer table: adam, or sgd with (Nesterov-free) momentum 0.9; Keras' optimizers, or with
    `graph=True` their tf.compat.v1.train twins for TF1 graph code (bnexp.toolkit.tf1_graph)."""
    if name not in OPTIMIZERS:
        raise UserError(f"unknown train.optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    if graph:
        v1 = fw.tf.compat.v1.train
        return v1.AdamOptimizer(lr) if name == "adam" else v1.MomentumOptimizer(lr, SGD_MOMENTUM)
    if name == "adam":
        return fw.keras.optimizers.Adam(learning_rate=lr)
    return fw.keras.optimizers.SGD(learning_rate=lr, momentum=SGD_MOMENTUM)


def compile_model(fw, model, opt_name: str, lr: float, epoch_steps: int = 1) -> None:
    """Compile for the fit that follows; `epoch_steps`: its steps per Keras epoch (between two logged points),
    from which the steps per call of the train function are chosen (`steps_per_execution`)."""
    model.compile(optimizer=optimizer(fw, opt_name, lr),
                  loss=fw.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution(fw, epoch_steps))


MAX_STEPS_PER_CALL = 32


def steps_per_execution(fw, epoch_steps: int) -> int:
    """Optimizer steps per call of the compiled train function: for Keras 3 on TensorFlow the largest
    divisor of `epoch_steps` up to MAX_STEPS_PER_CALL, elsewhere 1.

    Keras then loops over those steps inside the graph, one Python round trip per call instead of one per
    step; a batch-2 step is mostly that round trip (`python -m bnexp.bench --only 9`). Each iteration runs
    the same traced step on the same batch in the same order, and a divisor keeps every epoch's end
    (callbacks, logged points) where it was, so every number stays the same (tests/test_training_fit.py).
    tf-keras is left at 1: its loop measured no faster there."""
    if fw.name != "keras3" or fw.backend != "tensorflow" or epoch_steps < 2:
        return 1
    return max(k for k in range(1, min(MAX_STEPS_PER_CALL, epoch_steps) + 1) if epoch_steps % k == 0)


def chunks(steps: int, most: int = 10) -> tuple[int, int]:
    """(epochs, steps_per_epoch) with epochs * steps_per_epoch == steps and at most `most` epochs."""
    epochs = max(d for d in range(1, min(most, steps) + 1) if steps % d == 0)
    return epochs, steps // epochs


def build_before_trace(model, ds) -> None:
    """Create the optimizer's and the compiled metrics' variables before `fit` traces its train step.

    Keras 3 on TensorFlow without a distribution strategy leaves them to the first trace of the train
    step; tf.function then traces the step twice (once creating the variables, once more without), and
    TensorFlow's gradient registry keeps both traces' graphs alive for the rest of the process (a warm
    worker's heap, and so every later gc pass, grew by about 20k objects a run; 7k with one trace).
    Keras itself builds them first, in `Trainer._symbolic_build`, whenever a strategy is set: here the
    same call, from the dataset's element spec (no batch is drawn). The variables start from the same
    zeros and the one remaining trace is the graph fit would run anyway, so every number stays the same
    (tests/test_numbers_unchanged.py); only the duplicate trace (about a fifth of a warm 1-step run)
    goes.
    A no-op for tf-keras, other backends, plain arrays and models already built; a model Keras cannot
    build symbolically is left to fit as before.
    """
    build = getattr(model, "_symbolic_build", None)  # Keras 3's trainer only
    spec = getattr(ds, "element_spec", None)  # a tf.data pipeline (bnexp.toolkit.data.train_batches)
    if build is None or spec is None or getattr(model, "_distribute_strategy", None) is not None:
        return
    try:
        build(data_batch=spec)
    except Exception:  # a model Keras cannot build symbolically: left to the trace, as fit would anyway
        pass


def fit(model, ds, steps: int, log_points: int = 10, history: list | None = None, verbose: int = 0) -> dict:
    """`model.fit` for exactly `steps` optimizer steps on a dataset of at least `steps` batches.

    Returns acc_train_fit (the accuracy Keras' progress bar shows at the end: the mean over the last
    logged chunk of steps), the final loss, steps and steps/s. Raises Diverged on a non-finite loss.
    """
    epochs, per_epoch = chunks(steps, log_points)
    start = time.perf_counter()
    build_before_trace(model, ds)
    h = model.fit(ds, epochs=epochs, steps_per_epoch=per_epoch, verbose=verbose,
                  callbacks=_callbacks(steps, per_epoch))
    seconds = time.perf_counter() - start
    rows = [{"step": (e + 1) * per_epoch, **{k: float(v[e]) for k, v in h.history.items()}} for e in range(epochs)]
    if history is not None:
        history.extend(rows)
    last = rows[-1]
    if not all(math.isfinite(r["loss"]) for r in rows):
        raise Diverged(f"loss became {last['loss']} by step {last['step']} (lower train.lr or use norm=bn)")
    return {"acc_train_fit": last["accuracy"], "loss_final": last["loss"], "steps": steps,
            "steps_per_s": steps / seconds, "fit_s": seconds}
