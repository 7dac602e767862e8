"""Factor values, their labels and order, row selection and the 95% t-interval: one implementation for the
verdicts, the tables and the figures, so that a figure shows exactly the groups a verdict judged.

A factor value is null (None, NaN), false, true, a number or a word; null, false and true are three values and
1 is not true. A string that reads exactly as a value's label is that value, so a YAML `where: {x: 1}` selects
a cell holding 1, 1.0 or "1"; `where: {x: null}` selects None, NaN and "null"; `true` selects True and "true".
"3.10" is not 3.1 (it does not read as 3.1's label), so version strings stay apart. Two values are the same
group exactly when their keys are equal, and a key's label is how the value is written everywhere (report,
tables, figures). Plain pandas and NumPy: no TensorFlow.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd
from scipy import stats

WORDS = {"null": ("null",), "false": ("bool", False), "true": ("bool", True)}


def _is_null(value) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _number_label(x: float) -> str:
    return str(int(x)) if x.is_integer() else f"{x:g}"


def value_key(value) -> tuple:
    """A hashable key: ("null",), ("bool", b), ("num", float) or ("str", s); see the module docstring."""
    if _is_null(value):
        return ("null",)
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, numbers.Real):
        return ("num", float(value))
    text = str(value)
    if text in WORDS:
        return WORDS[text]
    try:
        number = float(text)
    except ValueError:
        return ("str", text)
    if math.isfinite(number) and _number_label(number) == text:
        return ("num", number)
    return ("str", text)


def key_label(key: tuple) -> str:
    kind, *rest = key
    if kind == "null":
        return "null"
    if kind == "bool":
        return "true" if rest[0] else "false"
    if kind == "num":
        return _number_label(rest[0])
    return rest[0]


def value_label(value) -> str:
    """How a factor value is written: null, false, true, 10, 0.001, keras3."""
    return key_label(value_key(value))


def labels(series: pd.Series) -> pd.Series:
    """A factor column as labels (object dtype, never NaN): safe to group by and to count distinct values."""
    return pd.Series([value_label(v) for v in series], index=series.index, dtype=object)


def sort_key(value):
    """Reading order of values (or of their labels): numbers by value first, then words alphabetically (false,
    null and true among them). Never a string sort of numbers (2, 4, 32, 128)."""
    key = value_key(value)
    if key[0] == "num":
        return (0, key[1], "")
    return (1, 0.0, key_label(key))


def as_list(value) -> list:
    """A `where` value or a `by` entry as a list (one value -> [value]; None -> [])."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def matches(series: pd.Series, values) -> pd.Series:
    """Per cell: does it hold one of `values` (one value or a list; the list [None] selects null)?"""
    values = values if isinstance(values, (list, tuple)) else [values]
    wanted = {value_key(v) for v in values}
    return pd.Series([value_key(v) in wanted for v in series], index=series.index, dtype=bool)


def select(df: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    """Rows whose factors take the given value (or one of a list); a factor the table lacks selects nothing."""
    for key, value in (where or {}).items():
        if key not in df:
            return df.iloc[0:0]
        df = df[matches(df[key], value)]
    return df


def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile."""
    return float(stats.t.ppf(0.975, dof)) if dof > 0 else math.inf


def finite(values) -> np.ndarray:
    """The finite numbers among `values` (text that is no number, None, NaN and infinities dropped)."""
    v = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)
    return v[np.isfinite(v)]


def mean_half(values) -> tuple[float, float]:
    """Mean and 95% Student-t half-width over independent values (seeds) of their finite numbers: (nan, nan)
    with none, half-width inf with one (no interval)."""
    v = finite(values)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), math.inf
    return float(v.mean()), t95(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95% CI bounds (t interval); (nan, nan, nan) when empty, (m, -inf, inf) for one value."""
    m, half = mean_half(values)
    return m, m - half, m + half
