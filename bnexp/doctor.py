"""`python -m bnexp doctor model=PATH data=DATA [fix=true] [out=FOLDER] ...`: check a user's own trained Keras model
for the BN pitfalls bnexp measures, and optionally write a copy with recomputed population statistics.

Parent side (imports no TensorFlow): parse the arguments, check the input (files, format, data shape, labels)
fast, refuse a model file that would run code when loaded unless trust_model=true (bnexp.model_safety), pick
the semantics from the model file (a Keras 3 `.keras` file -> keras3; a tf-keras `.h5`, `.keras` or
SavedModel folder -> tf_keras), run bnexp.toolkit.diagnose in a child process with that semantics' environment,
then print the result and write doctor.md beside the child's doctor.json.

Exit codes: 0 no finding of severity error (or no BN layer; latent risks never count), 1 at least one, 2 bad
input, 3 the doctor failed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import yaml

from bnexp import CONFIG_DIR, PACKAGE_DIR, launcher, model_safety
from bnexp.errors import UserError
from bnexp.names import DATASETS, DEVICES, SCALINGS
from bnexp.shapes import shape_fits

DEFAULTS = {
    "model": None,             # .keras file, .h5 file or SavedModel folder (required)
    "data": None,              # dataset name, .npz file (x, optional y) or image folder (required)
    "out": "doctor",           # folder for doctor.json, doctor.md, doctor.log and the recalibrated copy
    "fix": False,              # true: write a copy with population statistics recomputed
    "trust_model": False,      # true: load with Keras' safe_mode off, running code the model file holds
    "custom_objects": None,    # Python module defining the model's custom classes
    "split": None,             # train | test, for a dataset name (default train: what precise BN recomputes from)
    "data.scaling": None,      # dataset name: unit|standard|raw (default: the dataset config's); folder: unit|raw
    "train_batch_size": None,  # the batch size the model was trained with (for the small-batch check, C11)
    "domain": "source",        # source | shifted: the data comes from another domain than the training data (R2)
    "doctor.max_samples": 2000,
    "doctor.batch_size": 64,   # batch size of the batch-statistics and population-statistics passes
    "doctor.timeout_s": 1800,
    "device": "auto",
    "seed": 0,
}
PATH_KEYS = ("model", "data", "out", "custom_objects")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
LOG_TAIL = 1500


# ---------------------------------------------------------------- arguments


def parse(argv: list[str]) -> dict:
    args = dict(DEFAULTS)
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or key not in DEFAULTS:
            raise UserError(f"doctor: unknown argument {token!r}; valid keys: {', '.join(DEFAULTS)} (key=value)")
        args[key] = value if key in PATH_KEYS else yaml.safe_load(value) if value else None
    for key in ("model", "data"):
        if not args[key]:
            raise UserError(f"doctor: {key}= is required, e.g. python -m bnexp doctor model=my_model.keras "
                            f"data=fashion_mnist")
    for key in ("fix", "trust_model"):
        if not isinstance(args[key], bool):
            raise UserError(f"doctor: {key}={args[key]!r}; valid: true, false")
    for key, low in (("doctor.max_samples", 2), ("doctor.batch_size", 2), ("doctor.timeout_s", 1),
                     ("train_batch_size", 1), ("seed", 0)):
        value = args[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise UserError(f"doctor: {key}={value!r}; valid: an integer >= {low}")
    if args["domain"] not in ("source", "shifted"):
        raise UserError(f"doctor: domain={args['domain']!r}; valid: source (the model's own domain), shifted")
    if args["device"] not in DEVICES:
        raise UserError(f"doctor: device={args['device']!r}; valid: {', '.join(DEVICES)}")
    return args


# ---------------------------------------------------------------- the model file


def inspect_model(path: str) -> dict:
    """Format, semantics and (where the file holds one readable without TensorFlow) the model config."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"model={path}: no such file or folder")
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise UserError(f"model={path} is a folder without saved_model.pb: not a Keras model (give a .keras "
                            f"file, an .h5 file or a SavedModel folder)")
        if not (p / "keras_metadata.pb").is_file():
            ops = ", ".join(sorted(model_safety.risky_ops(p)))
            risky = f"; its graph holds the ops {ops}: never run it unless you trust its author" if ops else ""
            raise UserError(f"model={path} is a TensorFlow SavedModel without Keras metadata (tf.saved_model.save "
                            f"or Keras 3 export()); save the model with Keras' model.save() instead{risky}")
        return {"format": "savedmodel", "semantics": "tf_keras", "config": None}
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UserError(f"model={path} cannot be read: {e.strerror}") from None
    if head.startswith(b"PK\x03\x04"):
        return _inspect_keras_zip(path)
    if head == HDF5_SIGNATURE:
        return _inspect_h5(path)
    raise UserError(f"model={path} is not a Keras model: neither a .keras (zip) file, an HDF5 (.h5) file nor a "
                    f"SavedModel folder")


