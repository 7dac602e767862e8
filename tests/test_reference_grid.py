"""The reference sweep can judge every verdict rule: each value a rule's `where` names is a value of that
key in the scenario's reference grids (configs/sweep/reference.yaml: its grid and its `@label` grids) or, for a
key a grid leaves alone,
the scenario's default. A rule whose `where` matches no run of the sweep would be judged on nothing."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from bnexp import CONFIG_DIR
from bnexp.config_check import scenario_configs

GRIDS = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "sweep" / "reference.yaml"))["grids"]
RULED = {name: node["verdicts"] for name, node in scenario_configs().items() if node.get("verdicts")}


def grid_values(grid: dict) -> dict[str, list]:
    """{key: its typed values} of a grid of comma-separated overrides, parsed as Hydra parses them."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in (grid or {}).items()])
    return {o.key_or_group: list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()] for o in parsed}


def test_every_scenario_with_rules_has_a_reference_grid():
    assert set(RULED) <= set(GRIDS)


@pytest.mark.parametrize("scenario", sorted(RULED))
def test_where_values_are_in_the_reference_grid_or_the_defaults(scenario):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        defaults = compose("config", overrides=[f"scenario={scenario}"])
    grids = [grid_values(GRIDS[g]) for g in GRIDS if g.split("@", 1)[0] == scenario]  # its `@label` grids too

    def values_of(key):  # over the scenario's grids: a grid that leaves `key` alone runs its default
        if key == "keras_backend":  # the record's backend: what the `backend` setting ran (null: TensorFlow)
            return [v or "tensorflow" for v in values_of("backend")]
        default = [OmegaConf.select(defaults, key, default="<absent>")]
        return [v for grid in grids for v in grid.get(key, default)]

    for rule in RULED[scenario]:
        for key, wanted in (rule.get("where") or {}).items():
            values = values_of(key)
            for value in wanted if isinstance(wanted, list) else [wanted]:
                assert value in values, (f"{scenario} rule for {rule['claim']} ({rule['says'][:50]}...): "
                                         f"{key}={value!r} is not among the reference sweep's {values}")


def test_a_runs_config_holds_no_sweep_grid():
    """Sweep grids are read by `bnexp sweep` alone: the config a run saves is that run's only."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["scenario=frozen_base"])
    assert "sweep" not in cfg and "grids" not in OmegaConf.to_yaml(cfg)
