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
import sys
import traceback
from pathlib import Path

import numpy as np

from bnexp.doctor import shape_fits
from bnexp.errors import UserError
from bnexp.model_safety import TRUST_HINT
from bnexp.toolkit import precise_bn, probes
from bnexp.toolkit.framework import activate
from bnexp.toolkit.models import batch_norm_layers, is_batch_norm

# Thresholds of the checks (why each value: see the comment beside it).
VAR_LOG_RATIO = np.log(2.0)      # moving variance off by more than 2x from the population one (mean |log|)
MEAN_SHIFT = 0.5                 # moving mean off by more than half a population standard deviation
STRONG_LOG_RATIO = np.log(4.0)   # without labels: this far off is an error, not a warning
STRONG_SHIFT = 1.0
ACC_GAP = 0.02                   # accuracy points that make a statistics finding an error (the claims' 2-point margin)
BATCH_DEP_TOL = 1e-3             # relative logit change alone vs in batch beyond float rounding of other kernels
STD_LIKE = np.log(1.25)          # slot 4 within 25% of the population std (and far from the variance): C10
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


# ---------------------------------------------------------------- checks


def finding(check, claim, layer, severity, numbers, fix) -> dict:
    return {"check": check, "claim": claim, "layer": layer, "severity": severity,
            "numbers": {k: _num(v) for k, v in numbers.items()}, "fix": fix}


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


def layer_deviation(layer, stats: precise_bn.LayerStats) -> dict:
    """How far one layer's moving statistics are from its population statistics, as BN uses them (with its
    epsilon, so channels with near-zero variance do not dominate)."""
    eps = float(layer.epsilon)
    mm = np.asarray(layer.moving_mean, np.float64)
    mv = np.asarray(layer.moving_variance, np.float64)
    pv = stats.var_biased
    log_ratio = np.log(np.maximum(mv, 0) + eps) - np.log(pv + eps)
    log_to_std = np.log(np.maximum(mv, 0) + eps) - np.log(np.sqrt(pv) + eps)
    return {"var_log_ratio": float(np.mean(log_ratio)), "var_log_ratio_abs": float(np.mean(np.abs(log_ratio))),
            "mean_shift_std": float(np.mean(np.abs(mm - stats.mean) / np.sqrt(pv + eps))),
            "var_vs_std_log_abs": float(np.mean(np.abs(log_to_std))),
            "negative_variances": int(np.sum(mv < 0)), "channels": int(mv.size)}


def at_initial_values(stats: dict[str, np.ndarray], name: str) -> bool:
    return bool(np.all(stats[f"{name}.moving_mean"] == 0) and np.all(stats[f"{name}.moving_variance"] == 1))


@contextlib.contextmanager
def training_flags_seen(bns):
    """Record the `training` value each BN layer's call receives."""
    seen: dict[str, set] = {layer.name: set() for layer in bns}
    for layer in bns:
        original = layer.call

        def wrapped(inputs, training=None, _name=layer.name, _orig=original, **kwargs):
            seen[_name].add(None if training is None else bool(training))
            return _orig(inputs, training=training, **kwargs)

        layer.call = wrapped
    try:
        yield seen
    finally:
        for layer in bns:
            del layer.call


def flags_received(model, x, training) -> dict[str, set]:
    bns = batch_norm_layers(model)
    with precise_bn.statistics_kept(model), training_flags_seen(bns) as seen:
        model(x, training=training)
    return seen


def containers(model):
    """The model and every model nested in it."""
    yield model
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and not is_batch_norm(layer):
            yield from containers(layer)