def _inspect_keras_zip(path: str) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "config.json" not in names:
                raise UserError(f"model={path} is a zip file without config.json: not a Keras model file")
            config = json.loads(z.read("config.json"))
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise UserError(f"model={path} is a damaged .keras file: {e}") from None
    version = str(meta.get("keras_version", "3"))
    return {"format": "keras", "semantics": "tf_keras" if version.startswith("2.") else "keras3",
            "config": config, "keras_version": version}


def _inspect_h5(path: str) -> dict:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            version = f.attrs.get("keras_version", "2")
    except OSError as e:
        raise UserError(f"model={path} is a damaged HDF5 file: {e}") from None
    if raw is None:
        raise UserError(f"model={path} is an HDF5 file without a model config (weights only, from save_weights?); "
                        f"save the whole model with model.save()")
    version = version.decode() if isinstance(version, bytes) else str(version)
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return {"format": "h5", "semantics": "keras3" if version.startswith("3.") else "tf_keras", "config": config,
            "keras_version": version}


def declared_io(config: dict | None) -> tuple[tuple | None, int | None]:
    """(input shape without the batch axis, number of outputs) as the saved config declares them; None if unknown."""
    if not config:
        return None, None
    body = config.get("config", {}) or {}
    layers = body.get("layers", []) or []
    inputs = [entry.get("config", {}) for entry in layers if entry.get("class_name") == "InputLayer"]
    shape = None
    if len(inputs) == 1:
        shape = inputs[0].get("batch_shape") or inputs[0].get("batch_input_shape")
    elif not inputs:
        shape = body.get("build_input_shape") or (config.get("build_config") or {}).get("input_shape")
    if shape and isinstance(shape, list) and all(isinstance(d, (int, type(None))) for d in shape):
        shape = tuple(shape[1:])
    else:
        shape = None
    return shape, _declared_outputs(config.get("class_name"), body, layers)


def _declared_outputs(class_name, body, layers) -> int | None:
    by_name = {entry.get("config", {}).get("name"): entry for entry in layers}
    if class_name == "Sequential":
        last = layers[-1] if layers else None
    else:
        outs = body.get("output_layers")
        if isinstance(outs, list) and len(outs) == 3 and isinstance(outs[0], str):
            outs = [outs]
        last = by_name.get(outs[0][0]) if isinstance(outs, list) and len(outs) == 1 else None
    if last and last.get("class_name") == "Dense":
        return int(last["config"]["units"])
    return None


# ---------------------------------------------------------------- the data


def inspect_data(args: dict, shape, classes) -> dict:
    """The child's data spec, after every check that needs no TensorFlow."""
    source = args["data"]
    spec = {"source": source, "max_samples": args["doctor.max_samples"], "seed": args["seed"]}
    p = Path(source)
    if source in DATASETS:
        split = args["split"] or "train"
        if split not in ("train", "test"):
            raise UserError(f"doctor: split={split!r}; valid: train, test")
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "data" / f"{source}.yaml"))
        scaling = args["data.scaling"] or config["scaling"]
        if scaling not in SCALINGS:
            raise UserError(f"doctor: data.scaling={scaling!r}; valid: {', '.join(SCALINGS)}")
        config["scaling"] = scaling
        paths = OmegaConf.load(CONFIG_DIR / "paths" / "default.yaml")
        cache_dir = str(Path(str(paths.cache_dir)).expanduser())
        from bnexp.config_check import check_dataset  # on disk or downloadable, else one line before TensorFlow

        check_dataset("data", source, config.get("raw_dir"), config.get("tfds_data_dir"), cache_dir, doctor=True)
        return {**spec, "kind": "dataset", "config": config, "split": split, "cache_dir": cache_dir}
    if args["split"] is not None:
        raise UserError(f"doctor: split= applies to dataset names ({', '.join(DATASETS)}), not to data={source}")
    if p.is_dir():
        return {**spec, **_inspect_folder(p, args, classes)}
    if p.suffix == ".npz" or p.is_file():
        if args["data.scaling"] is not None:
            raise UserError(f"doctor: data.scaling applies to dataset names and image folders; the arrays in "
                            f"data={source} are used as stored")
        _check_npz(p, source, shape, classes)
        return {**spec, "kind": "npz", "path": str(p)}
    raise UserError(f"doctor: data={source} is neither a dataset ({', '.join(DATASETS)}), an .npz file nor an image "
                    f"folder")


