"""The report's conformance section: which BN pitfalls each Keras 3 release has on each backend (issue #29).

    section(df, root) -> markdown     tables/conformance_matrix.{csv,md} and figures/conformance_matrix.png too

From the records of scenario `conformance` (experiments/conformance.py), whatever grid ran them: each check of
`scenario.report.conformance` in configs/scenario/conformance.yaml judged per setup (backend, Keras release as
the record says it ran: `keras_backend`, `keras`) as

    holds       metric <compare> threshold in every seed of the setup     (the claim's pitfall is there)
    does not    in no seed
    mixed k/n   in k of n seeds
    cannot run  the probe raised there (`<probe>_error`), or the run failed; the error is listed below the table
    n/a         the probe does not apply there (its `applies` column is 0: C19 off TensorFlow)
    -           no record of that setup

then a heatmap of the same cells, and one line per release saying which cells changed from the release before
on the same backend, with the upstream PR or issue where one is known (UPSTREAM). The verdicts of C18-C21 are
judged on the default setup by bnexp.verdicts, like every claim's; this section judges no claim as a whole.
No framework import; matplotlib only for the figure.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bnexp import atomic
from bnexp.backends import version_key
from bnexp.names import BACKENDS

SCENARIO = "conformance"
OUTCOMES = ("holds", "does not", "mixed", "cannot run", "no data", "n/a", "-")
# Known upstream changes: (claim, first Keras release with the change, reference, what changed). A change
# between two releases of the matrix cites the entries of its claim whose release lies in between.
BUILD_FLAG = "a training= fixed while building a functional model takes precedence (on master, in no release)"
UPSTREAM = [
    *((claim, "3.16.0.dev0", "keras-team/keras#23364", BUILD_FLAG) for claim in ("C03", "C04", "C07", "C15")),
    ("C17", "3.14.0", "keras-team/keras#22104", "the JAX trainer reads trainable variables anew"),
    ("C20", "3.9.0", "keras-team/keras#20815", "masked moments broadcast over the feature axis"),
]


def checks(configs: dict | None = None) -> list[dict]:
    """The conformance checks declared in configs/scenario/conformance.yaml (scenario.report.conformance)."""
    if configs is None:
        from bnexp.config_check import scenario_configs

        configs = scenario_configs()
    return list(((configs.get(SCENARIO) or {}).get("report") or {}).get("conformance") or [])


def row_label(check: dict) -> str:
    return f"{check['claim']} {check['aspect']}" if check.get("aspect") else check["claim"]


# ---------------------------------------------------------------- judging cells


def setups(df: pd.DataFrame) -> pd.DataFrame:
    """The conformance records with `_backend` and `_release` (what ran; a failed run: what was asked)."""
    runs = df[df["scenario"] == SCENARIO].copy() if "scenario" in df else df.iloc[0:0].copy()

    def column(name):
        return runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)

    asked_backend = column("backend").where(column("backend").notna(), "tensorflow")
    runs["_backend"] = column("keras_backend").where(column("keras_backend").notna(), asked_backend)
    asked = column("keras_version").where(column("keras_version").notna(), "installed")
    runs["_release"] = column("keras").where(column("keras").notna(), asked).astype(str)
    return runs


def _values(runs: pd.DataFrame, metric: str) -> pd.Series:
    if metric in runs:
        return pd.to_numeric(runs[metric], errors="coerce")
    try:
        return pd.to_numeric(runs.eval(metric), errors="coerce")
    except Exception:  # a column this setup never recorded
        return pd.Series(np.nan, index=runs.index)


def judge(runs: pd.DataFrame, check: dict) -> tuple[str, str, str]:
    """(outcome, cell text, error) of one check on one setup's records."""
    if runs.empty:
        return "-", "-", ""
    failed = runs[runs["status"] != "ok"]
    if len(failed) == len(runs):
        return "cannot run", "cannot run", str(failed["error"].iloc[0])
    ok = runs[runs["status"] == "ok"]
    err_col = f"{check['probe']}_error"
    if err_col in ok and ok[err_col].notna().any():
        return "cannot run", "cannot run", str(ok[err_col].dropna().iloc[0])
    if check.get("applies") and (check["applies"] not in ok or (_values(ok, check["applies"]) == 0).all()):
        return "n/a", "n/a", ""
    values = _values(ok, check["metric"]).dropna()
    if values.empty:
        return "no data", "no data", f"{check['metric']} not recorded (and no error)"
    above = check["compare"] == ">"
    passed = int((values > check["threshold"]).sum() if above else (values < check["threshold"]).sum())
    n = len(values)
    if passed == n:
        return "holds", f"holds ({n}/{n})" if n > 1 else "holds", ""
    if passed == 0:
        return "does not", f"does not (0/{n})" if n > 1 else "does not", ""
    return "mixed", f"mixed {passed}/{n}", ""


