"""Figures from a scenario's records, drawn by a few generic kinds as its YAML (`scenario.figures:`) specifies.

`draw(scenario, table, folder)` draws every figure the scenario declares and returns [(png path, caption)];
`files_for(claim, specs)` names the figures that show a claim's evidence (for a verdict's link).
Kinds (each `kind(table, spec) -> Figure`): heatmap, bars, lines, curve, paired, marks.

Every bar, line and point with several seeds carries its mean's 95% Student-t interval; numeric factors are
ordered by value; factor values null (None/NaN), false and true stay distinct and are labelled so; 0/1
indicators go into a `marks` table, never onto an accuracy axis. A figure file is `<folder>/<file>.png`,
with `file` fixed in the spec so that a verdict can link it.

Spec keys (all kinds): kind, file, title, caption, claims (the claims whose evidence it shows), where (rows
to keep, as in a verdict rule), panels (one subplot per value of this factor), order ({factor: [values]}).
Per kind: heatmap: x, rows (factor) + value (metric) or metrics ({column: label}, one row each), vmin, vmax,
cbar. bars: x (factor or list), metrics ({column: label}) or y + hue, ylabel, ylim. lines: x, metrics or
y + hue, xscale (log), ylabel, ylim. curve: columns ("acc_test_r1_n{}": x read from the column names), hue,
xlabel. paired: metrics (the conditions, in order), difference ([a, b]). marks: rows (factors), metrics.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bnexp import scenario_spec  # noqa: E402
from bnexp.atomic import atomic_open  # noqa: E402
from bnexp.values import mean_half, select, sort_key  # noqa: E402
from bnexp.values import value_label as label  # noqa: E402

# ---- values, order, selection (bnexp.values: the same as the verdicts') ----------------------------------------

def levels(series: pd.Series, order: list | None = None) -> list:
    """The distinct values of a factor column in display order (one entry for null, however it is stored)."""
    seen: dict[str, object] = {}
    for v in series.tolist():
        seen.setdefault(label(v), v)
    values = sorted(seen.values(), key=sort_key)
    if order:
        rank = {label(o): i for i, o in enumerate(order)}
        values.sort(key=lambda v: rank.get(label(v), len(rank)))
    return values


def _keys(df: pd.DataFrame, factors: list[str]) -> pd.Series:
    """Per row, the tuple of its factor labels (what groups rows; null and false stay apart)."""
    return pd.Series([tuple(label(v) for v in row) for row in df[factors].itertuples(index=False)], index=df.index,
                     dtype=object) if factors else pd.Series([()] * len(df), index=df.index, dtype=object)


def values(df: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(df[column], errors="coerce")


def mean_ci(v) -> tuple[float, float]:
    """Mean and 95% Student-t half-width over seeds; half-width NaN (no bar drawn) with fewer than two values."""
    m, half = mean_half(v)
    return m, half if math.isfinite(half) else math.nan


def _columns(spec: dict) -> list[str]:
    """Column names a spec needs (a curve's column family is looked for by `curve`)."""
    cols = [spec.get(k) for k in ("x", "hue", "panels", "rows", "y", "value")]
    cols = [c for c in cols if c]
    cols = [c for item in cols for c in (item if isinstance(item, list) else [item])]
    return cols + list(spec.get("metrics") or {})


# ---- layout -------------------------------------------------------------------------------------------------

def _panels(df: pd.DataFrame, spec: dict, panel_w: float, panel_h: float):
    """Figure with one axes per value of spec['panels'] (wrapped at 3 columns): [(axes, rows, title)]."""
    factor = spec.get("panels")
    vals = levels(df[factor], (spec.get("order") or {}).get(factor)) if factor else [None]
    nrows, ncols = _grid(len(vals), spec)
    width = max(6.0, panel_w * ncols)  # room for the title and the legend below
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_h * nrows + 0.6), squeeze=False,
                             layout="constrained")
    out = []
    for ax, v in zip(axes.flat, vals):
        rows = df if factor is None else df[df[factor].map(label) == label(v)]
        out.append((ax, rows, f"{factor} = {label(v)}" if factor else ""))
    for ax in list(axes.flat)[len(vals):]:
        ax.set_visible(False)
    if spec.get("title"):
        fig.suptitle(textwrap.fill(spec["title"], int(width * 11)), fontsize=11)
    return fig, out


