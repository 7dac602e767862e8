"""`python -m bnexp run|sweep|report|list`.

`run` is a Hydra app over configs/ (resolved from the package, so it works from any directory); the
subcommand is stripped before Hydra parses the overrides. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from bnexp import CONFIG_DIR
from bnexp.errors import UserError

USAGE = """usage: python -m bnexp COMMAND [overrides...]

  run      one scenario, one config:  python -m bnexp run scenario=frozen_base seed=1
           (Hydra app: --multirun / -m sweeps comma lists; --cfg job prints the config)
  sweep    every scenario's grid:      python -m bnexp sweep sweep=quick   (or sweep=reference)
  report   tables, figures and report.md from a sweep's planned runs:  python -m bnexp report sweep=reference
  list     scenarios (with claim ids), datasets, models, norms, semantics
  doctor   check your own saved Keras model's BN: python -m bnexp doctor model=m.keras data=x.npz [fix=true]
"""


def fail(message: str, code: int = 2):
    print(f"bnexp: error: {message}", file=sys.stderr)
    sys.exit(code)


def task(cfg) -> dict | None:
    """One Hydra job: validate, run (or skip) in a child process, print where the record is."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from bnexp import config_check, runner
    from bnexp.store import Store

    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        config_check.validate(resolved)
        store = Store(resolved["paths"]["results_dir"])
        store.check_writable()
    except UserError as e:
        fail(str(e))
    record, where = runner.execute(resolved, store, force=bool(resolved.get("force")))
    status = record.get("status")
    print(f"bnexp: {record['scenario']} {record['run_id']} {status}: {where / 'metrics.json'}")
    single = HydraConfig.get().mode == RunMode.RUN
    if status != "ok" and single:
        fail(f"run {status}: {record.get('error')}", code=1)
    return {"run_id": record["run_id"], "status": status}


def run(argv: list[str]) -> None:
    import hydra

    sys.argv = ["bnexp", *argv]
    hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(task)()


def list_all() -> None:
    from bnexp.config_check import scenario_configs
    from bnexp.names import DATASETS, MODELS, NORMS, SEMANTICS

    print("scenarios (scenario=NAME):")
    for name, node in scenario_configs().items():
        print(f"  {name:<14} claims {', '.join(node.get('claims', [])):<22} semantics {', '.join(node.get('semantics', []))}")
    for title, table in (("datasets (data=NAME)", DATASETS), ("models (model=NAME)", MODELS),
                         ("norms (norm=NAME)", NORMS), ("semantics (semantics=NAME)", SEMANTICS)):
        print(f"{title}:")
        for k, v in table.items():
            print(f"  {k:<14} {v}")
    sweeps = sorted(p.stem for p in (CONFIG_DIR / "sweep").glob("*.yaml"))
    print(f"sweeps (sweep=NAME): {', '.join(sweeps)}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "run":
            run(rest)
        elif cmd == "sweep":
            from bnexp import sweep

            sys.exit(sweep.main(rest))
        elif cmd == "report":
            from bnexp import report

            report.main(rest)
        elif cmd == "list":
            list_all()
        elif cmd == "doctor":
            from bnexp import doctor

            sys.exit(doctor.main(rest))
        else:
            fail(f"unknown command {cmd!r}\n{USAGE}")
    except UserError as e:
        fail(str(e))
