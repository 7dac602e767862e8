"""Checks on configs that run before any TensorFlow import, each failing with one line that names the key,
the bad value and what is valid.

`compose` turns command-line overrides into the resolved configs of every run they ask for (unknown keys and
config-group options are caught here, with a "did you mean", instead of Hydra's `+key` advice); `validate`
checks one resolved config: names, numbers (finite, in range), sizes and class ids against the dataset, the
scenario's declared `scenario.allowed` choices, the paths, and that each dataset the run loads is on this
machine or can be downloaded (`check_dataset`, which `bnexp doctor data=NAME` uses too).
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import math
import numbers
import os
import re
from functools import lru_cache
from pathlib import Path

from bnexp import CONFIG_DIR, backends, network, scenario_spec
from bnexp.errors import UserError
from bnexp.names import (
    DATASET_SIZES,
    DATASETS,
    DEVICES,
    FLAG_STYLES,
    MODELS,
    NORMS,
    OPTIMIZERS,
    SCALINGS,
    SEMANTICS,
    SHIFTS,
)

GROUPS = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")}
_ABSENT = object()

# Every number a run computes with becomes a float32 tensor or an int32/int64 count inside TensorFlow.
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max: a larger value becomes inf
# numpy.finfo(numpy.float32).tiny: a smaller nonzero value loses precision or becomes 0
FLOAT32_TINY = 1.1754943508222875e-38
WHOLE_MAX = 2**31 - 1  # the largest int32: step counts, sizes and seeds above it overflow TensorFlow's int32 counters
SEED_MAX = 2**31 - 1  # NumPy seeds must be < 2**32 and runs derive seeds up to seed + 20000
# A run draws its training (and precise-BN) batches as one table of sample indices up front, 8 bytes each
# (bnexp.toolkit.data.batch_order): 10**8 samples are 0.8 GB, over 1600 passes over 60000 images.
MAX_SAMPLES = 10**8
# BN divides by sqrt(variance + epsilon): epsilon keeps that defined and must stay small next to a unit variance;
# at 1 or more it outweighs the variance it guards and the layer no longer normalizes.
EPSILON_MAX = 1.0


def scenario_configs() -> dict[str, dict]:
    """Every scenario config: name -> its `scenario` node as written, checked (bnexp.scenario_spec reads them)."""
    return scenario_spec.nodes()


# Local runs in parallel when BNEXP_JOBS is unset (configs/hydra/launcher/local.yaml says the same): one more
# than this machine's 2 cores, since a run's Python-only phases (tracing, data, callbacks) leave a core idle.
DEFAULT_JOBS = "3"


def check_environment() -> None:
    """BNEXP_JOBS (parallel local runs) must be a whole number >= 1 when set."""
    jobs = os.environ.get("BNEXP_JOBS")
    if jobs is not None and not (jobs.strip().isdigit() and int(jobs) >= 1):
        raise UserError(f"BNEXP_JOBS={jobs!r} must be a whole number >= 1 (local runs in parallel; unset: "
                        f"{DEFAULT_JOBS})")


# ---------------------------------------------------------------- overrides -> configs


def is_group(key: str) -> bool:
    """`scenario`, `data`, `hydra/launcher`: a config-group choice, not a value."""
    return key.lstrip("+~").split("/")[0] in GROUPS and "." not in key


def expand(overrides: list[str]) -> list[list[str]]:
    """The cartesian product of comma/range sweeps in `overrides`, as lists of single overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # Hydra's grammar error: its first line says which override and where
        raise UserError(f"cannot parse the overrides: {str(e).splitlines()[0]}") from None
    axes = []
    for o in parsed:
        key = o.input_line.split("=", 1)[0]
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes.append([f"{key}={v}" for v in values])
    return [list(p) for p in itertools.product(*axes)]