def _grid(n_panels: int, spec: dict) -> tuple[int, int]:
    """Rows and columns of panels: spec['ncols'] if given, else up to 3 across (2 x 2 for 4)."""
    ncols = min(spec.get("ncols") or (2 if n_panels == 4 else 3), n_panels)
    return math.ceil(n_panels / ncols), ncols


def _series(df: pd.DataFrame, spec: dict) -> list[tuple[str, pd.DataFrame, str]]:
    """What one panel compares: [(label, rows, metric)] from `metrics` ({col: label}) or `y` split by `hue`."""
    if spec.get("metrics"):
        return [(lab, df, col) for col, lab in spec["metrics"].items()]
    hue = spec.get("hue")
    if not hue:
        return [(spec["y"], df, spec["y"])]
    return [(f"{hue} = {label(v)}", df[df[hue].map(label) == label(v)], spec["y"])
            for v in levels(df[hue], (spec.get("order") or {}).get(hue))]


def _legend(fig, axes, counts: set[int]) -> None:
    """The series below the panels, titled with how many seeds each mean and interval comes from."""
    handles, labels = axes[0].get_legend_handles_labels()
    n = "/".join(map(str, sorted(counts))) or "0"
    title = "one seed: no interval" if counts == {1} else f"mean and 95% t-interval over {n} seeds"
    per_row = max(1, min(len(labels), int(fig.get_figwidth() / 2.2)))
    fig.legend(handles, labels, loc="outside lower center", ncols=per_row, fontsize=8, title=title,
               title_fontsize=8)


# ---- kinds --------------------------------------------------------------------------------------------------

def bars(df: pd.DataFrame, spec: dict) -> plt.Figure:
    """Grouped bars: one group per value (combination) of x, one bar per series; 95% CI and each seed's dot."""
    xs = spec["x"] if isinstance(spec["x"], list) else [spec["x"]]
    n_series = len(_series(df, spec))
    width = 0.8 / n_series
    fig, panels = _panels(df, spec, max(3.2, 0.3 * len(_groups(df, xs, spec)) * n_series + 1.2), 3.6)
    counts = set()
    for ax, rows, title in panels:
        keys = _keys(rows, xs)
        groups = _groups(rows, xs, spec)  # this panel's own: no empty slot for a combination another panel has
        for i, (name, sub, metric) in enumerate(_series(rows, spec)):
            sub_keys = keys.loc[sub.index]
            y = values(sub, metric)
            stats_ = [mean_ci(y[sub_keys == g]) for g in groups]
            counts |= {int(y[sub_keys == g].notna().sum()) for g in groups} - {0}
            pos = np.arange(len(groups)) + (i - (n_series - 1) / 2) * width
            ax.bar(pos, [m for m, _ in stats_], width, yerr=[h for _, h in stats_],
                   capsize=3, label=name, color=f"C{i}", error_kw={"elinewidth": 1})
            for p, g in zip(pos, groups):
                seeds = y[sub_keys == g].dropna()
                ax.plot(np.full(len(seeds), p), seeds, ".", color="black", markersize=3, zorder=3)
        ax.set_xticks(np.arange(len(groups)), ["\n".join(g) for g in groups], fontsize=8)
        ax.set_xlabel(" / ".join(xs), fontsize=8)
        _style(ax, spec, title)
    _legend(fig, [p[0] for p in panels], counts)
    return fig


