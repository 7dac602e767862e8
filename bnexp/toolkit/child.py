"""The child process of one run: `python -m bnexp.child RUN_DIR`.

RUN_DIR holds config.yaml (resolved). The process' environment was set for the run's semantics by
the parent (bnexp.runner); here the framework is activated, the seed set, the scenario's `run(cfg, ctx)`
called, and result.json written. Nothing else in bnexp imports TensorFlow at module level.
"""

from __future__ import annotations

import csv
import importlib
import json
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from bnexp.toolkit import data as data_mod
from bnexp.errors import Diverged, UserError
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


def main(run_dir: str) -> int:
    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    result = {"status": "failed", "error": None, "metrics": {}}
    start = time.perf_counter()
    ctx = None
    try:
        fw = activate(cfg.semantics, cfg.get("backend") or "tensorflow")
        result["versions"] = fw.versions()
        device = pick_device(fw, cfg.device)
        result["device"] = device
        fw.set_seed(int(cfg.seed))
        ctx = Context(fw, cfg, run_dir, Path(cfg.paths.cache_dir).expanduser(), device)
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
    if ctx is not None and ctx.history:
        _write_history(run_dir / "history.csv", ctx.history)
    (run_dir / "result.json").write_text(json.dumps(result, default=_plain))
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
