"""One figure function per scenario: draw(scenario, records, folder) -> [(png path, caption)].

Figures are drawn from the records only (matplotlib, Agg backend), so they are readable without the text.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DRAWERS: dict = {}


def drawer(scenario: str):
    def register(fn):
        DRAWERS.setdefault(scenario, []).append(fn)
        return fn
    return register


def draw(scenario: str, df: pd.DataFrame, folder: Path) -> list[tuple[Path, str]]:
    ok = df[df["status"] == "ok"] if "status" in df else df
    out = []
    for fn in DRAWERS.get(scenario, []):
        if ok.empty:
            break
        result = fn(ok, folder)
        if result:
            out.append(result)
    return out


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@drawer("momentum")
def momentum_heatmaps(df: pd.DataFrame, folder: Path):
    """gap_test (batch-stats minus moving-stats test accuracy) over momentum x batches, one panel per scaling.

    Momenta come from the replay columns m<value>.gap_test (see experiments/momentum.py); exp = exp(-1/B).
    """
    replay = [c for c in df.columns if c.startswith("m") and c.endswith(".gap_test")]
    if "train.batches" not in df or not replay:
        return None
    names = sorted((c[1:-len(".gap_test")] for c in replay), key=lambda m: (m == "exp", float(m) if m != "exp" else 0))
    scalings = sorted(df["data.scaling"].dropna().unique()) if "data.scaling" in df else ["all"]
    batches = sorted(df["train.batches"].unique())
    fig, axes = plt.subplots(1, len(scalings), figsize=(4.2 * len(scalings), 3.6), squeeze=False,
                             layout="constrained")
    for ax, s in zip(axes[0], scalings):
        sub = df[df["data.scaling"] == s] if s != "all" else df
        grid = np.array([[sub[sub["train.batches"] == b][f"m{m}.gap_test"].mean() for b in batches] for m in names])
        im = ax.imshow(grid, vmin=0, vmax=0.6, cmap="magma_r", aspect="auto")
        ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        ax.set_yticks(range(len(names)), ["exp(-1/B)" if m == "exp" else m for m in names])
        ax.set_xlabel("training batches B")
        ax.set_ylabel("BN momentum")
        ax.set_title(f"scaling={s}")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.3 else "black")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="test acc: batch stats - moving stats")
    fig.suptitle("C01/C02: inference gap after B steps (mean over seeds)")
    return (_save(fig, folder / "momentum_gap_heatmap.png"),
            "Test-accuracy gap (batch stats - moving stats) by momentum and training batches, per input scaling")


def _bars(df: pd.DataFrame, groups: list[str], metrics: dict[str, str], title: str, path: Path,
          ylabel: str = "accuracy", ylim=(0, 1)):
    """Grouped bars: one group per combination of `groups`, one bar per metric (mean over seeds, 95% CI)."""
    from bnexp.verdicts import mean_ci

    metrics = {k: v for k, v in metrics.items() if k in df}
    groups = [g for g in groups if g in df and df[g].astype(str).nunique() > 1]
    if not metrics:
        return None
    labels = [", ".join(map(str, row)) for row in df[groups].itertuples(index=False)] if groups else ["all"] * len(df)
    keyed = df.assign(_key=labels)
    keys = sorted(set(labels))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(min(16, max(6, 0.25 * len(keys) * len(metrics) + 2)), 4.5), layout="constrained")
    for i, (col, label) in enumerate(metrics.items()):
        stats = [mean_ci(pd.to_numeric(keyed[keyed["_key"] == k][col], errors="coerce").dropna()) for k in keys]
        means = [s[0] for s in stats]
        errs = [(s[2] - s[0]) if np.isfinite(s[2]) else 0 for s in stats]
        ax.bar(np.arange(len(keys)) + i * width, means, width, yerr=errs, capsize=2, label=label)
    ax.set_xticks(np.arange(len(keys)) + width * (len(metrics) - 1) / 2, keys, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(", ".join(groups))
    ax.legend(fontsize=7)
    return _save(fig, path)


def _lines(df: pd.DataFrame, x: str, series: str, metric: str, title: str, path: Path, panels: str | None = None,
           xbase: int | None = 2, ylabel: str = "test accuracy"):
    """Mean over seeds of `metric` against `x`, one line per `series` value, one panel per `panels` value."""
    if not {x, series, metric} <= set(df.columns):
        return None
    panel_values = sorted(df[panels].dropna().unique(), key=str) if panels and panels in df else [None]
    fig, axes = plt.subplots(1, len(panel_values), figsize=(4.5 * len(panel_values), 3.6), squeeze=False,
                             layout="constrained")
    for ax, pv in zip(axes[0], panel_values):
        sub = df if pv is None else df[df[panels] == pv]
        for s, g in sub.groupby(series, dropna=False):
            curve = g.groupby(x)[metric].mean().sort_index()
            ax.plot(curve.index, curve.values, marker="o", label=str(s))
        if xbase:
            ax.set_xscale("log", base=xbase)
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{panels}={pv}" if pv is not None else "", fontsize=9)
        ax.legend(fontsize=7, title=series, title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


ACC3 = {"acc_test_batchstats": "batch stats", "acc_test_moving": "moving stats", "acc_test_precise": "precise BN (R1)"}


@drawer("momentum")
def momentum_fix(df, folder):
    path = _bars(df, ["data.scaling", "train.batches"], ACC3,
                 "C01 / R1: test accuracy by statistics used (trained momentum 0.99)", folder / "momentum_r1_fix.png")
    return path and (path, "Test accuracy with batch, moving and precise-BN statistics, per scaling and batch count")


@drawer("training_flag")
def training_flag_bars(df, folder):
    path = _bars(df, ["semantics", "model.flag_style", "bn.training"],
                 {"acc_test_evaluate": "evaluate()", "acc_test_bs1": "predict, batch 1", "acc_test_bs1000": "batch 1000",
                  "acc_test_nobn": "same model without BN", "stats_changed_fit": "moving stats changed in fit (0/1)"},
                 "C03/C04/C14: the training flag, fixed two ways", folder / "training_flag.png")
    return path and (path, "Accuracy and whether fit changed the moving statistics, per semantics, flag style and flag")


@drawer("weights_order")
def weights_order_bars(df, folder):
    path = _bars(df, ["semantics"], {"acc_test_moving": "as trained", "acc_test_slot4_variance": "variance in slot 4",
                                     "acc_test_slot4_std": "std in slot 4"},
                 "C10: writing a variance vs a standard deviation into slot 4", folder / "weights_order.png")
    return path and (path, "Test accuracy with population variance vs standard deviation written in get_weights()[3]")


@drawer("bn_benefit")
def bn_benefit_lines(df, folder):
    path = _lines(df, "train.lr", "norm", "acc_test_final", "C13: final test accuracy vs learning rate",
                  folder / "bn_benefit.png", panels="train.optimizer", xbase=10)
    return path and (path, "Final test accuracy with and without BN over learning rates, per optimizer")


@drawer("frozen_base")
def frozen_base_bars(df, folder):
    path = _bars(df, ["semantics", "base.trainable", "base.training"],
                 {"acc_train_fit": "fit-time train", "acc_train_eval": "evaluate() train", "acc_test_eval": "test",
                  "acc_test_precise": "test, precise BN (R1)"},
                 "C05/C06: fine-tuning a pretrained base", folder / "frozen_base.png")
    return path and (path, "Fit-time vs evaluate() vs test accuracy, per semantics, base.trainable and base.training")


@drawer("update_ops")
def update_ops_bars(df, folder):
    path = _bars(df, ["update_ops.impl", "update_ops.attach"], ACC3,
                 "C08: TF1 graph mode with and without the UPDATE_OPS dependency", folder / "update_ops.png")
    return path and (path, "Test accuracy by statistics used, per BN implementation and attach setting")


@drawer("checkpoint")
def checkpoint_bars(df, folder):
    path = _bars(df, ["semantics", "checkpoint.strategy"],
                 {"acc_test_saved": "before saving", "acc_test_restored": "restored (missing stats initialized)",
                  "restore_failed": "plain restore failed (0/1)"},
                 "C09: checkpoints with and without the moving statistics", folder / "checkpoint.png")
    return path and (path, "Test accuracy before saving and after restoring, per semantics and save strategy")


@drawer("batch_size")
def batch_size_lines(df, folder):
    path = _lines(df, "train.batch_size", "norm", "acc_test_moving",
                  "C11: test accuracy (inference mode) vs batch size, equal epochs", folder / "batch_size.png")
    return path and (path, "Test accuracy with moving statistics vs training batch size, per normalization")


@drawer("batch_size")
def batch_size_r1(df, folder):
    bn = df[df["norm"].isin(["bn", "brn"])] if "norm" in df else df
    path = _bars(bn, ["norm", "train.batch_size"], ACC3, "C11 / R1: BN at small batch sizes, by statistics used",
                 folder / "batch_size_r1.png")
    return path and (path, "BN and BRN test accuracy with batch, moving and precise-BN statistics per batch size")


@drawer("variance")
def variance_bars(df, folder):
    path = _bars(df, ["train.batch_size"], {"acc_test_moving": "moving variance (Keras)",
                                           "acc_test_var_biased": "recomputed, biased",
                                           "acc_test_var_unbiased": "recomputed, unbiased m/(m-1)"},
                 "C12: which variance at inference", folder / "variance.png")
    return path and (path, "Test accuracy with the moving, biased and unbiased population variance, per batch size")


@drawer("variance")
def variance_r1_curve(df, folder):
    cols = sorted((c for c in df.columns if c.startswith("acc_test_r1_n")), key=lambda c: int(c.rsplit("n", 1)[1]))
    if not cols:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    for bs, g in df.groupby("train.batch_size"):
        ax.plot([int(c.rsplit("n", 1)[1]) for c in cols], [g[c].mean() for c in cols], marker="o", label=str(bs))
    ax.set_xscale("log")
    ax.set_xlabel("batches used by precise BN")
    ax.set_ylabel("test accuracy")
    ax.legend(title="train batch size", fontsize=7)
    ax.set_title("R1: how many batches precise BN needs", fontsize=10)
    return _save(fig, folder / "variance_r1_curve.png"), "Test accuracy after precise BN with 1..200 recomputation batches"
