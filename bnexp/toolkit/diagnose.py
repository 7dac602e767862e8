"""The child process of `bnexp doctor`: `python -m bnexp.toolkit.diagnose REQUEST.json RESULT.json`.

The parent (bnexp.doctor) has checked the input, refused model files that would run code (unless the user
set trust_model=true) and set this process' environment for the model's semantics. Here the model is loaded
with Keras' safe_mode on unless trust_model=true (custom classes only from the module the user names), a
sample of the data is split into a calibration half (population statistics, as precise BN recomputes them)
and a held-out half (accuracies), the checks run, and the report is returned as a dict (written as
doctor.json). No probe changes the model: every forward pass that could update BN's
moving statistics restores them afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import re
import shutil
import sys
import traceback
from pathlib import Path

import numpy as np

from bnexp.errors import UserError
from bnexp.model_safety import TRUST_HINT
from bnexp.shapes import shape_fits
from bnexp.toolkit import precise_bn, probes
from bnexp.toolkit.framework import activate
from bnexp.toolkit.models import batch_norm_layers, intercepted, is_batch_norm, to_numpy

# Thresholds of the checks (why each value: see the comment beside it). Each is compared with the value as the
# report prints it (see `shown`).
VAR_FACTOR = 2.0                 # moving variance off by more than 2x from the population one (per channel, on average)
MEAN_SHIFT = 0.5                 # moving mean off by more than half a population standard deviation
STRONG_FACTOR = 4.0              # without labels: this far off is an error, not a warning
STRONG_SHIFT = 1.0
ACC_GAP_POINTS = 2.0             # accuracy points that make a statistics finding an error (the claims' 2-point margin)
BATCH_DEP_TOL = 1e-3             # relative logit change alone vs in batch beyond float rounding of other kernels
STD_LIKE = 1.25                  # slot 4 within 25% of the population std (and far from the variance): C10
TINY_GROUP = 8                   # values per channel per training batch; the batch_size scenario: BN at 2 and 4 lose
DEPENDENCE_SAMPLES = 32          # samples predicted alone and together


# ---------------------------------------------------------------- loading


def custom_objects(module_name: str | None) -> dict:
    """Classes and functions of the module the user named (importing it also runs its Keras registrations)."""
    if not module_name:
        return {}
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"custom_objects={module_name}: cannot import it ({e}); the module must be importable "
                        f"from the current directory or PYTHONPATH") from None
    return {name: obj for name, obj in vars(module).items() if inspect.isclass(obj) or inspect.isfunction(obj)}


def load_model(fw, path: str, module_name: str | None, trust: bool = False):
    """The model, compile=False, safe_mode on unless the user trusts the file; a missing custom class is named
    with how to pass it."""
    try:
        return fw.keras.models.load_model(path, custom_objects=custom_objects(module_name), compile=False,
                                          safe_mode=not trust)
    except UserError:
        raise
    except Exception as e:
        text = str(e)
        missing = re.search(r"Could not locate (?:class|function) '([^']+)'|Unknown (?:layer|object|"
                            r"class|loss|metric|activation)[^:]*: '?([\w.>]+)'?", text)
        if missing:
            name = missing.group(1) or missing.group(2)
            hint = (f"custom_objects={module_name} does not define or register it" if module_name else
                    "pass the Python module that defines it: custom_objects=your.module (importable from the "
                    "current directory or PYTHONPATH)")
            raise UserError(f"model={path} uses the class {name!r}, which Keras cannot find: {hint}") from None
        if not trust and ("safe_mode" in text or "Lambda" in text):  # Keras' own refusal, if model_safety missed it
            raise UserError(f"model={path} holds Python code (a Lambda layer) that Keras' safe_mode will not run; "
                            f"bnexp doctor runs no code from a model file unless told to: {TRUST_HINT}") from None
        first = text.strip().splitlines()[0] if text.strip() else ""
        raise UserError(f"model={path} cannot be loaded as a Keras model: {type(e).__name__}: {first[:300]}") from None


# ---------------------------------------------------------------- data


def load_data(fw, spec: dict, model_input_shape) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (float32) and labels (int64, or None) as `spec` says, at most spec['max_samples'] of them."""
    kind, limit, seed = spec["kind"], int(spec["max_samples"]), int(spec.get("seed", 0))
    if kind == "npz":
        with np.load(spec["path"], allow_pickle=False) as z:
            x, y = z["x"], (z["y"] if "y" in z.files else None)
    elif kind == "dataset":
        from omegaconf import OmegaConf

        from bnexp.toolkit import data

        cfg = OmegaConf.create({**spec["config"], "train_size": limit, "test_size": limit})
        prepared = data.from_config(cfg, spec["cache_dir"], seed)
        x, y = (prepared.x_train, prepared.y_train) if spec["split"] == "train" else (prepared.x_test, prepared.y_test)
    elif kind == "folder":
        x, y = _image_folder(fw, spec, model_input_shape)
    else:
        raise ValueError(f"unknown data kind {kind!r}")
    if len(x) == 0:
        raise UserError(f"data={spec['source']} holds no samples")
    if len(x) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))
        x, y = x[keep], (None if y is None else y[keep])
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.mod(y, 1) == 0):
                raise UserError(f"data={spec['source']}: labels y must be class indices (integers), got {y.dtype}")
        y = y.astype(np.int64)
    return np.asarray(x, np.float32), y


def _image_folder(fw, spec, model_input_shape):
    if model_input_shape is None or len(model_input_shape) != 4 or None in model_input_shape[1:3]:
        raise UserError(f"data={spec['source']} is an image folder but the model's input shape "
                        f"{model_input_shape} is not (height, width, channels); save the images as .npz instead")
    height, width, channels = model_input_shape[1:]
    mode = {1: "grayscale", 3: "rgb", 4: "rgba"}.get(channels)
    if mode is None:
        raise UserError(f"data={spec['source']}: the model wants {channels} channels; image folders give 1, 3 or 4")
    load = fw.keras.utils.image_dataset_from_directory
    quiet = {"verbose": False} if "verbose" in inspect.signature(load).parameters else {}  # tf-keras has no verbose
    ds = load(spec["path"], labels="inferred" if spec["labelled"] else None, image_size=(height, width),
              color_mode=mode, batch_size=256, shuffle=True, seed=int(spec.get("seed", 0)), **quiet)
    xs, ys = [], []
    for batch in ds:
        x, y = batch if spec["labelled"] else (batch, None)
        xs.append(np.asarray(x))
        if y is not None:
            ys.append(np.asarray(y))
        if sum(len(a) for a in xs) >= int(spec["max_samples"]):
            break
    x = np.concatenate(xs) if xs else np.zeros((0, height, width, channels), np.float32)
    if spec.get("scaling") == "unit":
        x = x / 255.0
    return x, (np.concatenate(ys) if ys else None)