def matrix(df: pd.DataFrame, configs: dict | None = None) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """One row per (check, backend, release): outcome and cell text; and the (setup, probe, error) list."""
    runs, rows, errors = setups(df), [], {}
    order = sorted(runs.groupby(["_backend", "_release"]).groups, key=_setup_key) if not runs.empty else []
    for check in checks(configs):
        for backend, release in order:
            here = runs[(runs["_backend"] == backend) & (runs["_release"] == release)]
            outcome, text, error = judge(here, check)
            rows.append({"check": row_label(check), "claim": check["claim"], "backend": backend, "release": release,
                         "outcome": outcome, "cell": text, "says": check.get("says", "")})
            if error:
                errors.setdefault((f"{backend} / Keras {release}", error), []).append(check["probe"])
    errs = [(setup, ", ".join(dict.fromkeys(probes)), error) for (setup, error), probes in errors.items()]
    return pd.DataFrame(rows), errs


def _setup_key(setup: tuple[str, str]) -> tuple:
    backend, release = setup
    order = list(BACKENDS)
    return (order.index(backend) if backend in order else len(order), version_key(release), release)


# ---------------------------------------------------------------- what changed release to release


def changes(table: pd.DataFrame) -> list[str]:
    """One line per release (oldest first, from the second): the cells that differ from the release before on
    the same backend (settled outcomes only: holds / does not), with the known upstream change."""
    if table.empty:
        return []
    releases = sorted(table["release"].unique(), key=version_key)
    lines = []
    for before, now in zip(releases, releases[1:]):
        moved, cited = [], {}
        for backend in dict.fromkeys(table["backend"]):
            a = table[(table["backend"] == backend) & (table["release"] == before)].set_index("check")
            b = table[(table["backend"] == backend) & (table["release"] == now)].set_index("check")
            for check in a.index.intersection(b.index):
                x, y = a.at[check, "outcome"], b.at[check, "outcome"]
                if x != y and {x, y} <= {"holds", "does not"}:
                    claim = b.at[check, "claim"]
                    moved.append(f"{check} on {backend}: {x} -> {y}")
                    for ref_claim, first, ref, what in UPSTREAM:
                        if ref_claim == claim and version_key(before) < version_key(first) <= version_key(now):
                            cited[ref] = what
        refs = "; ".join(f"{ref} ({what})" for ref, what in cited.items()) or "no upstream change identified here"
        lines.append(f"- **Keras {now}** (from {before}): " + ("; ".join(moved) + f". Upstream: {refs}." if moved
                                                                else "no settled cell changed."))
    return lines


# ---------------------------------------------------------------- rendering


COLOURS = {"holds": "#d9534f", "does not": "#5b8cc6", "mixed": "#f0ad4e", "cannot run": "#9e9e9e", "no data": "#c8c8c8",
           "n/a": "#ffffff", "-": "#eeeeee"}
SHORT = {"holds": "yes", "does not": "no", "mixed": "mix", "cannot run": "err", "no data": "?", "n/a": "n/a", "-": ""}