def fixed_training_nodes(model) -> list[tuple[object, object, bool]]:
    """(container, layer, value) for each layer a functional model calls with `training=` fixed at build time.

    Read from the model's own config: Keras 3 keeps node kwargs as {"kwargs": {...}}, tf-keras as the 4th
    item of each inbound entry."""
    found = []
    for c in containers(model):
        try:
            cfg = c.get_config()
        except Exception:  # a subclassed model without get_config: no build-time graph to read
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
    xc = x[calib]
    n_full = max(len(xc) // bs, 1)  # full batches only, so every batch has the same number of values per channel
    batches = [xc[i * bs:(i + 1) * bs] for i in range(n_full)]
    if len(batches[0]) < 2:
        raise UserError(f"data={source}: {len(x)} samples are too few to estimate BN statistics (need at least 2, "
                        f"better hundreds)")
    report["data"] = {"source": source, "split": request["data"].get("split"), "samples": int(len(x)),
                      "calibration": int(n_full * len(batches[0])), "held_out": int(len(held)),
                      "labels": bool(labelled), "batch_size": bs, "input_shape": list(x.shape[1:])}
    stats = precise_bn.population_stats(model, batches)
    by_name = {s.name: s for s in stats.layers}

    accuracy = None
    if labelled:
        xe, ye = x[held], y[held]
        with precise_bn.statistics_kept(model):
            accuracy = {"moving": probes.accuracy(model, xe, ye, False, bs),
                        "population": probes.accuracy_precise(model, xe, ye, stats, batch_size=bs),
                        "batch": probes.accuracy(model, xe, ye, True, bs)}
        report["accuracy"] = accuracy
    gap = None if accuracy is None else accuracy["population"] - accuracy["moving"]
    acc_numbers = {} if accuracy is None else {f"acc_{k}": v for k, v in accuracy.items()}

    findings, ok = report["findings"], report["healthy"]
    explained = _statistics_checks(bns, by_name, initial, gap, acc_numbers, findings, ok,
                                   shifted=request.get("domain") == "shifted")
    if gap is not None and gap > ACC_GAP and not explained:
        findings.append(finding(
            "accuracy_gap", "C01", None, "error", {**acc_numbers, "gap": gap},
            "inference accuracy with the stored moving statistics is below the accuracy with population "
            "statistics recomputed on this data: recompute them after training (precise BN: bnexp doctor "
            "fix=true writes a recalibrated copy)"))
    _batch_dependence_check(model, x, bns, findings, ok)
    _structure_checks(model, x, bns, by_name, request, findings, ok, fw.keras.__version__)
    if request.get("fix"):
        report["fix"] = _recalibrated_copy(fw, model, stats, request, x[held] if labelled else None,
                                           y[held] if labelled else None, accuracy)
    return report


# domain=shifted: the statistics are expected to differ; the fix is covariate-shift adaptation (R2).
SHIFTED_FIX = ("this data comes from a shifted domain, and the BN statistics are the training domain's: adapt "
               "them by recomputing BN statistics on unlabeled samples of this domain (R2, Schneider et al. 2020; "
               "measured in bnexp's domain_shift scenario, where a few hundred samples suffice). fix=true writes "
               "such an adapted copy from the data given; evaluate it on other samples of the domain")


def _statistics_checks(bns, by_name, initial, gap, acc_numbers, findings, ok, shifted: bool = False) -> bool:
    """C03 (never updated), C10 (implausible), C01 (stale); True when some layer's statistics are off."""
    severity_from_gap = None if gap is None else ("error" if gap > ACC_GAP else "warning")
    at_init, off, std_like, negative = [], [], [], []
    for layer in bns:
        d = layer_deviation(layer, by_name[layer.name])
        if at_initial_values(initial, layer.name):
            at_init.append(layer.name)
            findings.append(finding(
                "moving_stats_at_init", "C03", layer.name, "error",
                {"channels": d["channels"], **acc_numbers},
                "the moving mean and variance are exactly their initial 0 and 1: they were never updated, e.g. "
                "BN was called with training=False (or in a custom loop calling model(x, training=False)) while "
                "training, so the model was trained as if it had no BN. Retrain with BN's training argument left to "
                "fit (or passed through from call()); fix=true recomputes the statistics, which helps only where "
                "the accuracy with population statistics above is higher"))
            continue
        if d["negative_variances"]:
            negative.append(layer.name)
            findings.append(finding(
                "implausible_variance", "C10", layer.name, "error", d,
                "the moving variance has negative entries, which no training produces: the weights were written by "
                "hand in the wrong order or slot; Keras' get_weights() order is [gamma, beta, moving_mean, "
                "moving_variance]. Recompute the statistics (fix=true)"))
            continue
        looks_like_std = d["var_vs_std_log_abs"] < min(STD_LIKE, d["var_log_ratio_abs"] / 2)
        if d["var_log_ratio_abs"] > VAR_LOG_RATIO and looks_like_std and d["mean_shift_std"] < MEAN_SHIFT / 2:
            std_like.append(layer.name)
            findings.append(finding(
                "implausible_variance", "C10", layer.name, "error", d,
                "the 4th BN weight (moving_variance) matches the population standard deviation, not the variance: "
                "a standard deviation was written where Keras expects a variance (get_weights() order is [gamma, "
                "beta, moving_mean, moving_variance]). Write std**2 there, or recompute the statistics (fix=true)"))
            continue
        if d["var_log_ratio_abs"] > VAR_LOG_RATIO or d["mean_shift_std"] > MEAN_SHIFT:
            off.append(layer.name)
            strong = d["var_log_ratio_abs"] > STRONG_LOG_RATIO or d["mean_shift_std"] > STRONG_SHIFT
            severity = severity_from_gap or ("error" if strong else "warning")
            keep = ("var_log_ratio", "var_log_ratio_abs", "mean_shift_std", "channels")
            findings.append(finding(
                "moving_vs_population", "R2" if shifted else "C01", layer.name, severity,
                {**{k: d[k] for k in keep}, **acc_numbers}, SHIFTED_FIX if shifted else
                "the moving statistics are far from the population statistics of this data: too few training "
                "steps for the momentum (e.g. momentum 0.99 keeps about 0.99^steps of the initial 0/1), or the "
                "data differs from what the model was trained on. Recompute them after training (precise BN; "
                "fix=true writes a recalibrated copy), or use momentum about exp(-1/steps) (C02)"))
    if not at_init:
        ok.append(healthy("moving_stats_at_init", "C03", f"all {len(bns)} BN layers' moving statistics were updated"))
    if not (negative or std_like):
        ok.append(healthy("implausible_variance", "C10", "no negative variance; no variance that looks like a "
                                                         "standard deviation"))
    if not off:
        worst = max((layer_deviation(layer, by_name[layer.name]) for layer in bns if layer.name not in at_init),
                    key=lambda d: d["var_log_ratio_abs"], default=None)
        summary = "no layer to compare" if worst is None else (
            f"moving vs population statistics agree (worst layer: variance |log-ratio| {worst['var_log_ratio_abs']:.2f}"
            f", mean shift {worst['mean_shift_std']:.2f} std)")
        ok.append(healthy("moving_vs_population", "C01", summary))
    return bool(at_init or off or negative or std_like)


def _batch_dependence_check(model, x, bns, findings, ok) -> None:
    """C04: a sample predicted alone vs inside a batch, in inference mode (what predict/evaluate use)."""
    xs = x[:DEPENDENCE_SAMPLES]
    with precise_bn.statistics_kept(model):
        diff = probes.batch_dependence(model, xs, training=False, batch_size=len(xs))
        scale = max(1.0, float(np.mean(np.abs(probes.logits(model, xs, False, len(xs))))))
    with precise_bn.statistics_kept(model):
        before = probes.moving_stats(model)
        model(xs, training=False)
        changed = probes.stats_changed(before, probes.moving_stats(model))
    in_training = sorted(name for name, flags in flags_received(model, xs[:4], False).items() if True in flags)
    if diff / scale > BATCH_DEP_TOL or changed:
        findings.append(finding(
            "batch_dependence", "C04", ", ".join(in_training) or None, "error",
            {"max_logit_diff_alone_vs_batch": diff, "relative": diff / scale, "samples": len(xs),
             "inference_call_changes_moving_stats": changed, "bn_layers_in_training_mode": len(in_training)},
            "predictions in inference mode depend on the other samples of the batch: BN is left in training mode "
            "(training=True hard-coded in call() or at build time, or a layer before BN that defaults to "
            "training=True, C16). Pass the training argument that call() receives on to BN, or leave it out"))
    else:
        ok.append(healthy("batch_dependence", "C04", f"a sample alone and inside a batch of {len(xs)} give the same "
                                                     f"outputs (max |logit diff| {diff:.1e})"))


def _structure_checks(model, x, bns, by_name, request, findings, ok, keras_version) -> None:
    # C06: frozen BN layers next to trainable layers in the same (sub)model.
    frozen_found = False
    for c in containers(model):
        frozen = [layer.name for layer in c.layers if is_batch_norm(layer) and not layer.trainable]
        others = [layer for layer in c.layers
                  if not is_batch_norm(layer) and layer.trainable and layer.trainable_weights]
        if c.trainable and frozen and others:
            frozen_found = True
            findings.append(finding(
                "frozen_bn_in_trainable_base", "C06", c.name, "warning",
                {"frozen_bn_layers": len(frozen), "trainable_layers": len(others),
                 "trainable_weights": int(sum(np.prod(w.shape) for layer in others for w in layer.trainable_weights))},
                f"BN layers {', '.join(frozen)} are frozen while other layers of {c.name!r} still train: in TF2 "
                "semantics a frozen BN normalizes with the statistics it had when frozen while the layers before it "
                "keep changing its input (under Keras <= 2.2.4 / TF1 it would even use batch statistics in training "
                "and the stale ones at inference, C06). Harmless while moving_vs_population finds no drift; otherwise "
                "recompute the statistics after fine-tuning (fix=true), or freeze the whole base"))
    if not frozen_found:
        ok.append(healthy("frozen_bn_in_trainable_base", "C06", "no frozen BN layer inside a trainable (sub)model"))

    # C15: training= fixed while a functional model was built: does the installed Keras honour it?
    nodes = fixed_training_nodes(model)
    if nodes:
        sample = x[:4]
        seen = {value: flags_received(model, sample, not value) for value in {v for _, _, v in nodes}}
        for container, layer, value in nodes:
            under = [layer] if is_batch_norm(layer) else batch_norm_layers(layer)
            received = set().union(*(seen[value][b.name] for b in under)) if under else set()
            if not under:
                continue
            ignored = (not value) in received
            numbers = {"fixed_training": value, "outer_training": not value, "ignored": ignored,
                       "bn_layers": len(under)}
            if ignored:
                findings.append(finding(
                    "build_time_training_flag", "C15", layer.name, "warning", numbers,
                    f"{layer.name!r} was called with training={value} while the functional model was built, but "
                    f"the installed Keras ({keras_version}) overrides it whenever the model is called with "
                    f"training={not value} (fit passes True; predict/evaluate False): its {len(under)} BN layer(s) "
                    f"{'updated their statistics during fit' if not value else 'use moving statistics at inference'}. "
                    "To keep BN in inference mode while fine-tuning, set its layers' trainable=False"))
            else:
                ok.append(healthy("build_time_training_flag", "C15",
                                  f"training={value} fixed at build time on {layer.name!r} is honoured by the "
                                  f"installed Keras"))
    else:
        ok.append(healthy("build_time_training_flag", "C15", "no training= argument fixed at build time"))

    # C11: values per channel BN averages over in one training batch.
    tbs = request.get("train_batch_size")
    if tbs:
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
                    f"at training batch size {tbs} this BN layer estimates each channel's mean and variance from "
                    f"{values} values per batch (one per sample after a dense layer): too noisy. Use a larger batch, "
                    "GroupNormalization / LayerNormalization, or BatchNormalization(renorm=True), and recompute the "
                    "population statistics after training (fix=true)"))
        if not tiny:
            ok.append(healthy("small_batch_groups", "C11", f"at training batch size {tbs} every BN layer averages over "
                                                           f">= {TINY_GROUP} values per channel"))


def _recalibrated_copy(fw, model, stats, request, xe, ye, accuracy) -> dict:
    """Write the model with population statistics to a new file in the output folder; accuracy of the reloaded copy."""
    target = Path(request["fix_path"])
    if target.resolve() == Path(request["model"]).resolve() or target.exists():
        raise UserError(f"fix=true would write {target}, which exists; bnexp doctor never overwrites a file: "
                        "remove it or choose another out=")
    precise_bn.apply(model, stats)
    model.save(str(target))
    out = {"path": str(target), "calibration_batches": stats.forward_passes}
    if xe is not None:
        copy = load_model(fw, str(target), request.get("custom_objects"), bool(request.get("trust_model")))
        out["accuracy_before"] = accuracy["moving"]
        with precise_bn.statistics_kept(copy):
            out["accuracy_after"] = probes.accuracy(copy, xe, ye, False, int(request["batch_size"]))
    return out


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