def _check_npz(p: Path, source: str, shape, classes) -> None:
    if not p.is_file():
        raise UserError(f"data={source}: no such file")
    if not zipfile.is_zipfile(p):  # np.load would call any other file "pickled data"
        raise UserError(f"data={source} is not an .npz file (a zip of NumPy arrays); save your arrays with "
                        f"np.savez(path, x=images, y=labels)")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z.files:
                raise UserError(f"data={source} has no array 'x' (it holds {', '.join(z.files) or 'nothing'}); save "
                                f"it with np.savez(path, x=images, y=labels)")
            x_shape = _npy_shape(z, "x")
            y = z["y"] if "y" in z.files else None
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"data={source} cannot be read as .npz: {type(e).__name__}: {e}") from None
    if len(x_shape) < 2 or x_shape[0] == 0:
        raise UserError(f"data={source}: x holds no samples (shape {x_shape})")
    if shape is not None and not shape_fits(shape, x_shape[1:]):
        raise UserError(f"data={source}: samples of shape {x_shape[1:]} do not fit the model's input {shape} "
                        f"(None: any size)")
    if y is None:
        return
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != x_shape[0]:
        raise UserError(f"data={source}: y has shape {y.shape}; it must hold one class index per sample "
                        f"({x_shape[0]})")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0))):
        raise UserError(f"data={source}: y must hold class indices (integers), not {y.dtype} values")
    if y.min() < 0 or (classes is not None and y.max() >= classes):
        valid = f"0..{classes - 1}" if classes else ">= 0"
        raise UserError(f"data={source}: labels range over [{int(y.min())}, {int(y.max())}] but the model has "
                        f"{classes} outputs (valid labels: {valid})")


def _npy_shape(z, key: str) -> tuple:
    """The shape of array `key` of an open .npz, from its header: the images are read once, by the check process,
    not here too (10,000 images of 96x96x3 are 1.1 GB). Refuses what np.load(allow_pickle=False) refuses."""
    name = f"{key}.npy" if f"{key}.npy" in z.zip.namelist() else key
    with z.zip.open(name) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):  # a newer header format: let np.load read it
            return z[key].shape
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        x_shape, _, dtype = read(f)
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    return tuple(x_shape)


def _inspect_folder(p: Path, args: dict, classes) -> dict:
    scaling = args["data.scaling"] or "raw"
    if scaling not in ("unit", "raw"):
        raise UserError(f"doctor: data.scaling={scaling!r} for an image folder; valid: raw (0..255, default), unit")
    images = [f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    if not images:
        raise UserError(f"data={p}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
    subdirs = sorted(d for d in p.iterdir() if d.is_dir())
    labelled = bool(subdirs) and all(f.parent != p for f in images)
    if labelled and classes is not None and len(subdirs) > classes:
        raise UserError(f"data={p}: {len(subdirs)} class folders (labels 0..{len(subdirs) - 1}) but the model has "
                        f"{classes} outputs")
    return {"kind": "folder", "path": str(p), "labelled": labelled, "scaling": scaling}


# ---------------------------------------------------------------- running the child


def fix_path(model: str, fmt: str, out: Path) -> Path:
    stem = Path(model.rstrip("/")).name
    if fmt == "savedmodel":
        return out / f"{stem}.recalibrated"
    return out / f"{Path(stem).stem}.recalibrated{Path(stem).suffix or '.keras'}"


def run_child(request: dict, out: Path, timeout: float) -> dict:
    env = launcher.child_env(request["semantics"], request["device"])
    # the package, and the user's working directory for custom_objects modules
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_DIR.parent), os.getcwd(), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="bnexp-doctor-") as tmp:
        req, res = Path(tmp, "request.json"), Path(tmp, "result.json")
        req.write_text(json.dumps(request))
        with open(out / "doctor.log", "w") as log:
            code = launcher.run("bnexp.toolkit.diagnose", [str(req), str(res)], env, timeout, log)
        if code is None:
            return {"status": "failed", "error": f"no result after doctor.timeout_s={timeout:g} s"}
        try:
            return json.loads(res.read_text())
        except (OSError, ValueError):
            tail = (out / "doctor.log").read_text()[-LOG_TAIL:]
            return {"status": "failed", "error": f"the check process exited with code {code}:\n{tail}"}


