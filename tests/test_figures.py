"""Figure kinds on tiny synthetic tables: files written, numeric order, null vs false, 95% intervals drawn;
the scenario YAML figure specs are valid and cover every claim their verdicts judge."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from matplotlib.container import ErrorbarContainer
from scipy import stats

from bnexp import figures
from bnexp.config_check import scenario_configs
from bnexp.errors import UserError
from bnexp.store import identity

STEPS = [10, 100, 1000, 30, 300]  # string order would be 10, 100, 1000, 30, 300


def _table(factor: str, levels: list, seeds=(0, 1, 2)) -> pd.DataFrame:
    """One row per (level, seed); acc = 0.1 * (level index + 1) + 0.01 * seed; flag = seed is even."""
    rows = [{factor: lv, "seed": s, "status": "ok", "acc": 0.1 * (i + 1) + 0.01 * s, "other": 0.5,
             "flag": float(s % 2 == 0), "group": "a"} for i, lv in enumerate(levels) for s in seeds]
    return pd.DataFrame(rows)


def _ticks(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_levels_order_numbers_by_value_and_keep_null_false_true_apart():
    assert [figures.label(v) for v in figures.levels(pd.Series(STEPS))] == ["10", "30", "100", "300", "1000"]
    mixed = pd.Series([True, None, False, float("nan"), False], dtype=object)
    assert [figures.label(v) for v in figures.levels(mixed)] == ["false", "null", "true"]  # the verdicts' order
    # the pitfall this avoids: with pandas >= 3, astype(str) may turn None into NaN, merging null with others
    assert figures.select(pd.DataFrame({"f": mixed}), {"f": None}).index.tolist() == [1, 3]
    assert figures.select(pd.DataFrame({"f": mixed}), {"f": False}).index.tolist() == [2, 4]


def test_bars_numeric_order_and_t_interval():
    fig = figures.bars(_table("train.batches", STEPS), {"x": "train.batches", "metrics": {"acc": "accuracy"}})
    ax = fig.axes[0]
    assert _ticks(ax) == ["10", "30", "100", "300", "1000"]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()
    half = stats.t.ppf(0.975, 2) * np.std([0.0, 0.01, 0.02], ddof=1) / math.sqrt(3)
    # first group (10 steps): seeds 0.10, 0.11, 0.12 -> mean 0.11 with the Student-t half-width
    assert segments[0][:, 1] == pytest.approx([0.11 - half, 0.11 + half])


def test_bars_keep_null_and_false_apart(tmp_path):
    df = _table("base.training", [None, False, True])
    fig = figures.bars(df, {"x": "base.training", "metrics": {"acc": "accuracy"}})
    ax = fig.axes[0]
    assert _ticks(ax) == ["false", "null", "true"]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.21, 0.11, 0.31])  # three groups, not null merged into false
    as_csv = df.assign(**{"base.training": df["base.training"].map(lambda v: np.nan if v is None else v)})
    assert _ticks(figures.bars(as_csv, {"x": "base.training", "y": "acc"}).axes[0]) == ["false", "null", "true"]


def test_lines_hue_panels_and_intervals():
    df = pd.concat([_table("train.lr", [0.1, 0.001, 0.01]).assign(norm=n, opt=o)
                    for n in ("bn", "none") for o in ("adam", "sgd")])
    fig = figures.lines(df, {"x": "train.lr", "y": "acc", "hue": "norm", "panels": "opt", "xscale": "log"})
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["opt = adam", "opt = sgd"]
    assert _ticks(axes[0]) == ["0.001", "0.01", "0.1"]
    assert sum(isinstance(c, ErrorbarContainer) for c in axes[0].containers) == 2
    assert fig.legends and "95% t-interval over 3 seeds" in fig.legends[0].get_title().get_text()


def test_curve_reads_x_from_column_names_in_numeric_order():
    df = pd.DataFrame({"seed": [0, 1], "bs": [2, 2], "acc_n1": [0.5, 0.6], "acc_n10": [0.7, 0.8],
                       "acc_n2": [0.6, 0.7], "acc_n200": [0.8, 0.8]})
    fig = figures.curve(df, {"columns": "acc_n{}", "hue": "bs", "xscale": "log"})
    ax = fig.axes[0]
    assert _ticks(ax) == ["1", "2", "10", "200"]
    line = ax.containers[0].lines[0]
    assert line.get_ydata() == pytest.approx([0.55, 0.65, 0.75, 0.8])


def test_paired_draws_one_line_per_seed_and_the_paired_difference():
    df = _table("sem", ["k3", "tf"]).assign(std=lambda d: d["acc"] - 0.1)
    fig = figures.paired(df, {"metrics": {"acc": "variance", "std": "std"}, "panels": "sem",
                              "difference": ["acc", "std"]})
    ax = fig.axes[0]
    assert sum(1 for ln in ax.lines if ln.get_color() == "grey") == 3
    assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    assert "paired over 3 seeds" in " ".join(t.get_text() for t in ax.texts)


def test_heatmap_cells_carry_mean_and_interval_in_numeric_order():
    df = _table("train.batches", STEPS).assign(**{"m0.9.gap": lambda d: d["acc"], "m0.99.gap": 0.3})
    fig = figures.heatmap(df, {"x": "train.batches", "metrics": {"m0.9.gap": "0.9", "m0.99.gap": "0.99"}})
    ax = fig.axes[0]
    assert _ticks(ax) == ["10", "30", "100", "300", "1000"]
    texts = [t.get_text() for t in ax.texts]
    assert texts[0].startswith("0.11\n±") and texts[5] == "0.30\n±0.00"
    by_factor = figures.heatmap(df.assign(scaling=lambda d: np.where(d["seed"] == 0, "raw", "unit")),
                                {"x": "train.batches", "rows": "scaling", "value": "acc"})
    assert [t.get_text() for t in by_factor.axes[0].get_yticklabels()] == ["raw", "unit"]
    assert by_factor.axes[0].texts[0].get_text() == "0.10"  # one seed in the cell: no interval


def test_bars_panels_show_only_their_own_combinations():
    """A panel without some x value (a grid that left it out there) gets no empty slot for it."""
    df = pd.concat([_table("train.batches", [10, 30]).assign(semantics="a"),
                    _table("train.batches", [10]).assign(semantics="b")])
    fig = figures.bars(df, {"x": "train.batches", "panels": "semantics", "metrics": {"acc": "accuracy"}})
    assert [_ticks(ax) for ax in fig.axes] == [["10", "30"], ["10"]]
    assert [len(ax.patches) for ax in fig.axes] == [2, 1]


def test_marks_never_break_a_word_in_a_column_title():
    df = _table("bn.training", [None, False])
    fig = figures.marks(df, {"rows": "bn.training", "metrics": {"flag": "base(x, training=False) unfrozen"}})
    [title] = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "training=False)" in title.split("\n")  # 15 characters: wrapped at 14, it was split mid-word before


def test_marks_count_seeds_per_indicator_and_say_null():
    df = _table("bn.training", [None, False])
    df.loc[df["bn.training"].isna(), "other"] = np.nan
    fig = figures.marks(df, {"rows": "bn.training", "metrics": {"flag": "changed", "other": "x"}})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["false", "null"]
    assert [t.get_text() for t in ax.texts] == ["2/3", "0.50", "2/3", "n/a"]
    assert not ax.patches and not ax.containers  # a table, not bars on an accuracy axis


def test_draw_writes_stable_file_names_and_skips_what_is_absent(tmp_path):
    df = _table("train.batches", STEPS)
    specs = [{"kind": "bars", "file": "s_bars", "x": "train.batches", "y": "acc", "where": {"group": "a"}},
             {"kind": "lines", "file": "s_missing", "x": "train.batches", "y": "no_such_metric"},
             {"kind": "marks", "file": "s_marks", "rows": "train.batches", "metrics": {"flag": "flag"},
              "caption": "marks"}]
    out = figures.draw("synthetic", df, tmp_path, specs)
    assert [(p.name, cap) for p, cap in out] == [("s_bars.png", "s_bars"), ("s_marks.png", "marks")]
    assert all(p.stat().st_size > 1000 for p, _ in out)


def test_bad_spec_is_one_clear_line():
    with pytest.raises(UserError, match=r"scenario s: figure f: kind='pie'; valid: heatmap, bars"):
        figures.check_spec("s", {"kind": "pie", "file": "f"})
    with pytest.raises(UserError, match="missing metrics or y"):
        figures.check_spec("s", {"kind": "bars", "file": "f", "x": "a"})


def test_scenario_figure_specs_are_valid_and_cover_every_judged_claim():
    files = []
    for name, scfg in scenario_configs().items():
        specs = scfg.get("figures") or []
        for spec in specs:
            figures.check_spec(name, spec)
            assert set(spec.get("claims") or []) <= set(scfg["claims"]) | {"R1"}, (name, spec["file"])
        judged = {rule["claim"] for rule in scfg.get("verdicts") or []}
        shown = {c for spec in specs for c in spec.get("claims") or []}
        assert judged <= shown, f"{name}: no figure for {sorted(judged - shown)}"
        files += [spec["file"] for spec in specs]
    assert len(files) == len(set(files)), "figure file names must be unique across scenarios"


def test_indicators_never_on_a_value_axis():
    """No bars/lines/paired/heatmap spec plots a column that is 0/1 in the committed reference tables."""
    for name, scfg in scenario_configs().items():
        table = ROOT / "results" / "tables" / f"{name}.csv"
        if not table.exists():
            continue
        df = pd.read_csv(table)
        for spec in scfg.get("figures") or []:
            if spec["kind"] == "marks":
                continue
            cols = list(spec.get("metrics") or {}) + [spec[k] for k in ("y", "value") if spec.get(k)]
            for col in (c for c in cols if c in df):
                assert not df[col].dropna().isin([0, 1]).all(), f"{name}/{spec['file']}: {col} is a 0/1 indicator"


def test_figure_specs_are_not_part_of_a_run_identity():
    cfg = {"scenario": {"name": "s", "figures": [{"kind": "bars"}]}, "seed": 0}
    assert identity(cfg) == {"scenario": {"name": "s"}, "seed": 0}


def test_files_for_a_claim_follow_the_specs():
    specs = scenario_configs()["momentum"]["figures"]
    assert figures.files_for("R1", specs) == ["momentum_r1_fix"]
    assert figures.files_for("C02", specs) == ["momentum_gap_heatmap"]