def heatmap(table: pd.DataFrame, path: Path) -> Path:
    """Checks (rows) x setups (columns, grouped by backend), one colour per outcome, a short word in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    rows = list(dict.fromkeys(table["check"]))
    cols = list(dict.fromkeys(zip(table["backend"], table["release"])))
    cell = {(r.check, (r.backend, r.release)): r.outcome for r in table.itertuples()}
    codes = np.array([[OUTCOMES.index(cell.get((r, c), "-")) for c in cols] for r in rows])
    fig, ax = plt.subplots(figsize=(2.0 + 0.55 * len(cols), 1.6 + 0.32 * len(rows)))
    ax.imshow(codes, cmap=ListedColormap([COLOURS[o] for o in OUTCOMES]), vmin=-0.5, vmax=len(OUTCOMES) - 0.5,
              aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, SHORT[OUTCOMES[codes[i, j]]], ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xticks(range(len(cols)), [f"{b}\n{_short(r)}" for b, r in cols], fontsize=7, rotation=90)
    for j in range(1, len(cols)):  # a line between backends
        if cols[j][0] != cols[j - 1][0]:
            ax.axvline(j - 0.5, color="black", lw=1.2)
    ax.set_xticks(np.arange(-0.5, len(cols)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(rows)), minor=True)
    ax.grid(which="minor", color="white", lw=0.8)
    ax.tick_params(which="minor", length=0)
    ax.set_title("BN conformance per backend and Keras release\n(yes: the claim's behaviour holds there)", fontsize=9)
    ax.legend(handles=[Patch(facecolor=COLOURS[o], edgecolor="grey", label=o) for o in OUTCOMES[:6]],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def _short(release: str) -> str:
    """3.16.0.dev2026102704 -> 3.16.0.dev20261027 (the date) for an axis label."""
    head, _, dev = release.partition(".dev")
    return f"{head}.dev{dev[:8]}" if dev else release


def _md(table: pd.DataFrame, backend: str) -> list[str]:
    part = table[table["backend"] == backend]
    releases = list(dict.fromkeys(part["release"]))
    lines = ["| check | " + " | ".join(releases) + " |", "|---" * (len(releases) + 1) + "|"]
    for check, rows in part.groupby("check", sort=False):
        cells = dict(zip(rows["release"], rows["cell"]))
        lines.append(f"| {check} | " + " | ".join(cells.get(r, "-") for r in releases) + " |")
    return lines


def section(df: pd.DataFrame, root: str | Path, configs: dict | None = None) -> str:
    """The report's conformance section (markdown; empty when there are no conformance records), and its table
    and heatmap under `root`/tables and `root`/figures."""
    root = Path(root)
    table, errors = matrix(df, configs)
    if table.empty:
        return ""
    csv = root / "tables" / "conformance_matrix.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_open(csv, "w") as f:
        table.to_csv(f, index=False)
    png = heatmap(table, root / "figures" / "conformance_matrix.png")
    lines = ["## Conformance: BN pitfalls per Keras release and backend", "",
             "Each check below is one claim's pitfall measured by a short probe (`experiments/conformance.py`, "
             "`bnexp/toolkit/conformance_probes.py`) on tiny synthetic tensors, on the Keras release and backend the "
             "record says ran (nightly: the keras-nightly build, its date in the version). **holds**: the claim's "
             "behaviour is there in every seed; **does not**: in none; **mixed k/n**: in k of n seeds; **cannot "
             "run**: the probe failed on that setup (errors below); **n/a**: the probe does not apply; **-**: no "
             "record. One seed per setup except the default setup (TensorFlow, the installed Keras), which the "
             "C18-C21 verdicts read. Checks and thresholds: `scenario.report.conformance` in "
             "`configs/scenario/conformance.yaml`; table: `tables/conformance_matrix.csv`.", ""]
    for check in checks(configs):
        lines.append(f"- **{row_label(check)}**: {check.get('says', '')} (`{check['metric']}` {check['compare']} "
                     f"{check['threshold']:g})")
    lines.append("")
    for backend in dict.fromkeys(table["backend"]):
        lines += [f"### {backend}", "", *_md(table, backend), ""]
    lines += [f"![BN conformance per backend and Keras release]({png.relative_to(root).as_posix()})",
              "*Each check per backend and Keras release: yes = the claim's behaviour holds, no = it does not, "
              "err = cannot run there.*", ""]
    moved = changes(table)
    if moved:
        lines += ["### What changed from one release to the next", "", *moved, ""]
    if errors:
        lines += ["### Setups that could not run a probe", "",
                  "Every setup runs with the JAX and PyTorch installed here (constraints.txt), not those of the "
                  "release's time: an error from inside the framework (JAX's removed `spmd_mode` under older "
                  "Keras, a missing torchvision) says the pairing cannot run, not how that release's BN behaves.", "",
                  "| setup | probes | error |", "|---|---|---|"]
        lines += [f"| {setup} | {probes} | {_cell(error)[:200]} |" for setup, probes, error in errors]
        lines.append("")
    atomic.write_text(root / "tables" / "conformance_matrix.md", "\n".join(lines[lines.index("") + 1:]) + "\n")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """A table cell: one line, no '|', no terminal colour codes (Keras' error messages carry some)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(text)).replace("|", "\\|").replace("\n", " ")