# ---------------------------------------------------------------- output


# Each claim's plain-language title and its section of bnexp's report (the same table as the child's).
CLAIM_TITLES = {
    "C01": ("stale moving statistics", "scenario-momentum"),
    "C03": ("moving statistics never updated", "scenario-training_flag"),
    "C04": ("BN in training mode at inference", "scenario-training_flag"),
    "C06": ("frozen BN inside a model that still trains", "scenario-frozen_base"),
    "C10": ("something else than a variance in the variance slot", "scenario-weights_order"),
    "C11": ("too few values per channel in a training batch", "scenario-batch_size"),
    "C15": ("training= fixed when the model was built", "scenario-frozen_base"),
    "C16": ("a layer whose call() defaults to training=True", "scenario-training_default"),
    "C18": ("BN variance in float32 losing precision at large input means", "scenario-conformance"),
    "C21": ("Dropout feeding BN: variance shift at inference", "scenario-conformance"),
    "R1": ("recompute population statistics after training (precise BN)", "scenario-momentum"),
    "R2": ("BN statistics of another domain", "scenario-domain_shift"),
}
REPORT = PACKAGE_DIR.parent / "results" / "report.md"


def claim_ref(claim: str) -> str:
    """`results/report.md#scenario-...`: where bnexp's report measures the claim."""
    return f"results/report.md#{CLAIM_TITLES[claim][1]}" if claim in CLAIM_TITLES else "results/report.md"


def claim_link(claim: str, out: Path) -> str:
    """A Markdown link from out/doctor.md to the claim's section of bnexp's report on this machine."""
    if claim not in CLAIM_TITLES:
        return claim
    target = os.path.relpath(REPORT, Path(out).resolve()) if REPORT.is_file() else "results/report.md"
    return f"[{claim}]({Path(target).as_posix()}#{CLAIM_TITLES[claim][1]})"


def exit_code(report: dict) -> int:
    return 1 if any(f["severity"] == "error" for f in report.get("findings", [])) else 0


def headline(report: dict) -> list[str]:
    bns = report.get("bn_layers", [])
    held = sum(bool(v) for v in (report.get("bn_holders") or {}).values())
    lines = [f"model {report['model']} ({report['format']}, semantics {report['semantics']}, Keras "
             f"{report['keras_version']}); {len(bns)} BN layers"
             + (f": {', '.join(bns[:8])}{' ...' if len(bns) > 8 else ''}" if bns else "")
             + (f" ({held} inside nested models or custom layers)" if held else "")]
    if report.get("trust_model"):
        lines.append("trust_model=true: loaded with Keras' safe_mode off (unsafe deserialization), so code stored in "
                     "the model file was allowed to run")
    d = report.get("data")
    if d:
        split = f" ({d['split']} split)" if d.get("split") else ""
        lines.append(f"data {d['source']}{split}: {d['samples']} samples of shape {tuple(d['input_shape'])}; "
                     f"{d['calibration']} for population statistics"
                     + (f", {d['held_out']} held out for accuracy" if d["labels"] else ", no labels"))
    acc = report.get("accuracy")
    if acc:
        lines.append(f"accuracy (held out): stored moving statistics {acc['moving']:.3f} | population statistics "
                     f"recomputed on this data {acc['population']:.3f} | batch statistics {acc['batch']:.3f}")
    return lines