def input_shape_of(model):
    """The model's declared input shape (batch axis included), or None for a model that declares none."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list):
        raise UserError(f"the model has {len(shape)} inputs; bnexp doctor checks single-input models")
    return tuple(shape)


def check_data(model, x, y, source: str, declared) -> int | None:
    """Shape and labels against the model (before any long work); the number of classes, or None."""
    if declared is not None:
        want = declared[1:]
        if not shape_fits(want, x.shape[1:]):
            raise UserError(f"data={source}: samples of shape {x.shape[1:]} do not fit the model's input "
                            f"{tuple(want)} (None: any size)")
    try:
        with precise_bn.statistics_kept(model):
            out = np.asarray(model(x[:2], training=False))
    except Exception as e:
        raise UserError(f"data={source}: samples of shape {x.shape[1:]} do not fit the model: "
                        f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}") from None
    classes = int(out.shape[-1]) if out.ndim == 2 and out.shape[-1] > 1 else None
    if y is not None and classes is not None:
        if len(y) != len(x):
            raise UserError(f"data={source}: {len(x)} samples but {len(y)} labels")
        if y.min() < 0 or y.max() >= classes:
            raise UserError(f"data={source}: labels range over [{y.min()}, {y.max()}] but the model has "
                            f"{classes} outputs (valid labels: 0..{classes - 1})")
    return classes


# ---------------------------------------------------------------- findings


def finding(check, claim, layer, severity, numbers, what, why, fix, kind="measured") -> dict:
    """One finding: `what` is wrong, `why` it matters (with a number and its unit), what to do (`fix`), each one
    sentence. kind "measured": measured on this model as it is now (severity error or warning); kind "latent":
    what would happen after a change the user may make, measured on a temporarily changed model (severity
    "risk", never an error)."""
    return {"check": check, "claim": claim, "kind": kind, "layer": layer,
            "severity": "risk" if kind == "latent" else severity, "what": what, "why": why, "fix": fix,
            "numbers": {k: _num(v) for k, v in numbers.items()}}


def healthy(check, claim, summary) -> dict:
    return {"check": check, "claim": claim, "summary": summary}


def _num(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return round(float(v), 6)
    return v


def shown(value: float, spec: str) -> float:
    """`value` as printed with format `spec`: thresholds are compared with the number the user reads, so a gap
    printed "2.0" is never counted above a 2.0 threshold."""
    return float(format(value, spec))


def names(items, limit: int = 6) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ---------------------------------------------------------------- the model's structure


def sublayers(layer) -> list:
    """A layer's direct sublayers: its `.layers` (models), then whatever else Keras tracks (attributes, lists
    and dicts of custom layers), as models.batch_norm_layers walks them."""
    flatten = getattr(layer, "_flatten_layers", None)
    tracked = list(flatten(include_self=False, recursive=False)) if flatten else []
    out, seen = [], set()
    for sub in [*getattr(layer, "layers", []), *tracked]:
        if id(sub) not in seen:
            seen.add(id(sub))
            out.append(sub)
    return out


def containers(model):
    """The model and every layer nested in it that holds other layers (nested models, custom layers holding
    layers as attributes, lists or dicts), each once; BN layers (and their subclasses) are never containers."""
    seen = set()

    def walk(layer):
        if id(layer) in seen or is_batch_norm(layer):
            return
        seen.add(id(layer))
        subs = sublayers(layer)
        if subs or layer is model:
            yield layer
        for sub in subs:
            yield from walk(sub)

    yield from walk(model)


def bn_ancestry(model) -> dict[int, list]:
    """id(BN layer) -> the layers holding it, outermost first (the model itself left out)."""
    out, seen = {}, {id(model)}

    def walk(layer, chain):
        for sub in sublayers(layer):
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            if is_batch_norm(sub):
                out[id(sub)] = chain
            else:
                walk(sub, [*chain, sub])

    walk(model, [])
    return out


def is_graph_model(layer) -> bool:
    """A functional or Sequential model: its call runs a graph of layers, no user code."""
    return bool(getattr(layer, "_is_graph_network", False)) or type(layer).__name__ in ("Functional", "Sequential")


def fixed_training_nodes(model) -> list[tuple[object, object, bool]]:
    """(container, layer, value) for each layer a functional model calls with `training=` fixed at build time.

    Read from the model's own config: Keras 3 keeps node kwargs as {"kwargs": {...}}, tf-keras as the 4th
    item of each inbound entry."""
    found = []
    for c in containers(model):
        if not is_graph_model(c):
            continue
        try:
            cfg = c.get_config()
        except Exception:  # no build-time graph to read
            continue
        for entry in (cfg or {}).get("layers", []) or []:
            for value in _node_training_values(entry.get("inbound_nodes", [])):
                try:
                    found.append((c, c.get_layer(entry["config"]["name"]), value))
                except (KeyError, ValueError):
                    continue
    return found


def _node_training_values(nodes):
    out = []
    for node in nodes or []:
        if isinstance(node, dict):  # Keras 3
            kw = node.get("kwargs", {}) or {}
            if isinstance(kw.get("training"), bool):
                out.append(kw["training"])
        elif isinstance(node, list):  # tf-keras: [[name, node_index, tensor_index, kwargs], ...]
            for inbound in node:
                if isinstance(inbound, list) and len(inbound) > 3 and isinstance(inbound[3], dict):
                    if isinstance(inbound[3].get("training"), bool):
                        out.append(inbound[3]["training"])
    return out


def bns_under(layer) -> list:
    return [layer] if is_batch_norm(layer) else batch_norm_layers(layer)


def _value(variable) -> np.ndarray:
    return np.array(variable.numpy(), np.float64)


# ---------------------------------------------------------------- which statistics BN normalises with


def bn_modes(fw, model, run) -> dict[str, dict]:
    """Per BN layer (by name), as `run()` calls the model: the `training` value its call received, whether it
    normalised with the batch's statistics, and whether the call changed its moving statistics. Measured, not
    inferred: each BN call runs a second time with its moving mean moved by 10 standard deviations; an output
    that does not move came from batch statistics. Every moving statistic is restored afterwards. `run` must
    execute eagerly. The outputs are compared in TensorFlow, in float32 (a float64 NumPy copy of every BN output
    twice per call was most of this probe's time on a large model; float32 resolves the 1e-5 relative test)."""
    tf = fw.tf
    bns = batch_norm_layers(model)
    seen: dict[str, dict] = {}

    def hook(i, call, inputs, training, **kwargs):
        layer = bns[i]
        out = call(inputs, training=training, **kwargs)
        saved = layer.moving_mean.numpy()
        spread = np.sqrt(np.maximum(layer.moving_variance.numpy(), 0) + float(layer.epsilon))
        layer.moving_mean.assign((saved + 10.0 * spread + 1.0).astype(saved.dtype))
        moved = tf.cast(call(inputs, training=training, **kwargs), tf.float32)
        layer.moving_mean.assign(saved)
        base = tf.cast(out, tf.float32)
        empty = int(tf.size(base)) == 0
        diff = 0.0 if empty else float(tf.reduce_max(tf.abs(moved - base)))
        top = 0.0 if empty else float(tf.reduce_max(tf.abs(base)))
        seen[layer.name] = {"received": None if training is None else bool(training),
                            "batch_statistics": diff <= 1e-5 * (1.0 + top)}
        return out

    with precise_bn.statistics_kept(model):
        before = probes.moving_stats(model)
        with intercepted(bns, hook):
            run()
        changed = probes.layers_changed(before, probes.moving_stats(model))
    for name, mode in seen.items():
        mode["updates"] = bool(changed.get(name))
    return seen


@contextlib.contextmanager
def eager(model):
    """predict and evaluate step by step in Python, so bn_modes sees every BN call."""
    was = getattr(model, "_run_eagerly", None)
    model.run_eagerly = True
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            model.run_eagerly = bool(was) if was is not None else False


def entry_point_modes(fw, model, xs) -> dict[str, dict]:
    """bn_modes for the ways a user runs the model: predict, evaluate, a direct call model(x), and the call fit
    makes, model(x, training=True). An entry point that cannot run (evaluate on a model with several outputs) is
    left out."""
    keras = fw.keras
    predicted = []  # predict's output, evaluate's target (the BN probe returns every output unchanged)
    runs = {"predict": lambda: predicted.append(np.asarray(model.predict(xs, batch_size=len(xs), verbose=0))),
            "call": lambda: model(xs),
            "fit": lambda: model(xs, training=True)}
    out = {}
    with eager(model):
        for name, run in runs.items():
            out[name] = bn_modes(fw, model, run)
        try:
            target = predicted[0]
            model.compile(loss=keras.losses.MeanSquaredError(), run_eagerly=True)
            out["evaluate"] = bn_modes(fw, model, lambda: model.evaluate(xs, target, batch_size=len(xs), verbose=0))
        except Exception:  # noqa: BLE001 - a model evaluate cannot run is checked through the others
            pass
    return {k: out[k] for k in ("predict", "evaluate", "call", "fit") if k in out}


ENTRY_WORDS = {"predict": "predict", "evaluate": "evaluate", "call": "a direct call model(x)",
               "fit": "fit's call model(x, training=True)"}


def entries_text(entries) -> str:
    words = [ENTRY_WORDS[e] for e in entries]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def step_shift(model, layers, xs) -> float:
    """How far one training-mode call on `xs` (what one fit step does) moves these layers' moving means: the
    largest change over channels, in moving standard deviations. Statistics restored afterwards."""
    if not layers:
        return 0.0
    before = [(_value(b.moving_mean), np.sqrt(np.maximum(_value(b.moving_variance), 0) + float(b.epsilon)))
              for b in layers]
    with precise_bn.statistics_kept(model):
        model(xs, training=True)
        after = [_value(b.moving_mean) for b in layers]
    return float(max(np.max(np.abs(a - m) / s) for (m, s), a in zip(before, after)))


def all_layers(layer) -> list:
    """`layer` and every layer in it, each once, a layer before the layers it holds."""
    out, seen = [], set()

    def walk(item):
        if id(item) in seen:
            return
        seen.add(id(item))
        out.append(item)
        if not is_batch_norm(item):
            for sub in sublayers(item):
                walk(sub)

    walk(layer)
    return out


@contextlib.contextmanager
def unfrozen(model, layer):
    """`layer.trainable = True` for the duration (Keras passes it on to every layer inside); every layer's own
    trainable flag restored afterwards, outer layers first so that inner flags are not overwritten."""
    flags = [(item, item.trainable) for item in all_layers(model)]
    try:
        layer.trainable = True
        yield
    finally:
        for item, was in flags:
            item.trainable = was


# ---------------------------------------------------------------- compiled forward passes


def compiled(fw, model, training, sample_shape):
    """model(x, training=training) as a tf.function traced once per mode with the batch axis left open, kept on
    the model (probes.logits traces a second time for a last batch of another size, and a trace of a large model
    costs seconds). Keyed by the BN layers' trainable flags too: a trace bakes them in."""
    cache = model.__dict__.setdefault("_bnexp_doctor_fns", {})
    key = (training, tuple(sample_shape), tuple(layer.trainable for layer in batch_norm_layers(model)))
    if key not in cache:
        tf = fw.tf
        cache[key] = tf.function(lambda x: model(x, training=training),
                                 input_signature=[tf.TensorSpec((None, *sample_shape), tf.float32)])
    return cache[key]


def logits(fw, model, x, training, batch_size: int, index=None) -> np.ndarray:
    """The model's outputs on x[index] (all of x when None), in batches of `batch_size` in that order, called with
    `training`; a training-mode pass leaves the moving statistics as they were. Batches are gathered one at a
    time: no copy of the data."""
    index = np.arange(len(x)) if index is None else index
    fn = compiled(fw, model, training, x.shape[1:])
    with precise_bn.statistics_kept(model) if training else contextlib.nullcontext():
        return np.concatenate([to_numpy(fn(x[index[i:i + batch_size]])) for i in range(0, len(index), batch_size)])


def batch_dependence(fw, model, xs, training) -> tuple[float, np.ndarray]:
    """Max |logit| difference between each sample of `xs` predicted alone and inside the batch `xs`, and the
    batch's logits."""
    together = logits(fw, model, xs, training, len(xs))
    alone = np.concatenate([logits(fw, model, xs[i:i + 1], training, 1) for i in range(len(xs))])
    return float(np.max(np.abs(together - alone))), together


# ---------------------------------------------------------------- population statistics (precise BN, R1)


VARIANCE_CONVENTION = ("biased: the mean over the calibration batches of each batch's variance dividing by m, the "
                       "values per channel in a batch (batch size x positions), as Keras 3's BN computes it; "
                       "tf-keras' fused BN averages the unbiased one, m/(m-1) times larger")


def population_stats(fw, model, batches) -> precise_bn.Recompute:
    """Precise BN's population statistics, with the model called as predict calls it (training=False: dropout and
    every other training-only layer in inference mode) and only BN layers forced to batch statistics (frozen ones
    included, for the pass). The biased variance convention (VARIANCE_CONVENTION). Moving statistics and
    trainable flags are left exactly as they were.

    One compiled pass per batch (a tf.function traced once, `batches` all of one shape): each BN input's
    per-channel moments are computed in the graph, in float64, and only they leave it (eager calls moved
    every BN input out as a float64 array: most of the doctor's time on a large model)."""
    tf = fw.tf
    bns = batch_norm_layers(model)
    traced: dict[int, list] = {}

    def record(i, call, inputs, training, **kwargs):
        flat = tf.reshape(tf.cast(inputs, tf.float64), [-1, tf.shape(inputs)[-1]])
        mean = tf.reduce_mean(flat, 0)
        traced.setdefault(i, []).append((mean, tf.reduce_mean(tf.square(flat - mean), 0), tf.shape(flat)[0]))
        return call(inputs, training=True, **kwargs)

    def moments(x):
        traced.clear()
        model(x, training=False)
        return {str(i): rows for i, rows in traced.items()}  # each BN call: (mean, variance, values per channel)

    sink: dict[int, list] = {i: [] for i in range(len(bns))}
    out = precise_bn.Recompute()
    trainable = [layer.trainable for layer in bns]
    with precise_bn.statistics_kept(model):
        for layer in bns:
            layer.trainable = True  # a frozen BN layer would otherwise ignore training=True
        try:
            with intercepted(bns, record):
                step = tf.function(moments)
                for batch in batches:
                    for i, rows in step(batch).items():
                        sink[int(i)] += [(m.numpy(), v.numpy(), int(n)) for m, v, n in rows]
                    out.forward_passes += 1
        finally:
            for layer, was in zip(bns, trainable):
                layer.trainable = was
    for i, layer in enumerate(bns):
        rows = sink[i]
        if not rows:
            raise RuntimeError(f"BN layer {layer.name} saw no input; is it reachable from the model's call?")
        out.layers.append(precise_bn.LayerStats(layer.name, np.mean([r[0] for r in rows], 0),
                                                np.mean([r[1] for r in rows], 0), min(r[2] for r in rows), len(rows)))
    return out


# ---------------------------------------------------------------- the statistics, layer by layer


def layer_deviation(layer, stats: precise_bn.LayerStats) -> dict:
    """How far one layer's moving statistics are from its population statistics, as BN uses them (with its
    epsilon, so channels with near-zero variance do not dominate). var_factor: by what factor the moving
    variance is off, per channel, on average (exp of the mean |log ratio|); var_direction: larger, smaller or
    mixed over channels; mean_shift_std: |moving - population mean| in population standard deviations,
    averaged over channels."""
    eps = float(layer.epsilon)
    mm = _value(layer.moving_mean)
    mv = _value(layer.moving_variance)
    pv = stats.var_biased
    log_ratio = np.log(np.maximum(mv, 0) + eps) - np.log(pv + eps)
    log_to_std = np.log(np.maximum(mv, 0) + eps) - np.log(np.sqrt(pv) + eps)
    direction = "larger" if np.all(log_ratio > 0) else "smaller" if np.all(log_ratio < 0) else "mixed"
    return {"var_factor": float(np.exp(np.mean(np.abs(log_ratio)))), "var_direction": direction,
            "mean_shift_std": float(np.mean(np.abs(mm - stats.mean) / np.sqrt(pv + eps))),
            "var_vs_std_factor": float(np.exp(np.mean(np.abs(log_to_std)))),
            "negative_variances": int(np.sum(mv < 0)), "channels": int(mv.size)}


def variance_words(d) -> str:
    f = format(d["var_factor"], ".3g")
    if d["var_direction"] == "larger":
        return f"moving variance {f}x the data's"
    if d["var_direction"] == "smaller":
        return f"moving variance 1/{f} of the data's"
    return f"moving variance off from the data's by a factor of {f} per channel (larger in some, smaller in others)"


def deviation_words(d) -> str:
    return f"{variance_words(d)}, moving mean {d['mean_shift_std']:.2f} standard deviations from the data's"


def at_initial_values(stats: dict[str, np.ndarray], name: str) -> bool:
    return bool(np.all(stats[f"{name}.moving_mean"] == 0) and np.all(stats[f"{name}.moving_variance"] == 1))


def accuracy_words(acc) -> str:
    gap = gap_points(acc)
    return (f"held-out accuracy is {acc['moving']:.3f} with the stored statistics and {acc['population']:.3f} with "
            f"statistics recomputed on this data ({gap:+.1f} points)")


def gap_points(acc) -> float:
    """Population minus moving-statistics accuracy in percentage points, from the accuracies as printed (.3f)."""
    return round(100 * (shown(acc["population"], ".3f") - shown(acc["moving"], ".3f")), 1)


def scale_words(d) -> str:
    f = format(float(np.sqrt(d["var_factor"])), ".3g")
    if d["var_direction"] == "mixed":
        return f"BN divides this layer's channels by standard deviations off by a factor of {f} on average"
    small = d["var_direction"] == "larger"
    return (f"BN divides this layer's inputs by a standard deviation {f}x too {'large' if small else 'small'}, so "
            f"the next layer sees activations at {'1/' if small else ''}{f} times the scale it was trained with")


STALE_FIX = ("recompute the statistics on training data after training (precise BN: fix=true writes a recalibrated "
             "copy when that measurably raises held-out accuracy), or, for the next training, use a BN momentum "
             "of about exp(-1/steps) for the number of training steps (C02)")

# domain=shifted: the statistics are expected to differ; the fix is covariate-shift adaptation (R2).
SHIFTED_FIX = ("this data comes from a shifted domain and the BN statistics are the training domain's: adapt them "
               "by recomputing BN statistics on unlabeled samples of this domain (R2, Schneider et al. 2020; a few "
               "hundred samples suffice in bnexp's domain_shift scenario); fix=true writes such an adapted copy "
               "from the data given, to be evaluated on other samples of the domain")


def _statistics_checks(bns, by_name, initial, accuracy, findings, ok, shifted: bool = False) -> bool:
    """C03 (never updated), C10 (implausible), C01 (stale); True when some layer's statistics are off."""
    gap = None if accuracy is None else gap_points(accuracy)
    acc_numbers = {} if accuracy is None else {f"acc_{k}": v for k, v in accuracy.items()}
    at_init, off, implausible = [], [], []
    for layer in bns:
        d = layer_deviation(layer, by_name[layer.name])
        numbers = {**{k: v for k, v in d.items() if k != "var_direction"}, **acc_numbers}
        why = accuracy_words(accuracy) if accuracy else scale_words(d)
        if at_initial_values(initial, layer.name):
            at_init.append(layer.name)
            if accuracy and gap <= 0:
                do = ("retrain with BN's training argument left to fit (or passed through from call()); recomputing "
                      "the statistics does not help this model (measured above: it was trained as if it had no BN)")
            else:
                do = ("retrain with BN's training argument left to fit (or passed through from call()), or "
                      "recompute the statistics (fix=true writes a copy when that measurably raises accuracy)")
            findings.append(finding(
                "moving_stats_at_init", "C03", layer.name, "error", numbers,
                f"{layer.name}: the moving mean and variance are exactly their initial 0 and 1, never updated (BN ran "
                f"with training=False throughout training), while this data's statistics differ ({deviation_words(d)})",
                why, do))
            continue
        if d["negative_variances"]:
            implausible.append(layer.name)
            findings.append(finding(
                "implausible_variance", "C10", layer.name, "error", numbers,
                f"{layer.name}: {d['negative_variances']} of {d['channels']} channels of the moving variance are "
                "negative, which no training produces: the weights were written by hand in the wrong order or slot",
                why, "write the weights in Keras' get_weights() order [gamma, beta, moving_mean, moving_variance], "
                     "or recompute the statistics (fix=true)"))
            continue
        std_factor = shown(d["var_vs_std_factor"], ".3g")
        var_factor = shown(d["var_factor"], ".3g")
        looks_like_std = std_factor < min(STD_LIKE, np.sqrt(var_factor))
        if var_factor > VAR_FACTOR and looks_like_std and shown(d["mean_shift_std"], ".2f") < MEAN_SHIFT / 2:
            implausible.append(layer.name)
            findings.append(finding(
                "implausible_variance", "C10", layer.name, "error", numbers,
                f"{layer.name}: the variance slot holds the data's standard deviation, not its variance (within a "
                f"factor of {std_factor:g} of the standard deviation; {variance_words(d)})",
                why, "write std**2 in the 4th BN weight (Keras' get_weights() order is [gamma, beta, moving_mean, "
                     "moving_variance]), or recompute the statistics (fix=true)"))
            continue
        shift = shown(d["mean_shift_std"], ".2f")
        if var_factor > VAR_FACTOR or shift > MEAN_SHIFT:
            off.append(layer.name)
            strong = var_factor > STRONG_FACTOR or shift > STRONG_SHIFT
            severity = ("error" if gap > ACC_GAP_POINTS else "warning") if gap is not None else (
                "error" if strong else "warning")
            findings.append(finding(
                "moving_vs_population", "R2" if shifted else "C01", layer.name, severity, numbers,
                f"{layer.name}: {deviation_words(d)} (flagged beyond {VAR_FACTOR:g}x or {MEAN_SHIFT:g} standard "
                "deviations)" + ("" if shifted else ": too few training steps for the momentum, or data unlike "
                                                    "the training data"),
                why, SHIFTED_FIX if shifted else STALE_FIX))
    flagged = len(at_init) + len(off) + len(implausible)
    rest = len(bns) - flagged
    if not at_init:
        ok.append(healthy("moving_stats_at_init", "C03", f"all {len(bns)} BN layers' moving statistics were updated"))
    if not implausible:
        ok.append(healthy("implausible_variance", "C10", "no negative variance and no variance that looks like a "
                                                         "standard deviation"))
    if rest:
        clean = [layer_deviation(layer, by_name[layer.name]) for layer in bns
                 if layer.name not in at_init + off + implausible]
        worst = max(clean, key=lambda d: (d["var_factor"], d["mean_shift_std"]))
        which = f"all {len(bns)} BN layers" if not flagged else f"the other {rest} BN layer(s)"
        ok.append(healthy("moving_vs_population", "R2" if shifted else "C01",
                          f"{which}: stored statistics match this data's (worst: {deviation_words(worst)})"))
    return bool(flagged)


# ---------------------------------------------------------------- how each entry point runs BN


def flag_source(model, bn, received, nodes, ancestry) -> tuple[str, str, str]:
    """Where a BN layer's training-mode came from at an inference entry point: (claim, source words, advice)."""
    chain = ancestry.get(id(bn), [])
    for container, layer, value in nodes:
        if value and (layer is bn or layer in chain):
            return ("C04", f"training=True passed to {layer.name!r} when the functional model {container.name!r} was "
                           "built",
                    f"rebuild the model calling {layer.name!r} without training=True (fit then runs BN in training "
                    f"mode and every other call in inference mode) and copy the weights over; until then, run the "
                    f"model through predict/evaluate or call model(x, training=False)")
    owners = [c for c in [model, *chain] if not is_graph_model(c)]
    if received is True and owners:
        owner = owners[-1]
        cls = type(owner).__name__
        try:
            default = inspect.signature(type(owner).call).parameters["training"].default
        except (KeyError, TypeError, ValueError):
            default = None
        if default is True:
            return ("C16", f"{cls}.call() of {owner.name!r}, which defaults to training=True",
                    f"give {cls}.call() the default training=None and pass it on to BN, so inference calls reach BN "
                    "in inference mode")
        return ("C04", f"{cls}.call() of {owner.name!r}, which calls it with training=True",
                f"in {cls}.call(), pass the training argument it receives on to BN (bn(x, training=training)) "
                "instead of True")
    cls = type(bn).__name__
    return ("C04", f"the layer's own class {cls}, which normalises with batch statistics whatever training it "
                   "receives",
            f"fix {cls}.call() so that training=False uses the moving statistics")


def _entry_point_checks(fw, model, x, bns, modes, findings, ok) -> None:
    """Item: every way a user runs the model. C04/C16: a BN layer that normalises with batch statistics under
    predict, evaluate or a direct call, named with where its training=True came from."""
    xs = x[:DEPENDENCE_SAMPLES]
    inference = [e for e in ("predict", "evaluate", "call") if e in modes]
    with precise_bn.statistics_kept(model):
        dep, together = batch_dependence(fw, model, xs, False)
        dep = {False: dep, None: batch_dependence(fw, model, xs, None)[0]}
        scale = max(1.0, float(np.mean(np.abs(together))))
    nodes = fixed_training_nodes(model)
    ancestry = bn_ancestry(model)
    sources: dict[tuple, dict] = {}
    for e in inference:
        for bn in bns:
            mode = modes[e].get(bn.name)
            if mode and mode["batch_statistics"]:
                claim, source, do = flag_source(model, bn, mode["received"], nodes, ancestry)
                entry = sources.setdefault((claim, source, do), {"layers": [], "entries": []})
                if bn.name not in entry["layers"]:
                    entry["layers"].append(bn.name)
                if e not in entry["entries"]:
                    entry["entries"].append(e)
    affected = set()
    for (claim, source, do), hit in sources.items():
        affected.update(hit["entries"])
        flag = None if set(hit["entries"]) == {"call"} else False
        diff = dep[flag] if dep[flag] / scale > BATCH_DEP_TOL else max(dep.values())
        moves = any(modes[e][name]["updates"] for e in hit["entries"] for name in hit["layers"])
        findings.append(finding(
            "batch_dependence", claim, ", ".join(hit["layers"]), "error",
            {"max_logit_diff_alone_vs_batch": diff, "relative": diff / scale, "samples": len(xs),
             "inference_call_changes_moving_stats": moves, "bn_layers_in_training_mode": len(hit["layers"]),
             "entry_points": ", ".join(hit["entries"])},
            f"under {entries_text(hit['entries'])}, BN layer(s) {names(hit['layers'])} normalise with each batch's "
            f"own statistics instead of the stored ones (measured); their training=True comes from {source}",
            f"a prediction depends on the other samples in its batch: a sample alone differs from the same sample "
            f"in a batch of {len(xs)} by up to {diff:.3g} in the logits"
            + (", and every such call overwrites the moving statistics" if moves else ""),
            do))
    fine = [e for e in inference if e not in affected]
    if fine:
        flag = False if any(e != "call" for e in fine) else None
        ok.append(healthy("batch_dependence", "C04",
                          f"{entries_text(fine)}: all {len(bns)} BN layers normalise with their stored statistics "
                          f"(measured); a sample alone and in a batch of {len(xs)} give the same outputs (max |logit "
                          f"diff| {dep[flag]:.1e})"))
    if not sources and max(dep.values()) / scale > BATCH_DEP_TOL:
        findings.append(finding(
            "batch_dependence", "C04", None, "error",
            {"max_logit_diff_alone_vs_batch": max(dep.values()), "relative": max(dep.values()) / scale},
            "predictions depend on the other samples in their batch although every BN layer uses its stored "
            "statistics: another layer of the model computes over the batch",
            f"a sample alone differs from the same sample in a batch of {len(xs)} by up to "
            f"{max(dep.values()):.3g} in the logits",
            "find the layer that mixes samples (its call() in training mode at inference, or a batch-wide op)"))


def _build_time_flag_checks(fw, model, x, modes, findings, ok) -> None:
    """C15: training=False fixed when a functional model was built (the Keras guide's `base(x, training=False)`).
    Measured now: which mode its BN layers run in under fit's call, and whether that call moves their statistics.
    Latent, where the layer is frozen now: the same measured with it temporarily unfrozen (trainable restored)."""
    keras_version = fw.keras.__version__
    nodes = [(c, layer, v) for c, layer, v in fixed_training_nodes(model) if not v and bns_under(layer)]
    if not nodes:
        if not any(v for _, _, v in fixed_training_nodes(model)):
            ok.append(healthy("build_time_training_flag", "C15", "no training= argument fixed when the model was "
                                                                 "built"))
        return
    xs = x[:DEPENDENCE_SAMPLES]
    for _, layer, _ in nodes:
        under = bns_under(layer)
        batch = [b.name for b in under if modes["fit"].get(b.name, {}).get("batch_statistics")]
        shift = step_shift(model, [b for b in under if b.name in batch], xs)
        frozen = not layer.trainable or not any(b.trainable for b in under)
        state = "is frozen (trainable=False)" if frozen else "is trainable"
        numbers = {"fixed_training": False, "trainable": not frozen, "bn_layers": len(under),
                   "bn_layers_batch_statistics_under_fit": len(batch), "step_mean_shift_std": shift}
        if batch:
            findings.append(finding(
                "build_time_training_flag", "C15", layer.name, "warning", numbers,
                f"{layer.name!r} {state} and was called with training=False when the model was built, but under fit's "
                f"call Keras {keras_version} overrides it: {len(batch)} of its {len(under)} BN layers normalise with "
                "batch statistics and update their moving statistics (measured)",
                f"the guide's intent (BN fixed while fine-tuning) does not hold: one fit step on {len(xs)} images "
                f"moves their moving means by up to {shift:.3g} standard deviations",
                "if BN should stay in inference mode while fine-tuning, set those BN layers' trainable=False (Keras "
                "then ignores training=True for them); if batch statistics during fit are what you want, call "
                f"{layer.name!r} without training=False"))
            continue
        ok.append(healthy("build_time_training_flag", "C15",
                          f"{layer.name!r} {state} and was called with training=False at build time: under fit's "
                          f"call its {len(under)} BN layers normalise with their stored statistics, which do not "
                          "change (measured)"))
        if not frozen:
            continue
        with unfrozen(model, layer):
            latent = bn_modes(fw, model, lambda: model(xs, training=True))
            would = [b for b in under if latent.get(b.name, {}).get("batch_statistics")]
            shift = step_shift(model, would, xs)
        if would:
            findings.append(finding(
                "build_time_training_flag", "C15", layer.name, "risk",
                {**numbers, "bn_layers_batch_statistics_if_unfrozen": len(would), "step_mean_shift_std": shift},
                f"if you unfreeze {layer.name!r} (trainable=True) to fine-tune it, Keras {keras_version} overrides the "
                f"training=False it was called with: measured with it temporarily unfrozen, {len(would)} of its "
                f"{len(under)} BN layers then normalise with batch statistics under fit",
                f"fine-tuning would then update their moving statistics: one fit step on {len(xs)} images moves the "
                f"moving means by up to {shift:.3g} standard deviations",
                "when you unfreeze it, also set its BN layers' trainable=False (for layer in base layers: if "
                "isinstance(layer, BatchNormalization): layer.trainable = False) to keep them in inference mode",
                kind="latent"))
        else:
            ok.append(healthy("build_time_training_flag", "C15",
                              f"{layer.name!r} unfrozen (measured on a temporarily unfrozen model): its BN layers "
                              "would still normalise with their stored statistics under fit"))


def _frozen_bn_checks(model, bns, by_name, modes, findings, ok) -> None:
    """C06: BN layers with trainable=False next to layers that still train, in the same model or custom layer."""
    frozen_found = False
    for c in containers(model):
        subs = sublayers(c)
        frozen = [layer for layer in subs if is_batch_norm(layer) and not layer.trainable]
        others = [layer for layer in subs if not is_batch_norm(layer) and layer.trainable and layer.trainable_weights]
        if not (c.trainable and frozen and others):
            continue
        frozen_found = True
        stored = [b.name for b in frozen if not modes["fit"].get(b.name, {}).get("batch_statistics")]
        worst = max((layer_deviation(b, by_name[b.name]) for b in frozen), key=lambda d: d["var_factor"])
        findings.append(finding(
            "frozen_bn_in_trainable_base", "C06", c.name, "warning",
            {"frozen_bn_layers": len(frozen), "trainable_layers": len(others),
             "trainable_weights": int(sum(np.prod(w.shape) for layer in others for w in layer.trainable_weights)),
             "stored_statistics_under_fit": len(stored), "worst_var_factor": worst["var_factor"],
             "worst_mean_shift_std": worst["mean_shift_std"]},
            f"BN layer(s) {names(b.name for b in frozen)} are frozen (trainable=False) while {len(others)} other "
            f"layer(s) of {c.name!r} still train; under fit's call {len(stored)} of them normalise with their stored "
            "statistics, which no longer follow the layers before them (measured)",
            f"each fine-tuning step can move their inputs away from those statistics; now the worst of them is at "
            f"{deviation_words(worst)}",
            "after fine-tuning, recompute the statistics (fix=true), or freeze the whole base; nothing to do while "
            "the statistics still match"))
    if not frozen_found:
        ok.append(healthy("frozen_bn_in_trainable_base", "C06", "no frozen BN layer inside a model or layer that "
                                                                "still trains"))


def _small_batch_checks(bns, by_name, request, findings, ok) -> None:
    """C11: values per channel BN averages over in one training batch."""
    tbs = request.get("train_batch_size")
    if not tbs:
        return
    calib_bs = int(request["batch_size"])
    tiny = []
    for layer in bns:
        positions = max(by_name[layer.name].m // calib_bs, 1)
        values = int(tbs) * positions
        if values < TINY_GROUP:
            tiny.append(layer.name)
            findings.append(finding(
                "small_batch_groups", "C11", layer.name, "warning",
                {"train_batch_size": int(tbs), "values_per_channel": values, "positions_per_sample": positions},
                f"{layer.name}: at training batch size {tbs} it estimates each channel's mean and variance from "
                f"{values} values per batch (fewer than {TINY_GROUP})",
                f"statistics from {values} values per channel are noisy enough to cost accuracy (bnexp's batch_size "
                "scenario measures BN losing accuracy at batch sizes 2 and 4)",
                "train with a larger batch, GroupNormalization / LayerNormalization, or "
                "BatchNormalization(renorm=True), and recompute the population statistics after training (fix=true)"))
    if not tiny:
        ok.append(healthy("small_batch_groups", "C11", f"at training batch size {tbs} every BN layer averages over "
                                                       f">= {TINY_GROUP} values per channel"))


# ---------------------------------------------------------------- Dropout feeding BN (C21), float32 variance (C18)


# C21: a BN fed by Dropout learns its moving variance with dropout on (inverted dropout at rate p inflates a
# zero-mean input's variance by 1/(1-p)) but sees the smaller dropout-off variance at inference. 1.5 is the
# geometric midpoint of bnexp's conformance probe (median moving / inference variance 2.4 for Dropout(0.5)->BN,
# 0.97 for BN->Dropout) and flags rates from about 1/3 up; sampling noise and momentum lag of a healthy BN stay
# well inside it (the healthy zoo models are within the C01 factor of 2, measured by the same statistics).
DROPOUT_VAR_RATIO = 1.5
# C18: Keras 3's torch backend computes BN's variance as E[x^2] - E[x]^2 in float32, whose relative error is about
# float32 eps * (mean / std)^2 (cancellation of two numbers of size mean^2); the C18 rule calls 10% wrong.
FLOAT32_EPS = float(np.finfo(np.float32).eps)
TORCH_VAR_ERROR = 0.10


def _inbound_names(nodes):
    """Names of the layers feeding a functional model's layer, from its config's inbound_nodes: Keras 3 keeps
    them as {"keras_history": [name, node, tensor]}, tf-keras as [name, node, tensor, kwargs] lists (lists or
    tuples, as get_config() returns them)."""
    if isinstance(nodes, dict):
        if isinstance(nodes.get("keras_history"), (list, tuple)):
            yield nodes["keras_history"][0]
            return
        for value in nodes.values():
            yield from _inbound_names(value)
    elif isinstance(nodes, (list, tuple)):
        if len(nodes) >= 3 and isinstance(nodes[0], str) and isinstance(nodes[1], int):
            yield nodes[0]
            return
        for item in nodes:
            yield from _inbound_names(item)


def is_dropout(layer) -> bool:
    """Dropout and its relatives (SpatialDropout2D, ...) with a rate above 0."""
    kinds = {cls.__name__ for cls in type(layer).__mro__}
    return any("Dropout" in k for k in kinds) and float(getattr(layer, "rate", 0) or 0) > 0


def dropout_feeding(model) -> dict[str, object]:
    """BN layer name -> the Dropout layer whose output is its input, in every Sequential or functional model
    inside `model` (a custom layer's call() is code, not a graph: not read)."""
    out = {}
    for c in containers(model):
        if not is_graph_model(c):
            continue
        if type(c).__name__ == "Sequential":
            layers = [layer for layer in c.layers if type(layer).__name__ != "InputLayer"]
            pairs = list(zip(layers, layers[1:]))
        else:
            try:
                entries = (c.get_config() or {}).get("layers", []) or []
                pairs = [(c.get_layer(name), c.get_layer(entry["config"]["name"]))
                         for entry in entries for name in _inbound_names(entry.get("inbound_nodes", []))]
            except Exception:  # noqa: BLE001 - no readable graph: nothing to say about this container
                continue
        out.update({bn.name: src for src, bn in pairs if is_batch_norm(bn) and is_dropout(src)})
    return out


def _dropout_checks(model, bns, by_name, findings, ok) -> None:
    """C21: per BN fed by Dropout, median over channels of moving variance / the variance of its input at
    inference (dropout off: the population statistics' pass)."""
    feeding = dropout_feeding(model)
    for layer in bns:
        if layer.name not in feeding:
            continue
        eps = float(layer.epsilon)
        ratio = (np.maximum(_value(layer.moving_variance), 0) + eps) / (by_name[layer.name].var_biased + eps)
        median = float(np.median(ratio))
        drop = feeding[layer.name]
        rate = float(drop.rate)
        if shown(median, ".3g") > DROPOUT_VAR_RATIO:
            findings.append(finding(
                "dropout_before_bn", "C21", layer.name, "warning",
                {"dropout": drop.name, "dropout_rate": rate, "median_var_ratio": median,
                 "max_var_ratio": float(np.max(ratio)), "channels": int(ratio.size)},
                f"{layer.name} takes its input from {drop.name} (Dropout rate {rate:g}): its moving variance, learned "
                f"with dropout on, is {median:.3g}x the variance of its input at inference (median over "
                f"{ratio.size} channels; flagged above {DROPOUT_VAR_RATIO:g}x)",
                f"at inference dropout is off, so BN divides by a standard deviation {np.sqrt(median):.3g}x too "
                "large and the next layer sees activations at a smaller scale than in training (variance shift, "
                "Li et al. CVPR 2019)",
                "put Dropout after BN (BN -> Dropout), or recompute the statistics with dropout off (precise BN: "
                "fix=true)"))
        else:
            ok.append(healthy("dropout_before_bn", "C21",
                              f"{layer.name} follows {drop.name} (Dropout rate {rate:g}); its moving variance is "
                              f"{median:.3g}x its input's variance at inference (flagged above "
                              f"{DROPOUT_VAR_RATIO:g}x)"))


def _torch_precision_checks(bns, by_name, findings) -> None:
    """C18 (latent): the float32 error of E[x^2]-E[x]^2 on the torch backend, eps * (|mean| / std)^2, at each BN's
    worst channel (std with BN's epsilon: the error relative to what BN divides by)."""
    for layer in bns:
        s = by_name[layer.name]
        ratio = np.abs(s.mean) / np.sqrt(s.var_biased + float(layer.epsilon))
        worst = int(np.argmax(ratio))
        error = FLOAT32_EPS * float(ratio[worst]) ** 2
        if error > TORCH_VAR_ERROR:
            findings.append(finding(
                "torch_variance_precision", "C18", layer.name, "risk",
                {"mean_over_std": float(ratio[worst]), "channel": worst, "relative_variance_error": error},
                f"{layer.name}: channel {worst} of its input has mean {float(s.mean[worst]):.4g} and standard "
                f"deviation {float(np.sqrt(s.var_biased[worst])):.3g} on this data, |mean|/std = "
                f"{float(ratio[worst]):.3g}",
                f"on Keras 3's torch backend BN computes the variance as E[x^2]-E[x]^2 in float32, with a relative "
                f"error of about float32 eps x (mean/std)^2 = {100 * error:.3g}% here (over the C18 rule's "
                f"{100 * TORCH_VAR_ERROR:g}%); TensorFlow, which runs this model now, does not",
                "before moving the model to the torch backend, normalise its inputs (subtract their mean) or "
                "keep it on TensorFlow or JAX", kind="latent"))


# ---------------------------------------------------------------- the recalibrated copy (fix=true)


FIX_RULE = ("recommended only if the 95% interval of the held-out accuracy change lies above 0: a paired comparison "
            "of the same held-out images before and after, exact (Clopper-Pearson) on the images whose prediction "
            "changed from right to wrong or wrong to right, equivalent to an exact two-sided McNemar test at 5%")


def paired_change(before_right: np.ndarray, after_right: np.ndarray) -> dict:
    """Accuracy change after - before on the same images with its exact 95% interval (see FIX_RULE)."""
    from scipy import stats

    n = len(before_right)
    b = int(np.sum(before_right & ~after_right))  # right -> wrong
    c = int(np.sum(~before_right & after_right))  # wrong -> right
    k = b + c
    if k == 0:
        lo = hi = 0.0
        p = 1.0
    else:
        p_lo = float(stats.beta.ppf(0.025, c, b + 1)) if c > 0 else 0.0
        p_hi = float(stats.beta.ppf(0.975, c + 1, b)) if b > 0 else 1.0
        lo, hi = k / n * (2 * p_lo - 1), k / n * (2 * p_hi - 1)
        p = float(stats.binomtest(c, k, 0.5).pvalue)
    return {"held_out": n, "right_to_wrong": b, "wrong_to_right": c, "change": (c - b) / n, "interval": [lo, hi],
            "p_value": p, "recommended": bool(lo > 0)}


def _load_for_copy(fw, request):
    """The original model with its compile settings and optimizer state where Keras can restore them; what the
    copy keeps and drops."""
    path, module, trust = request["model"], request.get("custom_objects"), bool(request.get("trust_model"))
    try:
        with contextlib.redirect_stderr(sys.stdout):
            model = fw.keras.models.load_model(path, custom_objects=custom_objects(module), compile=True,
                                               safe_mode=not trust)
    except Exception as e:  # noqa: BLE001 - a custom loss or metric Keras cannot rebuild: the weights still load
        model = load_model(fw, path, module, trust)
        first = (str(e).strip().splitlines() or [""])[0][:160]
        return model, [], [f"compile settings and optimizer state (Keras could not restore them: {first})"]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return model, [], ["nothing: the file holds no compile settings or optimizer state"]
    variables = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    step = int(np.asarray(optimizer.iterations)) if getattr(optimizer, "iterations", None) is not None else 0
    kept = [f"compile settings (loss, metrics) and the {type(optimizer).__name__} optimizer"
            + (f" with its state ({len(variables)} variables, step {step})" if step else "")]
    dropped = [] if step else ["the optimizer's state: Keras did not restore it from the file (the optimizer "
                               "restarts at step 0)"]
    return model, kept, dropped


def _recalibrated_copy(fw, stats, request, x, held, y_held, before) -> dict:
    """Population statistics written into a copy of the original (compile settings and optimizer state kept where
    Keras restores them), saved beside the report, reloaded, and judged on the held-out images x[held] (FIX_RULE)
    against `before`, which of them the original gets right. A copy that is not recommended is deleted; without
    labels (y_held None) the copy is kept, unjudged."""
    target = Path(request["fix_path"])
    if target.resolve() == Path(request["model"]).resolve() or target.exists():
        raise UserError(f"fix=true would write {target}, which exists; bnexp doctor never overwrites a file: "
                        "remove it or choose another out=")
    copy, kept, dropped = _load_for_copy(fw, request)
    copy_bns = batch_norm_layers(copy)
    if [b.name for b in copy_bns] != [s.name for s in stats.layers]:
        raise RuntimeError("the reloaded model's BN layers differ from the checked model's")
    for layer, s in zip(copy_bns, stats.layers):
        layer.moving_mean.assign(s.mean.astype(np.float32))
        layer.moving_variance.assign(s.var_biased.astype(np.float32))
    candidate = target.with_name(f".candidate-{target.name}")
    if candidate.exists():
        shutil.rmtree(candidate) if candidate.is_dir() else candidate.unlink()
    copy.save(str(candidate))
    out = {"calibration_batches": stats.forward_passes,
           "variance": VARIANCE_CONVENTION, "mode": "the model called as predict calls it (training=False), only the "
                                                    "BN layers in training mode", "rule": FIX_RULE,
           "kept": ["the architecture and every weight, the BN moving statistics replaced", *kept],
           "dropped": dropped}
    if y_held is None:
        candidate.rename(target)
        return {**out, "status": "unjudged", "path": str(target)}
    reloaded = load_model(fw, str(candidate), request.get("custom_objects"), bool(request.get("trust_model")))
    after = np.argmax(logits(fw, reloaded, x, False, int(request["batch_size"]), held), -1) == y_held
    judged = paired_change(before, after)
    out.update(accuracy_before=float(np.mean(before)), accuracy_after=float(np.mean(after)), **judged)
    if judged["recommended"]:
        candidate.rename(target)
        return {**out, "status": "recommended", "path": str(target)}
    shutil.rmtree(candidate) if candidate.is_dir() else candidate.unlink()
    return {**out, "status": "not_recommended", "path": None}


# ---------------------------------------------------------------- the diagnosis


def diagnose(request: dict, fw=None) -> dict:
    """Run every check; the report (doctor.json's content). Raises UserError on bad input."""
    fw = fw or activate(request["semantics"])
    trust = bool(request.get("trust_model"))
    model = load_model(fw, request["model"], request.get("custom_objects"), trust)
    report = {"model": request["model"], "format": request["format"], "semantics": request["semantics"],
              "keras_version": fw.keras.__version__, "tensorflow_version": fw.tf.__version__,
              "trust_model": trust, "findings": [], "healthy": []}
    bns = batch_norm_layers(model)
    report["bn_layers"] = [layer.name for layer in bns]
    ancestry = bn_ancestry(model)
    report["bn_holders"] = {layer.name: [c.name for c in ancestry.get(id(layer), [])] for layer in bns}
    if not bns:
        report["note"] = "the model has no BatchNormalization layer: nothing to check"
        return report
    initial = probes.moving_stats(model)  # before any call: what the file holds
    declared = input_shape_of(model)
    x, y = load_data(fw, request["data"], declared)
    source = request["data"]["source"]
    classes = check_data(model, x, y, source, declared)
    labelled = y is not None and classes is not None

    bs = int(request["batch_size"])
    order = np.random.default_rng(int(request["data"].get("seed", 0))).permutation(len(x))
    if labelled:  # population statistics from one half, accuracies on the other: no image used for both
        half = len(x) // 2
        calib, held = order[:half], order[half:]
    else:
        calib, held = order, order[:0]
    size = min(bs, len(calib))
    n_full = max(len(calib) // bs, 1)  # full batches only, so every batch has the same number of values per channel
    if size < 2:
        raise UserError(f"data={source}: {len(x)} samples are too few to estimate BN statistics (need at least 2, "
                        f"better hundreds)")
    report["data"] = {"source": source, "split": request["data"].get("split"), "samples": int(len(x)),
                      "calibration": int(n_full * size), "held_out": int(len(held)),
                      "labels": bool(labelled), "batch_size": bs, "input_shape": list(x.shape[1:])}
    stats = population_stats(fw, model, (x[calib[i * size:(i + 1) * size]] for i in range(n_full)))
    by_name = {s.name: s for s in stats.layers}

    accuracy, right = None, None
    if labelled:  # the held-out images with the stored, the recomputed and each batch's own statistics
        y_held = y[held]
        with precise_bn.statistics_kept(model):  # a model that hard-codes training=True updates them in any pass
            right = {"moving": np.argmax(logits(fw, model, x, False, bs, held), -1) == y_held}
            with precise_bn.swapped(model, stats):
                right["population"] = np.argmax(logits(fw, model, x, False, bs, held), -1) == y_held
            right["batch"] = np.argmax(logits(fw, model, x, True, bs, held), -1) == y_held
        accuracy = {k: float(np.mean(v)) for k, v in right.items()}
        report["accuracy"] = accuracy

    findings, ok = report["findings"], report["healthy"]
    explained = _statistics_checks(bns, by_name, initial, accuracy, findings, ok,
                                   shifted=request.get("domain") == "shifted")
    if accuracy is not None and gap_points(accuracy) > ACC_GAP_POINTS and not explained:
        findings.append(finding(
            "accuracy_gap", "C01", None, "error", {**{f"acc_{k}": v for k, v in accuracy.items()},
                                                   "gap_points": gap_points(accuracy)},
            "no single BN layer's statistics are far enough off to be flagged, but together the stored statistics "
            "cost accuracy", accuracy_words(accuracy), STALE_FIX))
    modes = entry_point_modes(fw, model, x[:DEPENDENCE_SAMPLES])
    report["entry_points"] = {e: sorted(n for n, m in modes[e].items() if m["batch_statistics"]) for e in modes}
    _entry_point_checks(fw, model, x, bns, modes, findings, ok)
    _build_time_flag_checks(fw, model, x, modes, findings, ok)
    _frozen_bn_checks(model, bns, by_name, modes, findings, ok)
    _small_batch_checks(bns, by_name, request, findings, ok)
    _dropout_checks(model, bns, by_name, findings, ok)
    _torch_precision_checks(bns, by_name, findings)
    if request.get("fix"):
        report["fix"] = _recalibrated_copy(fw, stats, request, x, held, y[held] if labelled else None,
                                           right and right["moving"])
    return report


def main(request_path: str, result_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    result = {"status": "failed"}
    try:
        report = diagnose(request)
        Path(request["out"], "doctor.json").write_text(json.dumps(report, indent=2))
        result = {"status": "ok"}
    except UserError as e:
        result = {"status": "bad_input", "error": str(e)}
    except Exception as e:  # a crash is reported with its traceback in the log, never silently
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