def _groups(df: pd.DataFrame, factors: list[str], spec: dict) -> list[tuple]:
    """The label tuples of the factor combinations present, each factor in its display order."""
    rank = {f: {label(v): i for i, v in enumerate(levels(df[f], (spec.get("order") or {}).get(f)))}
            for f in factors}
    return sorted(set(_keys(df, factors)), key=lambda k: tuple(rank[f][lab] for f, lab in zip(factors, k)))


def _style(ax, spec: dict, title: str) -> None:
    ax.set_ylabel(spec.get("ylabel", "test accuracy"), fontsize=9)
    if spec.get("ylim"):
        ax.set_ylim(*spec["ylim"])
    if spec.get("hline") is not None:
        ax.axhline(spec["hline"], color="grey", linewidth=0.8, linestyle="--")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def lines(df: pd.DataFrame, spec: dict) -> plt.Figure:
    """Mean over seeds against a numeric x, one line per series, 95% CI as error bars."""
    x = spec["x"]
    df = df.assign(**{x: pd.to_numeric(df[x], errors="coerce")}).dropna(subset=[x])
    fig, panels = _panels(df, spec, 4.4, 3.4)
    ticks = sorted(df[x].unique())
    counts = set()
    for ax, rows, title in panels:
        series = _series(rows, spec)
        for i, (name, sub, metric) in enumerate(series):
            y = values(sub, metric)
            pts = [(xv, *mean_ci(y[sub[x] == xv])) for xv in ticks if (sub[x] == xv).any()]
            counts |= {int(y[sub[x] == xv].notna().sum()) for xv in ticks} - {0}
            if not pts:
                continue
            xv, m, h = map(np.asarray, zip(*pts))
            ax.errorbar(_dodge(xv, i, len(series), spec.get("xscale") == "log", ticks), m,
                        yerr=h, marker="osD^v<>"[i % 7], markersize=4, capsize=3,
                        linestyle=("-", "--", ":", "-.")[i % 4], label=name, color=f"C{i}")
        if spec.get("xscale") == "log":
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(ticks, [label(t) for t in ticks], fontsize=8)
        ax.set_xlabel(spec.get("xlabel", x), fontsize=9)
        _style(ax, spec, title)
    _legend(fig, [p[0] for p in panels], counts)
    return fig


def _dodge(x: np.ndarray, i: int, n: int, log: bool, ticks: list) -> np.ndarray:
    """Shift series i of n sideways a little so that equal means keep their error bars apart."""
    shift = i - (n - 1) / 2
    if log and min(ticks) > 0:
        return x * 10 ** (0.012 * shift * (math.log10(max(ticks) / min(ticks)) or 1))
    return x + 0.012 * shift * ((max(ticks) - min(ticks)) or 1)


def curve(df: pd.DataFrame, spec: dict) -> plt.Figure | None:
    """`lines` over a family of columns whose names carry x (e.g. acc_test_r1_n{} for n = 1 .. 200)."""
    prefix, suffix = spec["columns"].split("{}")
    cols = {c: c[len(prefix):len(c) - len(suffix)] for c in df.columns
            if c.startswith(prefix) and c.endswith(suffix) and len(c) > len(prefix) + len(suffix)}
    xs = pd.to_numeric(pd.Series(cols), errors="coerce").dropna()
    cols = xs.to_dict()
    if not cols:
        return None
    long = df.melt(id_vars=[c for c in df.columns if c not in cols], value_vars=list(cols), var_name="_col",
                   value_name="_y")
    long["_x"] = long["_col"].map(cols)
    return lines(long, {**spec, "x": "_x", "y": "_y", "xlabel": spec.get("xlabel", spec["columns"])})