def groups(findings: list[dict]) -> list[dict]:
    """Findings of one check that share severity, claim, why and fix, as one group (their `what`s listed)."""
    out = []
    for f in findings:
        key = (f["kind"], f["severity"], f["check"], f["claim"], f["why"], f["fix"])
        if out and out[-1]["key"] == key:
            out[-1]["layers"].append(f.get("layer"))
            out[-1]["whats"].append(f["what"])
        else:
            out.append({"key": key, "layers": [f.get("layer")], "whats": [f["what"]], **f})
    return out


def _sentence(text: str) -> str:
    text = text.strip()
    return text + ("" if text.endswith(".") else ".")


def title(claim: str) -> str:
    return CLAIM_TITLES.get(claim, (claim, ""))[0]


def fix_lines(fix: dict) -> list[str]:
    """The recalibrated copy's verdict, in sentences (same text for the terminal and doctor.md)."""
    how = (f"Population statistics from {fix['calibration_batches']} batches, {fix['mode']}; variance convention "
           f"{fix['variance']}.")
    keeps = f"The copy keeps {'; '.join(fix['kept'])}" + (f"; it drops {'; '.join(fix['dropped'])}." if fix["dropped"]
                                                        else ".")
    if fix["status"] == "unjudged":
        return [f"Copy written, NOT JUDGED: {fix['path']} (the data has no labels, so its accuracy could not be "
                "measured; check it on labelled data before using it).", how, keeps]
    lo, hi = fix["interval"]
    measured = (f"held-out accuracy {fix['accuracy_before']:.3f} with the stored statistics, "
                f"{fix['accuracy_after']:.3f} with the copy's (change {100 * fix['change']:+.1f} points, 95% interval "
                f"{100 * lo:+.1f} to {100 * hi:+.1f}; {fix['wrong_to_right']} of {fix['held_out']} images "
                f"wrong -> right, {fix['right_to_wrong']} right -> wrong)")
    rule = f"Rule: {fix['rule']}."
    if fix["status"] == "recommended":
        return [f"Recalibrated copy RECOMMENDED: {fix['path']}: {measured}.", how, keeps, rule]
    verdict = "the copy is worse" if hi < 0 else "the change is within the noise of this measurement"
    return [f"Recalibrated copy NOT RECOMMENDED, none written: {measured}: {verdict}.", how, rule]


def terminal(report: dict, out: Path) -> str:
    """The report for a terminal: measured findings, latent risks, healthy checks, the copy's verdict."""
    lines = ["bnexp doctor", *("  " + s for s in headline(report))]
    if report.get("note"):
        lines.append(f"  {report['note']}")
    wrap = textwrap.TextWrapper(width=110, initial_indent=" " * 6, subsequent_indent=" " * 8)
    measured = [f for f in report.get("findings", []) if f.get("kind", "measured") == "measured"]
    latent = [f for f in report.get("findings", []) if f.get("kind") == "latent"]
    for heading, items in (("findings (measured on this model, now):", measured),
                           ("latent risks (not happening now; what a change you may make would do, measured on a "
                            "temporarily changed copy or estimated from this data's statistics):", latent)):
        if not items:
            continue
        lines.append(heading)
        for g in groups(items):
            layers = [name for name in g["layers"] if name]
            lines.append(f"  {g['severity'].upper():<8}{g['claim']:<5}{title(g['claim'])}"
                         + (f"  [{', '.join(layers)}]" if layers else ""))
            for what in g["whats"]:
                lines += wrap.wrap("what: " + _sentence(what))
            lines += wrap.wrap("why: " + _sentence(g["why"]))
            lines += wrap.wrap("do: " + _sentence(g["fix"]))
    if report.get("healthy"):
        lines.append("healthy (measured):")
        lines += [f"  ok      {h['claim']:<5}{h['summary']}" for h in report["healthy"]]
    fix = report.get("fix")
    if fix:
        lines.append("fix=true:")
        for text in fix_lines(fix):
            lines += wrap.wrap(text)
    used = sorted({f["claim"] for f in report.get("findings", [])} | {h["claim"] for h in report.get("healthy", [])})
    if used:
        lines.append("claims (bnexp's measurements of each, in its report):")
        lines += [f"  {c:<5}{title(c)}: {claim_ref(c)}" for c in used if c in CLAIM_TITLES]
    errors = sum(f["severity"] == "error" for f in report.get("findings", []))
    warnings = sum(f["severity"] == "warning" for f in report.get("findings", []))
    lines.append(f"{errors} error(s), {warnings} warning(s), {len(latent)} latent risk(s); exit {exit_code(report)}; "
                 f"report: {out / 'doctor.md'}, {out / 'doctor.json'}")
    return "\n".join(lines)