def _options(group: str) -> list[str]:
    """A config group's options (a file starting with `_` is a template, not an option)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.name.startswith("_"))


def _hint(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _compose_groups(groups: tuple[str, ...]):
    from hydra import compose

    try:
        return compose("config", overrides=list(groups))
    except Exception as e:
        for g in groups:  # an unknown option of a group: name it and list the valid ones
            key, _, value = g.lstrip("+~").partition("=")
            if "/" not in key and key in GROUPS and value not in _options(key):
                raise UserError(f"unknown {key} {value!r}{_hint(value, _options(key))}; "
                                f"valid: {', '.join(_options(key))}") from None
        raise UserError(f"cannot compose the config: {str(e).splitlines()[0]}") from None


def _leaf_keys(node, prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        out.append(f"{prefix}{k}")
        if isinstance(v, dict):
            out.extend(_leaf_keys(v, f"{prefix}{k}."))
    return out


def _unknown_key(cfg: dict, key: str) -> UserError:
    known = _leaf_keys(cfg)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = [k.rsplit(".", 1)[-1] for k in known if (k.rsplit(".", 1)[0] if "." in k else "") == parent]
    where = f"keys under {parent}" if parent else "top-level keys"
    return UserError(f"unknown key {key}{_hint(key, known)}; {where}: {', '.join(siblings)}")


def compose(overrides: list[str]) -> list[dict]:
    """The resolved, validated config of every run that `overrides` (comma lists sweep) asks for.

    Keys that no config has are rejected, `+key` included: nothing would read them, so a misspelt key
    would silently do nothing.
    """
    from hydra import initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    out, cache = [], {}
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for point in expand(overrides):
            groups = tuple(p for p in point if is_group(p.split("=", 1)[0]))
            if groups not in cache:  # compose once per config-group choice, then set plain values
                cache[groups] = _compose_groups(groups)
            cfg = cache[groups].copy()
            plain = OmegaConf.to_container(cfg)
            values = [p for p in point if not is_group(p.split("=", 1)[0]) and not p.startswith("hydra.")]
            for o in OverridesParser.create().parse_overrides(values):
                key = o.key_or_group.lstrip("+~")
                if _get(plain, key) is _ABSENT:
                    raise _unknown_key(plain, key)
                OmegaConf.update(cfg, key, o.value(), force_add=True)
            try:
                resolved = OmegaConf.to_container(cfg, resolve=True)
            except Exception as e:  # e.g. ${oc.env:...} that does not resolve
                raise UserError(f"cannot resolve the config: {str(e).splitlines()[0]}") from None
            validate(resolved)
            out.append(resolved)
    return out


# ---------------------------------------------------------------- one resolved config


def _get(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _choice(value, valid, key: str) -> None:
    if value not in valid:
        raise UserError(f"unknown {key} {value!r}{_hint(str(value), valid)}; valid: {', '.join(valid)}")


def _number(cfg: dict, key: str, lo=None, hi=None, lo_open=False, hi_open=False, integer=False,
            optional=False) -> None:
    node = _get(cfg, key)
    if optional and node in (None, _ABSENT):
        return
    kind = "a whole number" if integer else "a number"
    lo_b, hi_b = ("(" if lo_open else "["), (")" if hi_open else "]")
    span = f" in {lo_b}{lo}, {hi if hi is not None else 'inf'}{hi_b}" if lo is not None else ""
    bad = not _is_number(node) or not math.isfinite(node) or (integer and not float(node).is_integer())
    if not bad and lo is not None:
        bad = node < lo or (lo_open and node == lo)
    if not bad and hi is not None:
        bad = node > hi or (hi_open and node == hi)
    if bad:
        got = "nothing" if node is _ABSENT else repr(node)
        raise UserError(f"{key} must be {kind}{span}{' or null' if optional else ''}, got {got}")


def _finite_and_not_empty(node, prefix: str = "") -> None:
    """No NaN or infinity anywhere, and no empty list: each would run and record nonsense."""
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _finite_and_not_empty(v, key + ".")
        elif isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{key} must be a finite number, got {v}")
        elif isinstance(v, list):
            if not v:
                raise UserError(f"{key} is an empty list; give at least one value (or null where allowed)")
            bad = [x for x in v if isinstance(x, float) and not math.isfinite(x)]
            if bad:
                raise UserError(f"{key} must hold finite numbers, got {bad[0]}")


def _representable(node, prefix: str = "") -> None:
    """Every number fits what TensorFlow makes of it: a float a float32 (0 or a magnitude in
    [FLOAT32_TINY, FLOAT32_MAX]), a whole number an int32."""
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _representable(v, key + ".")
            continue
        for x in (v if isinstance(v, list) else [v]):
            shown = f"{key}={x!r}" + (f" (in {v!r})" if isinstance(v, list) else "")
            if isinstance(x, float) and x and not FLOAT32_TINY <= abs(x) <= FLOAT32_MAX:
                raise UserError(f"{shown} does not fit a float32 (0, or a magnitude from {FLOAT32_TINY:.3g} to "
                                f"{FLOAT32_MAX:.3g}); give a value in that range")
            if _is_number(x) and isinstance(x, int) and abs(x) > WHOLE_MAX:
                raise UserError(f"{shown} is too large: whole numbers here are at most {WHOLE_MAX} (2**31-1, "
                                f"TensorFlow's int32)")


def _bool(cfg: dict, key: str, default=False, null: bool = False) -> None:
    """true or false only (null too where `null`): Python's truth of 'maybe' or 'no' is True."""
    value = _get(cfg, key)
    value = default if value is _ABSENT else value
    if not (value is True or value is False or (null and value is None)):
        raise UserError(f"{key} must be {'null, ' if null else ''}true or false, got {value!r}")