def paired(df: pd.DataFrame, spec: dict) -> plt.Figure:
    """Each seed's values under every condition joined by a line; mean and 95% CI beside them; the paired
    difference (its own CI) written in the panel when `difference: [a, b]` is given."""
    conds = list(spec["metrics"].items())
    fig, panels = _panels(df, spec, max(3.0, 1.1 * len(conds) + 1), 3.6)
    counts = set()
    for ax, rows, title in panels:
        table = pd.DataFrame({col: values(rows, col) for col, _ in conds})
        pos = np.arange(len(conds))
        for j, (_, row) in enumerate(table.iterrows()):
            ax.plot(pos, row.values, "-o", color="grey", alpha=0.6, markersize=3, linewidth=0.8,
                    label="one seed" if j == 0 else None)
        stats_ = [mean_ci(table[col]) for col, _ in conds]
        counts |= {int(table[col].notna().sum()) for col, _ in conds} - {0}
        ax.errorbar(pos + 0.12, [m for m, _ in stats_], yerr=[h for _, h in stats_],
                    fmt="D", color="C3", capsize=3, markersize=5, label="mean, 95% CI")
        ax.set_xticks(pos, [lab for _, lab in conds], fontsize=8)
        ax.set_xlim(-0.4, len(conds) - 0.6)
        if spec.get("difference"):
            a, b = spec["difference"]
            diff = (table[a] - table[b]).dropna()
            m, h = mean_ci(diff)
            ax.text(0.02, 0.02, f"{spec['metrics'][a]} − {spec['metrics'][b]}, paired over {len(diff)} seeds:\n"
                    f"{m:.3f} [{m - h:.3f}, {m + h:.3f}] (95% CI)", transform=ax.transAxes, fontsize=7,
                    va="bottom")
        _style(ax, spec, title)
    _legend(fig, [p[0] for p in panels], counts)
    return fig


def heatmap(df: pd.DataFrame, spec: dict) -> plt.Figure:
    """Mean over seeds per cell (± 95% CI half-width written in it): x across, a factor or metrics down."""
    x = spec["x"]
    xs = levels(df[x], (spec.get("order") or {}).get(x))
    if spec.get("metrics"):
        row_items = [(lab, None, col) for col, lab in spec["metrics"].items()]
    else:
        rows_f = spec["rows"]
        row_items = [(label(v), v, spec["value"]) for v in levels(df[rows_f], (spec.get("order") or {}).get(rows_f))]
    fig, panels = _panels(df, spec, 0.75 * len(xs) + 1.6, 0.45 * len(row_items) + 1.4)
    vmin, vmax = spec.get("vmin"), spec.get("vmax")
    im = None
    for ax, rows, title in panels:
        mean = np.full((len(row_items), len(xs)), np.nan)
        half = np.full_like(mean, np.nan)
        for i, (_, rv, metric) in enumerate(row_items):
            sub = rows if rv is None else rows[rows[spec["rows"]].map(label) == label(rv)]
            for j, xv in enumerate(xs):
                mean[i, j], half[i, j] = mean_ci(values(sub[sub[x].map(label) == label(xv)], metric))
        im = ax.imshow(mean, vmin=vmin, vmax=vmax, cmap=spec.get("cmap", "magma_r"), aspect="auto")
        ax.set_xticks(range(len(xs)), [label(v) for v in xs], fontsize=8)
        ax.set_yticks(range(len(row_items)), [r[0] for r in row_items], fontsize=8)
        ax.set_xlabel(spec.get("xlabel", x), fontsize=9)
        ax.set_ylabel(spec.get("ylabel", spec.get("rows", "")), fontsize=9)
        ax.set_title(title, fontsize=9)
        mid = (np.nanmax(mean) + np.nanmin(mean)) / 2 if vmin is None or vmax is None else (vmin + vmax) / 2
        for (i, j), m in np.ndenumerate(mean):
            if np.isfinite(m):
                text = f"{m:.2f}" + (f"\n±{half[i, j]:.2f}" if np.isfinite(half[i, j]) else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color="white" if m > mid else "black")
    if im is not None:
        fig.colorbar(im, ax=[p[0] for p in panels], shrink=0.85, label=spec.get("cbar", ""))
    return fig