def markdown(report: dict, out: Path | None = None) -> str:
    out = Path(out or report.get("out") or ".")
    lines = ["# bnexp doctor", "", *(f"- {s}" for s in headline(report)), ""]
    if report.get("note"):
        lines += [report["note"], ""]
    measured = [f for f in report.get("findings", []) if f.get("kind", "measured") == "measured"]
    latent = [f for f in report.get("findings", []) if f.get("kind") == "latent"]
    for heading, items in (("## Findings (measured on this model, now)", measured),
                           ("## Latent risks (not happening now)", latent)):
        if not items:
            continue
        lines += [heading, ""]
        if items is latent:
            lines += ["What a change you may make would do, measured on a temporarily changed copy of the model "
                      "(restored afterwards) or estimated from this data's statistics (C18). Not an error.", ""]
        for g in groups(items):
            layers = [name for name in g["layers"] if name]
            lines += [f"### {g['severity'].upper()}: {title(g['claim'])} ({claim_link(g['claim'], out)})"
                      + (f", `{'`, `'.join(layers)}`" if layers else ""), ""]
            lines += [f"- **What:** {_sentence(w)}" for w in g["whats"]]
            lines += [f"- **Why it matters:** {_sentence(g['why'])}", f"- **What to do:** {_sentence(g['fix'])}", ""]
    if report.get("healthy"):
        lines += ["## Healthy (measured)", "",
                  *(f"- {_sentence(h['summary'])} ({claim_link(h['claim'], out)})" for h in report["healthy"]), ""]
    fix = report.get("fix")
    if fix:
        lines += ["## Recalibrated copy (fix=true)", "", *(f"{t}\n" for t in fix_lines(fix))]
    errors = sum(f["severity"] == "error" for f in report.get("findings", []))
    warnings = sum(f["severity"] == "warning" for f in report.get("findings", []))
    lines += [f"{errors} error(s), {warnings} warning(s), {len(latent)} latent risk(s); exit code "
              f"{exit_code(report)}.", ""]
    return "\n".join(lines)


def prepare(argv: list[str]) -> tuple[dict, Path, float]:
    """Every check that needs no TensorFlow; the child's request, the output folder and the timeout."""
    args = parse(argv)
    model = inspect_model(args["model"])
    refusal = None if args["trust_model"] else model_safety.refusal(args["model"], model, args["custom_objects"])
    if refusal:
        raise UserError(refusal)
    shape, classes = declared_io(model["config"])
    data = inspect_data(args, shape, classes)
    out = Path(args["out"])
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"doctor: out={args['out']} is not a writable folder: {e.strerror}") from None
    target = fix_path(args["model"], model["format"], out)
    if args["fix"] and target.exists():
        raise UserError(f"doctor: fix=true would write {target}, which exists; bnexp doctor never overwrites a file: "
                        f"remove it or choose another out=")
    request = {"model": args["model"], "format": model["format"], "semantics": model["semantics"],
               "custom_objects": args["custom_objects"], "data": data, "batch_size": args["doctor.batch_size"],
               "train_batch_size": args["train_batch_size"], "domain": args["domain"], "fix": args["fix"],
               "fix_path": str(target), "out": str(out), "device": args["device"], "trust_model": args["trust_model"]}
    return request, out, float(args["doctor.timeout_s"])


def main(argv: list[str]) -> int:
    request, out, timeout = prepare(argv)
    print(f"bnexp doctor: checking {request['model']} ({request['semantics']}) on {request['data']['source']} ...",
          flush=True)
    result = run_child(request, out, timeout)
    if result["status"] == "bad_input":
        raise UserError(result["error"])
    if result["status"] != "ok":
        print(f"bnexp: error: doctor failed: {result.get('error')} (log: {out / 'doctor.log'})", file=sys.stderr)
        return 3
    report = json.loads((out / "doctor.json").read_text())
    (out / "doctor.md").write_text(markdown(report, out))
    print(terminal(report, out))
    return exit_code(report)