def _samples(cfg: dict) -> None:
    """Training and precise-BN batches are drawn as one table of sample indices: bound its size (MAX_SAMPLES)."""
    train, probe = cfg.get("train", {}), cfg.get("probe", {})
    epochs = train.get("epochs")
    if epochs is not None:
        available = cfg.get("data", {}).get("train_size") or DATASET_SIZES[cfg["data"]["name"]]["train"]
        drawn, what = epochs * available, f"train.epochs={epochs} over {available} training samples"
    else:
        drawn, what = train["batches"] * train["batch_size"], \
            f"train.batches={train['batches']} x train.batch_size={train['batch_size']}"
    pairs = [(drawn, what, "lower train.epochs" if epochs is not None else "lower train.batches"),
             (probe["precise_batches"] * probe["precise_batch_size"],
              f"probe.precise_batches={probe['precise_batches']} x probe.precise_batch_size="
              f"{probe['precise_batch_size']}", "lower probe.precise_batches")]
    for n, what, fix in pairs:
        if n > MAX_SAMPLES:
            raise UserError(f"{what} draws {n:.3g} samples; at most {MAX_SAMPLES:.0e} (their index table takes 8 "
                            f"bytes a sample: 0.8 GB at the bound, and over 1600 passes over 60000 images); {fix}")


def _data(cfg: dict) -> None:
    data = cfg.get("data", {})
    sizes = DATASET_SIZES[data["name"]]
    for split in ("train", "test"):
        _number(cfg, f"data.{split}_size", 1, sizes[split], integer=True, optional=True)
    classes = data.get("classes")
    if classes is not None:
        ids = classes if isinstance(classes, list) else [classes]
        bad = [c for c in ids if not _is_number(c) or not float(c).is_integer() or not 0 <= c < sizes["classes"]]
        if bad or not isinstance(classes, list) or len(set(ids)) != len(ids):
            raise UserError(f"data.classes must be null or a list of distinct class ids in 0..{sizes['classes'] - 1} "
                            f"({data['name']} has {sizes['classes']} classes), got {classes!r}")
    raw = data.get("raw_dir")
    if raw and Path(raw).exists() and not (Path(raw).is_dir() and os.access(raw, os.R_OK | os.X_OK)):
        raise UserError(f"data.raw_dir={raw!r} is not a readable folder; give the folder of the IDX files "
                        f"or data.raw_dir=null")
    available = data.get("train_size") or sizes["train"]
    if cfg["train"]["batch_size"] > available:
        raise UserError(f"train.batch_size={cfg['train']['batch_size']} exceeds the {available} training samples; "
                        f"lower train.batch_size or raise data.train_size")


def _paths(cfg: dict) -> None:
    paths = cfg.get("paths", {})
    for key in ("results_dir", "cache_dir"):
        value = paths.get(key)
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"paths.{key} is empty ({value!r}); give a folder, e.g. paths.{key}=results/local")
    _writable_cache(paths["cache_dir"])


@lru_cache(maxsize=None)
def _writable_cache(folder: str) -> None:
    from bnexp.store import write_test

    try:
        write_test(Path(folder))
    except OSError as e:
        raise UserError(f"paths.cache_dir={folder!r} is not a writable folder ({e.strerror}); choose another with "
                        f"paths.cache_dir=... or BNEXP_CACHE=...") from None


# ---------------------------------------------------------------- is the dataset here?

