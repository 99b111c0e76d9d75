"""The tidy table every testbed loader returns, and the checks that keep it honest.

One row per (run, metric): ``run, dataset, N, D, C, M, metric, value``.

- ``run``: the study's own name for the training run (unique within a testbed, together with ``D``
  when a run has several evaluated checkpoints, as in the OLMo ladder).
- ``dataset``: the pre-training corpus.
- ``N``: parameters, as the study counts them (each loader's docstring says which convention).
- ``D``: training tokens seen at this evaluation.
- ``C``: training compute in FLOPs, as the study states it (``6 N D`` where it gives none).
- ``M``: tokens per parameter, ``D / N`` (Gadre et al.'s token multiplier where the study records it).
- ``metric``: the study's own column or key name (for example ``val_loss`` or
  ``eval/downstream_bpb/hellaswag_val_rc_5shot_bpb``), so that its code and ours name things alike.
- ``value``: a finite float.

``analysis.results_table.wide`` (``analysis.testbeds.wide``) pivots the table back to one row per
evaluated checkpoint, the shape fitting code wants: a testbed is widened as a study's results are.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from analysis.results_table import COORDINATES, collapse_duplicates

TIDY_COLUMNS = (*COORDINATES, "metric", "value")
# Coordinates that a law takes logs of: they must be finite and positive.
POSITIVE_COORDINATES = ("N", "D", "C", "M")


def tidy_from_wide(
    frame: pd.DataFrame,
    metrics: Iterable[str],
    *,
    origin: str,
    dropna: bool = False,
) -> pd.DataFrame:
    """Melt a frame holding the coordinate columns and one column per metric into the tidy table.

    ``origin`` names the file or folder the frame came from, so that errors point at it. NaN metric
    values raise unless ``dropna`` (a tidy table represents a missing evaluation by a missing row).
    """
    metrics = list(metrics)
    missing = [c for c in (*COORDINATES, *metrics) if c not in frame.columns]
    if missing:
        raise ValueError(f"{origin}: missing column(s) {missing}")
    # Only text columns need parsing; numeric ones pass through untouched (and fast).
    values = pd.DataFrame(
        {
            m: frame[m]
            if pd.api.types.is_numeric_dtype(frame[m])
            else pd.to_numeric(frame[m], errors="coerce")
            for m in metrics
        },
        index=frame.index,
    )
    # A value that was present but did not parse as a number (text in a numeric column).
    coerced = values.isna() & frame[metrics].notna()
    bad = coerced.columns[coerced.any()].tolist()
    if bad:
        raise ValueError(f"{origin}: non-numeric values in column(s) {bad}")
    matrix = values.to_numpy(dtype=float)
    nan_counts = np.isnan(matrix).sum(axis=0)
    if nan_counts.any() and not dropna:
        listed = ", ".join(f"{m} ({n} rows)" for m, n in zip(metrics, nan_counts, strict=True) if n)
        raise ValueError(
            f"{origin}: missing (NaN) values in {listed}; pass dropna=True to leave those "
            "evaluations out of the table"
        )
    inf = np.isinf(matrix).any(axis=0)
    if inf.any():
        raise ValueError(f"{origin}: infinite values in column(s) {list(np.array(metrics)[inf])}")
    # Melt by hand: pandas' melt is ~50x slower on the ladder's 300k cells.
    n_rows, n_metrics = matrix.shape
    long = {c: np.repeat(frame[c].to_numpy(), n_metrics) for c in COORDINATES}
    long["metric"] = np.tile(np.asarray(metrics, dtype=object), n_rows)
    long["value"] = matrix.reshape(-1)
    long = pd.DataFrame(long)
    long = long[~np.isnan(long["value"].to_numpy())].reset_index(drop=True)
    return validate_tidy(long, origin=origin)


def validate_tidy(table: pd.DataFrame, *, origin: str = "table") -> pd.DataFrame:
    """Check columns, types and values of a tidy table; return it with canonical dtypes.

    Raises ``ValueError`` naming the problem: a missing column, a NaN or non-positive coordinate,
    a non-finite value, or a (run, D, metric) cell given twice with different values (the same
    value twice is kept once: ``analysis.results_table.collapse_duplicates``).
    """
    missing = [c for c in TIDY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{origin}: not a tidy testbed table, missing column(s) {missing}")
    table = table.loc[:, list(TIDY_COLUMNS)].copy()
    for col in ("run", "dataset", "metric"):
        if table[col].isna().any():
            raise ValueError(f"{origin}: column {col!r} has missing values")
        table[col] = table[col].astype(str)
    for col in (*POSITIVE_COORDINATES, "value"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    for col in POSITIVE_COORDINATES:
        column = table[col].to_numpy()
        bad = ~np.isfinite(column) | (column <= 0)
        if bad.any():
            runs = sorted(set(table.loc[bad, "run"]))[:5]
            raise ValueError(
                f"{origin}: {col} must be finite and positive (a law takes its log); "
                f"{int(bad.sum())} rows fail, e.g. runs {runs}"
            )
    value = table["value"].to_numpy()
    if not np.isfinite(value).all():
        bad = ~np.isfinite(value)
        examples = table.loc[bad, ["run", "metric"]].head(5).to_records(index=False).tolist()
        raise ValueError(f"{origin}: {int(bad.sum())} non-finite values, e.g. {examples}")
    return collapse_duplicates(table, origin=origin).reset_index(drop=True)


def read_csv(folder, name: str) -> pd.DataFrame:
    """``name`` in a testbed folder (local or GitHub) as a data frame; a file that is empty or
    not CSV is a ValueError naming it (pandas' own errors do not say which file)."""
    try:
        return pd.read_csv(io.BytesIO(folder.read_bytes(name)))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{folder.describe(name)}: not a readable CSV file ({error})") from None


def require_columns(frame: pd.DataFrame | Mapping, columns: Iterable[str], *, origin: str) -> None:
    """Raise ``ValueError`` naming the columns of ``columns`` that ``frame`` lacks."""
    present = frame.columns if isinstance(frame, pd.DataFrame) else frame.keys()
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"{origin}: missing column(s) {missing}")


def positive_finite(value: float, *, what: str, origin: str) -> float:
    """Return ``float(value)``, or raise ``ValueError`` if it is NaN, infinite or not positive."""
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{origin}: {what} is not a number ({value!r})") from error
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{origin}: {what} must be finite and positive, got {value!r}")
    return number
