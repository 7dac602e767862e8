"""One run in this process: `python -m bnexp.toolkit.child RUN_DIR` (a fresh process), or `run_one(RUN_DIR)`
called by a warm worker (bnexp.toolkit.worker) run after run.

RUN_DIR holds config.yaml (resolved). The process' environment was set for the run's semantics by
the parent (bnexp.workers); here the framework is activated, its state reset (a clean session, seeds and
op determinism), the scenario's `run(cfg, ctx)` called, and result.json written. Nothing else in bnexp
imports TensorFlow at module level.
"""

from __future__ import annotations

import csv
import gc
import importlib
import json
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from bnexp import PROCESS_START
from bnexp.errors import Diverged, UserError
from bnexp.toolkit import data as data_mod
from bnexp.toolkit import training
from bnexp.toolkit.framework import Flavour, activate


@dataclass
class Context:
    """What a scenario's run() gets besides its config."""

    fw: Flavour
    cfg: object
    workdir: Path  # the run's folder: files left here are kept with the record
    cache_dir: Path
    device: str
    history: list[dict] = field(default_factory=list)
    started: float = PROCESS_START  # perf_counter() when this run started (a warm worker's run: not the process)

    def data(self, **kwargs) -> data_mod.Prepared:
        """The run's dataset as `data` says (kwargs: classes=, shift_kind= override it)."""
        return data_mod.from_config(self.cfg.data, self.cache_dir, int(self.cfg.seed), **kwargs)


BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def pick_device(fw: Flavour, wanted: str) -> str:
    gpus = fw.gpu_count()
    if wanted == "gpu" and not gpus:
        raise UserError(f"device=gpu but {BACKEND_NAMES[fw.backend]} sees no GPU (check the CUDA install, `pip install "
                        "'bnexp[gpu]'`, CUDA_VISIBLE_DEVICES); use device=auto or device=cpu")
    return f"gpu:{gpus}" if gpus and wanted != "cpu" else "cpu"


def reset(fw: Flavour, seed: int) -> None:
    """The state every run starts from, in a fresh process or a warm worker alike: no models, graphs or
    layer-name counters left from before, seeds set, TensorFlow ops deterministic."""
    if fw.tf is not None:
        forget_custom_gradients()  # first: clear_session's gc.collect() then frees the graphs they held
    fw.keras.backend.clear_session()
    if fw.name == "tf1":
        fw.tf.compat.v1.reset_default_graph()
    gc.collect()  # tf-keras' clear_session does not collect: a warm worker would carry earlier runs' garbage
    if not gc.get_freeze_count():  # first reset, before any run: the ~450k objects of the imported frameworks
        gc.freeze()               # leave the collector's view, so later collections do not scan them (0.25 s)
    fw.set_seed(seed)


def forget_custom_gradients() -> None:
    """Drop the gradient functions that graph-mode tf.custom_gradient left in TensorFlow's global gradient
    registry. Each call registers one under a fresh name (CustomGradient-<uid>) that nothing removes, and
    its closure holds the whole graph it was traced in: Keras' optimizer all-reduces its gradients through
    one in every traced train step, so a warm worker kept every past run's train step alive after
    clear_session, about 15 MiB per run (tensorflow/tensorflow#97697, #27492). Between runs no graph of an
    earlier run is differentiated again, so none of these entries can be looked up any more."""
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)  # private: skip if it moved
    if isinstance(registry, dict):
        for name in [n for n in registry if n.startswith("CustomGradient-")]:
            del registry[name]


def run_one(run_dir: str | Path, started: float | None = None) -> str:
    """Run the config in RUN_DIR, write result.json (and history.csv) there; return the run's status."""
    run_dir = Path(run_dir)
    start = time.perf_counter() if started is None else started
    cfg = OmegaConf.load(run_dir / "config.yaml")
    result = {"status": "failed", "error": None, "metrics": {}}
    ctx = None
    try:
        fw = activate(cfg.semantics, cfg.get("backend") or "tensorflow")
        result["versions"] = fw.versions()
        device = pick_device(fw, cfg.device)
        result["device"] = device
        reset(fw, int(cfg.seed))
        training.log_to(fw, run_dir, tensorboard=bool(cfg.get("log", {}).get("tensorboard", False)))
        ctx = Context(fw, cfg, run_dir, Path(cfg.paths.cache_dir).expanduser(), device, started=start)
        module = importlib.import_module(f"experiments.{cfg.scenario.name}")
        result["metrics"] = module.run(cfg, ctx)
        result["status"] = "ok"
    except Diverged as e:
        result.update(status="diverged", error=f"diverged: {e}")
    except UserError as e:
        result["error"] = str(e)
    except Exception as e:  # any other failure is recorded with its traceback tail, never dropped
        traceback.print_exc()
        result["error"] = f"{type(e).__name__}: {e}"
    result["child_s"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if ctx is not None and ctx.history and not (run_dir / "history.csv").exists():  # no Keras fit (TF1 graph)
        _write_history(run_dir / "history.csv", ctx.history)
    (run_dir / "result.json").write_text(json.dumps(result, default=_plain))
    return result["status"]


def main(run_dir: str) -> int:
    run_one(run_dir, started=PROCESS_START)
    return 0


def _write_history(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)


def _plain(value):
    """JSON for NumPy scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