# Where a dataset's images come from is decided by bnexp.toolkit.data.load and its _load_uncached (the training
# side: fingerprinted, and the parent side never imports bnexp.toolkit). This mirrors that rule on disk, with no
# TensorFlow or tensorflow_datasets import, so that a missing dataset ends in one line before a run's child or
# the doctor's child starts TensorFlow. In the loader's order: (1) the .npz cache paths.cache_dir/data/NAME.npz,
# (2) for fashion_mnist only, the IDX files' folder data.raw_dir, (3) a prepared copy in the TFDS data dir,
# (4) a TFDS download, when the dataset's host answers within the loader's timeout.
# tests/test_config_check.py::test_the_data_rule_agrees_with_the_loader_and_tfds checks that the two agree.
DOWNLOAD_HOSTS = {"fashion_mnist": "storage.googleapis.com", "mnist": "storage.googleapis.com",
                  "cifar10": "www.cs.toronto.edu"}  # bnexp.toolkit.data.DOWNLOAD_HOSTS
DOWNLOAD_TIMEOUT_S = 3.0  # bnexp.toolkit.data.load's download_timeout_s
_TFDS_VERSION = re.compile(r"\.".join([r"(?:\d|[1-9]\d*)"] * 3))  # a TFDS variant folder: x.y.z (tfds.core.Version)


