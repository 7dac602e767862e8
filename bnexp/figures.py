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
    """gap_test (batch-stats minus moving-stats test accuracy) over momentum x batches, one panel per scaling."""
    need = {"bn.momentum", "train.batches", "gap_test"}
    if not need <= set(df.columns):
        return None
    scalings = sorted(df["data.scaling"].dropna().unique()) if "data.scaling" in df else ["all"]
    fig, axes = plt.subplots(1, len(scalings), figsize=(4.2 * len(scalings), 3.6), squeeze=False,
                             layout="constrained")
    for ax, s in zip(axes[0], scalings):
        sub = df[df["data.scaling"] == s] if s != "all" else df
        table = sub.pivot_table(index="bn.momentum", columns="train.batches", values="gap_test", aggfunc="mean")
        im = ax.imshow(table.values, vmin=0, vmax=max(0.5, np.nanmax(table.values)), cmap="magma_r", aspect="auto")
        ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
        ax.set_yticks(range(len(table.index)), [f"{m:g}" for m in table.index])
        ax.set_xlabel("training batches B")
        ax.set_ylabel("BN momentum")
        ax.set_title(f"scaling={s}")
        for (i, j), v in np.ndenumerate(table.values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.25 else "black")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="test acc: batch stats - moving stats")
    fig.suptitle("C01/C02: inference gap after B steps (mean over seeds)")
    return _save(fig, folder / "momentum_gap_heatmap.png"), "Test-accuracy gap (batch stats - moving stats) by momentum and training batches, per input scaling"