def marks(df: pd.DataFrame, spec: dict) -> plt.Figure:
    """A table of 0/1 indicators: per row group and indicator, how many seeds had it (k/n), shaded by k/n."""
    rows_f = spec["rows"] if isinstance(spec["rows"], list) else [spec["rows"]]
    cols = list(spec["metrics"].items())
    longest = max(len(" / ".join(g)) for g in _groups(df, rows_f, spec))
    fig, panels = _panels(df, spec, 1.15 * len(cols) + 0.075 * longest + 0.8, 0)
    n_groups = max(len(set(_keys(rows, rows_f))) for _, rows, _ in panels)
    fig.set_figheight((0.32 * n_groups + 1.4) * _grid(len(panels), spec)[0] + 0.8)
    for ax, rows, title in panels:
        keys = _keys(rows, rows_f)
        groups = _groups(rows, rows_f, spec)
        frac = np.full((len(groups), len(cols)), np.nan)
        for i, g in enumerate(groups):
            for j, (col, _) in enumerate(cols):
                v = values(rows[keys == g], col).dropna()
                if len(v):
                    frac[i, j] = v.mean()
                    binary = v.isin([0, 1]).all()
                    text = f"{int(v.sum())}/{len(v)}" if binary else f"{v.mean():.2f}"
                else:
                    text = "n/a"
                ax.text(j, i, text, ha="center", va="center", fontsize=7.5,
                        color="white" if np.isfinite(frac[i, j]) and frac[i, j] > 0.6 else "black")
        ax.imshow(np.ma.masked_invalid(frac), vmin=0, vmax=1, cmap="Blues", aspect="auto")
        ax.set_facecolor("0.92")
        ax.set_xticks(range(len(cols)), [textwrap.fill(lab, 14, break_long_words=False) for _, lab in cols],
                      fontsize=7.5)  # a long word stays whole ("training=False", never "traini ng")
        ax.set_yticks(range(len(groups)), [" / ".join(g) for g in groups], fontsize=8)
        ax.set_ylabel(" /\n".join(rows_f), fontsize=8)  # stacked: a short panel still has room
        ax.xaxis.tick_top()
        ax.tick_params(axis="x", labeltop=True, labelbottom=False)
        ax.set_title(title, fontsize=9)
    return fig


KINDS = {"heatmap": heatmap, "bars": bars, "lines": lines, "curve": curve, "paired": paired, "marks": marks}


# ---- dispatch -----------------------------------------------------------------------------------------------

def check_spec(scenario: str, spec: dict) -> None:
    """One clear line for a figure spec that cannot be drawn (bnexp.scenario_spec.check_figure)."""
    scenario_spec.check_figure(f"scenario {scenario}", spec)


def draw(scenario: str, table: pd.DataFrame, folder: str | Path, specs: list[dict] | None = None
         ) -> list[tuple[Path, str]]:
    """Draw the scenario's figures (its YAML `figures:` unless `specs` is given) from its records;
    return [(png path, caption)]. A figure whose columns or rows are absent (a partial sweep) is skipped."""
    if specs is None:
        specs = scenario_spec.get(scenario).figures
    folder = Path(folder)
    ok = (table[table["status"] == "ok"] if "status" in table else table).reset_index(drop=True)
    out = []
    for spec in specs:
        check_spec(scenario, spec)
        rows = select(ok, spec.get("where"))
        if rows.empty or not set(_columns(spec)) <= set(rows.columns):
            continue
        fig = KINDS[spec["kind"]](rows, spec)
        if fig is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{spec['file']}.png"
        try:
            with atomic_open(path, "wb") as f:  # a figure is complete or absent, even on a full disk
                fig.savefig(f, dpi=110, format="png")
        finally:
            plt.close(fig)
        out.append((path, spec.get("caption") or spec.get("title") or spec["file"]))
    return out


def files_for(claim: str, specs: list[dict]) -> list[str]:
    """The figure files (without .png) whose spec says they show this claim's evidence, in spec order."""
    return [spec["file"] for spec in specs if claim in (spec.get("claims") or [])]
