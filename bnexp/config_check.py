"""Checks on a resolved config that run before any TensorFlow import, each failing with one clear line."""

from __future__ import annotations

import importlib.util
import numbers

from bnexp import backends
from bnexp.errors import UserError
from bnexp.names import DATASETS, DEVICES, FLAG_STYLES, MODELS, NORMS, OPTIMIZERS, SCALINGS, SEMANTICS, SHIFTS


def scenario_configs() -> dict[str, dict]:
    """Every scenario config: name -> its `scenario` node (claims, semantics, verdict rules, ...)."""
    from omegaconf import OmegaConf

    from bnexp import CONFIG_DIR

    return {f.stem: OmegaConf.to_container(OmegaConf.load(f)).get("scenario", {})
            for f in sorted((CONFIG_DIR / "scenario").glob("*.yaml"))}


def _choice(value, valid, key: str) -> None:
    if value not in valid:
        raise UserError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")


def _number(cfg: dict, key: str, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    kind = "a whole number" if integer else "a number"
    lo_b, hi_b = ("(" if lo_open else "["), (")" if hi_open else "]")
    span = f" in {lo_b}{lo}, {hi if hi is not None else 'inf'}{hi_b}" if lo is not None else ""
    bad = (not isinstance(node, numbers.Real) or isinstance(node, bool)
           or (integer and not float(node).is_integer()))
    if not bad and lo is not None:
        bad = node < lo or (lo_open and node == lo)
    if not bad and hi is not None:
        bad = node > hi or (hi_open and node == hi)
    if bad:
        raise UserError(f"{key} must be {kind}{span}, got {node!r}")


def validate(cfg: dict) -> None:
    """Raise UserError on the first thing wrong with a resolved run config (a plain dict)."""
    scenario = cfg.get("scenario") or {}
    name = scenario.get("name")
    if not name or importlib.util.find_spec(f"experiments.{name}") is None:
        raise UserError(f"scenario {name!r} has no protocol module experiments/{name}.py")
    _choice(cfg.get("semantics"), list(SEMANTICS), "semantics")
    allowed = scenario.get("semantics")
    if allowed and cfg["semantics"] not in allowed:
        raise UserError(f"scenario {name} runs under semantics {', '.join(allowed)} only, "
                        f"not {cfg['semantics']!r}")
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
    _number(cfg, "train.batches", 1, integer=True)
    _number(cfg, "train.batch_size", 1, integer=True)
    _number(cfg, "train.lr", 0, lo_open=True)
    _number(cfg, "train.timeout_s", 0, lo_open=True)
    _number(cfg, "seed", 0, integer=True)
    bn_training = cfg.get("bn", {}).get("training")
    if bn_training not in (None, True, False):
        raise UserError(f"bn.training must be null, true or false, got {bn_training!r}")
    backends.check(cfg)  # backend and keras_version last: a pinned release may be installed into the cache