def tfds_data_dir(given) -> Path:
    """The TFDS data dir tfds.builder(name, data_dir=given) reads: `given` as is, else $TFDS_DATA_DIR or
    ~/tensorflow_datasets (tensorflow_datasets.core.constants.get_default_data_dir, user-expanded)."""
    if given is not None:
        return Path(str(given))
    return Path(os.environ.get("TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))).expanduser()


def tfds_prepared(name: str, given_dir) -> bool:
    """A prepared TFDS copy: DIR/NAME/VERSION/dataset_info.json (TFDS' DatasetBuilder.is_prepared). Any version
    counts: which one the installed TFDS reads only TFDS knows, so a copy of another version passes here and
    the run says so, as it did before this check."""
    folder = tfds_data_dir(given_dir) / name
    try:
        return any(_TFDS_VERSION.fullmatch(v.name) and (v / "dataset_info.json").is_file() for v in folder.iterdir())
    except OSError:  # no such folder, or not readable
        return False


def data_cache(name: str, cache_dir) -> Path:
    """bnexp.toolkit.data.load's .npz cache of `name` under paths.cache_dir."""
    return Path(cache_dir).expanduser() / "data" / f"{name}.npz"


def data_on_disk(name: str, raw_dir, given_tfds_dir, cache_dir) -> bool:
    """Can bnexp.toolkit.data.load read `name` without the network?"""
    if cache_dir and data_cache(name, cache_dir).exists():
        return True
    if name == "fashion_mnist" and raw_dir and Path(raw_dir).is_dir():
        return True
    return tfds_prepared(name, given_tfds_dir)


@lru_cache(maxsize=None)
def _host_answers(host: str) -> bool:
    """Asked once per process: a sweep validates hundreds of configs."""
    return network.reachable(host, DOWNLOAD_TIMEOUT_S)


@lru_cache(maxsize=None)
def _default_raw_dir(name: str):
    """data.raw_dir of the config group data=NAME."""
    import yaml

    return (yaml.safe_load((CONFIG_DIR / "data" / f"{name}.yaml").read_text()) or {}).get("raw_dir")


def check_dataset(key: str, name: str, raw_dir, given_tfds_dir, cache_dir, doctor: bool = False) -> None:
    """Raise UserError, one line, if dataset `name` (given as `key`=name) is neither on this machine nor
    downloadable now; say which datasets are here (and, for the doctor, the other kinds of data= it takes)."""
    if data_on_disk(name, raw_dir, given_tfds_dir, cache_dir) or _host_answers(DOWNLOAD_HOSTS[name]):
        return
    where = f"not prepared in the TFDS data dir {tfds_data_dir(given_tfds_dir)}, not cached as " \
            f"{data_cache(name, cache_dir)}"
    if name == "fashion_mnist":
        where += f", data.raw_dir {raw_dir} is not a folder" if raw_dir else ", no data.raw_dir"
    here = [n for n in DATASETS if data_on_disk(n, _default_raw_dir(n), given_tfds_dir, cache_dir)]
    if doctor:
        valid = f"valid here: {', '.join(here) + ' (datasets on this machine), ' if here else ''}an .npz file " \
                f"(x, optional y) or an image folder"
    else:
        valid = f"datasets on this machine: {', '.join(here) or 'none'}"
    if name == "fashion_mnist":
        fix = "install Debian's package dataset-fashion-mnist (make setup does)" + \
              ("" if doctor else " or point data.raw_dir= at a folder with the four IDX files")
    else:
        fix = f"prepare {name} once where the network is open (tfds.builder('{name}').download_and_prepare()) and " \
              f"point {'TFDS_DATA_DIR' if doctor else 'data.tfds_data_dir= (or TFDS_DATA_DIR)'} at that TFDS data dir"
    raise UserError(f"{key}={name} is not on this machine ({where}) and {DOWNLOAD_HOSTS[name]} is not reachable to "
                    f"download it; {valid}; or {fix}")


def _datasets(cfg: dict) -> list[tuple[str, str, str | None]]:
    """(key, dataset, raw_dir) of each dataset a run loads: data.name; for frozen_base (a `transfer` node) its
    transfer.source and transfer.target instead. data.raw_dir goes with data.name only
    (bnexp.toolkit.data.from_config)."""
    data = cfg["data"]
    transfer = cfg.get("transfer")
    if isinstance(transfer, dict) and "source" in transfer and "target" in transfer:
        names = [("transfer.source", transfer["source"]), ("transfer.target", transfer["target"])]
    else:
        names = [("data", data["name"])]
    out = []
    for key, name in names:
        same = name == data["name"]
        entry = ("data" if same else key, name, data.get("raw_dir") if same else None)
        if entry not in out:
            out.append(entry)
    return out


def _available(cfg: dict) -> None:
    for key, name, raw_dir in _datasets(cfg):
        check_dataset(key, name, raw_dir, cfg["data"].get("tfds_data_dir"), cfg["paths"]["cache_dir"])


def _factors(cfg: dict, scenario: scenario_spec.Scenario) -> None:
    """The rules' and figures' factors are settings of this config or declared columns (a misspelt `where`
    key would select no rows)."""
    from bnexp.store import flatten, identity

    scenario_spec.check_factors(scenario, set(flatten(identity(cfg))))


# `scenario.allowed` rules: a list of values, or a mapping {min, max, above, below, integer, also, multiple_of};
# either can hold only for some settings: {when: {key: value or [values]}, values: <rule>}.
def _describe(rule) -> str:
    if isinstance(rule, list):
        return ", ".join("null" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in rule)
    parts = []
    if "min" in rule or "above" in rule:
        parts.append(f">= {rule['min']}" if "min" in rule else f"> {rule['above']}")
    if "max" in rule or "below" in rule:
        parts.append(f"<= {rule['max']}" if "max" in rule else f"< {rule['below']}")
    text = ("a whole number" if rule.get("integer") else "a number") + (" " + " and ".join(parts) if parts else "")
    if "multiple_of" in rule:
        text += f" and a multiple of {rule['multiple_of']}"
    if rule.get("also"):
        text += " or " + _describe(rule["also"])
    return text


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    return a == b


def _fits(value, rule, cfg: dict) -> bool:
    if isinstance(rule, list):
        return any(_same(value, r) for r in rule)
    if any(_same(value, r) for r in rule.get("also", [])):
        return True
    if not _is_number(value) or not math.isfinite(value):
        return False
    if rule.get("integer") and not float(value).is_integer():
        return False
    if ("min" in rule and value < rule["min"]) or ("max" in rule and value > rule["max"]):
        return False
    if ("above" in rule and value <= rule["above"]) or ("below" in rule and value >= rule["below"]):
        return False
    if "multiple_of" in rule:
        other = _get(cfg, rule["multiple_of"])
        return _is_number(other) and other > 0 and value % other == 0
    return True


def _allowed(cfg: dict, scenario: scenario_spec.Scenario) -> None:
    name = scenario.name
    for key, rule in scenario.allowed.items():
        context = ""
        if isinstance(rule, dict) and "when" in rule:
            when = {k: v if isinstance(v, list) else [v] for k, v in rule["when"].items()}
            if not all(any(_same(_get(cfg, k), v) for v in vs) for k, vs in when.items()):
                continue
            context = " with " + " ".join(f"{k}={_get(cfg, k)}" for k in when)
            rule = rule["values"]
        value = _get(cfg, key)
        items = value if isinstance(value, list) else [value]
        for v in items:
            if not _fits(v, rule, cfg):
                shown = "nothing" if v is _ABSENT else repr(value if v is value else v)
                each = "each entry of " if isinstance(value, list) else ""
                raise UserError(f"{key}={shown} is not valid for scenario {name}{context}: {each}{key} must be "
                                f"{'one of ' if isinstance(rule, list) else ''}{_describe(rule)}")


def validate(cfg: dict) -> None:
    """Raise UserError on the first thing wrong with a resolved run config (a plain dict)."""
    name = (cfg.get("scenario") or {}).get("name")
    if not name or importlib.util.find_spec(f"experiments.{name}") is None:
        raise UserError(f"scenario {name!r} has no protocol module experiments/{name}.py")
    scenario = scenario_spec.get(name)  # every scenario file checked once, before anything runs
    _finite_and_not_empty({k: v for k, v in cfg.items() if k not in ("hydra", "scenario", "sweep")})
    _choice(cfg.get("semantics"), list(SEMANTICS), "semantics")
    if cfg["semantics"] not in scenario.semantics:
        raise UserError(f"scenario {name} runs under semantics {', '.join(scenario.semantics)} only, "
                        f"not {cfg['semantics']!r}")
    _factors(cfg, scenario)
    _choice(cfg.get("device"), DEVICES, "device")
    _choice(cfg.get("norm"), list(NORMS), "norm")
    data, model, train = cfg.get("data", {}), cfg.get("model", {}), cfg.get("train", {})
    _choice(data.get("name"), list(DATASETS), "dataset (data=...)")
    _choice(data.get("scaling"), SCALINGS, "data.scaling")
    _choice(data.get("shift", "none"), SHIFTS, "data.shift")
    _choice(model.get("name"), list(MODELS), "model")
    _choice(model.get("flag_style", "functional"), FLAG_STYLES, "model.flag_style")
    _choice(train.get("optimizer"), OPTIMIZERS, "train.optimizer")
    _number(cfg, "bn.momentum", 0, 1, hi_open=True)
    _number(cfg, "bn.epsilon", 0, lo_open=True)
    epsilon = cfg["bn"]["epsilon"]
    if not FLOAT32_TINY <= epsilon < EPSILON_MAX:
        raise UserError(f"bn.epsilon must be in [{FLOAT32_TINY:.3g}, {EPSILON_MAX:g}), got {epsilon!r}: it is "
                        f"added to the variance in float32 (below {FLOAT32_TINY:.3g} it rounds away) and must stay "
                        f"small next to a unit variance (at {EPSILON_MAX:g} or more BN no longer normalizes)")
    _number(cfg, "train.batches", 1, integer=True)
    _number(cfg, "train.batch_size", 1, integer=True)
    _number(cfg, "train.lr", 0, lo_open=True)
    _number(cfg, "train.timeout_s", 0, lo_open=True)
    _number(cfg, "train.epochs", 0, lo_open=True, optional=True)
    for key in ("eval_batch_size", "precise_batches", "precise_batch_size"):
        _number(cfg, f"probe.{key}", 1, integer=True)
    if _is_number(cfg.get("seed")) and cfg["seed"] > SEED_MAX:
        raise UserError(f"seed must be a whole number in [0, {SEED_MAX}] (NumPy and TensorFlow seeds; a run "
                        f"derives further seeds up to seed + 20000), got {cfg['seed']!r}")
    _number(cfg, "seed", 0, SEED_MAX, integer=True)
    _bool(cfg, "force")
    _number(cfg, "verbose", 0, 2, integer=True, optional=True)
    worker = cfg.get("worker") or {}
    _bool(cfg, "worker.warm", default=True)
    for key in ("max_runs", "pool_size", "chunk"):
        if key in worker:
            _number(cfg, f"worker.{key}", 1, integer=True)
    _bool(cfg, "bn.training", default=None, null=True)
    _bool(cfg, "log.tensorboard", default=None, null=True)
    if cfg.get("log", {}).get("tensorboard") and importlib.util.find_spec("tensorboard") is None:
        raise UserError("log.tensorboard=true needs the tensorboard package: pip install tensorboard")
    _data(cfg)
    _samples(cfg)
    _representable({k: v for k, v in cfg.items() if k not in ("hydra", "scenario", "sweep")})
    _allowed(cfg, scenario)
    _paths(cfg)
    _available(cfg)  # after the cheap checks: it may ask the network
    backends.check(cfg)  # backend and keras_version last: a pinned release may be installed into the cache
