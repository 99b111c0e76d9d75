"""The paper's method for a study's quantities (``l2l.quantities.Quantity``): the rows of method
``paper`` in ``predictions.csv``, and the laws saved in ``STUDY/laws/``.

A corpus' loss, own or test, is fitted by the Chinchilla form over (N, D) with the notebooks'
objective (mean Huber, delta 1e-3, on log residuals); a loss-to-loss law takes its two E's from
those fits and kappa, K by OLS in log space (Brandfonbrener et al.). Every law is bootstrapped
over its runs, and its 90% prediction interval combines the parameter draws with the fit's own
residual scatter (``Law.predict_interval(kind="prediction")``). A law that cannot be fitted (too
few runs, every point below an E) is named in ``StudyFits.missing`` with its reason.
"""

from __future__ import annotations

import numpy as np

CHINCHILLA_MIN_RUNS = 6  # five parameters and one point to spare


def paper_predictions(quantities: list, fits, n_resamples: int, level: float,
                      progress: bool) -> list[dict]:  # fmt: skip
    """Fit the paper's laws of every quantity (recording them in ``fits``) and return the
    prediction rows of the targets."""
    from tqdm.auto import tqdm

    from l2l.quantities import prediction_row

    rows: list[dict] = []
    chinchilla: dict[tuple[str, str], object] = {}
    own = {q.corpus: q for q in quantities if q.kind == "single corpus"}
    bar = tqdm(total=len(quantities), desc="paper's laws", disable=not progress)

    def chinchilla_of(q) -> object | None:
        """The Chinchilla law of q's metric over (N, D) on q's corpus (an E, or a prediction)."""
        key = (q.corpus, q.column)
        if key not in chinchilla:
            chinchilla[key] = _chinchilla(q, fits, n_resamples)
        return chinchilla[key]

    def interval_note(law) -> str:
        info = law.bootstrap_info or {}
        return (f"paper: bootstrap over the grid's runs ({info.get('n_resamples', 0)} "
                "resamples) with the fit's residual scatter")

    for q in quantities:
        bar.update(1)
        if q.kind == "single corpus":
            law = chinchilla_of(q)
            if law is None:
                continue
            fits.drawn.append(q.name)
            fits.laws[q.name] = law
            fits.inputs[q.name] = ({"N": q.fit.N.to_numpy(float), "D": q.fit.D.to_numpy(float)},
                                   q.fit.actual.to_numpy(float), "C = 6ND", q.column)
            for target in q.targets.to_dict("records"):
                point, lower, upper = _predict(law, level, N=target["N"], D=target["D"])
                rows.append(prediction_row(q, target, "paper", "chinchilla", q.name, point,
                                           lower, upper, interval_note(law)))
            continue
        source = own.get(q.source if q.kind == "train-to-train" else q.corpus)
        target_own = own.get(q.corpus) if q.kind == "train-to-train" else q
        E_x = chinchilla_of(source) if source is not None else None
        E_y = chinchilla_of(target_own) if target_own is not None else None
        if E_x is None or E_y is None:
            fits.missing.append(f"{q.name}: the Chinchilla fit of one of its losses is missing "
                                "(above), so the paper's E's are unknown and its law is not "
                                "fitted")
            continue
        law = _loss_to_loss(q, E_x, E_y, fits, n_resamples)
        if law is None:
            continue
        fits.laws[q.name] = law
        fits.drawn.append(q.name)
        fits.inputs[q.name] = ({"L": q.fit.actual_x.to_numpy(float)},
                               q.fit.actual.to_numpy(float),
                               f"{q.source or q.corpus} loss (models trained on {q.source or q.corpus})",
                               q.column)
        for target in q.targets.to_dict("records"):
            if not np.isfinite(target.get("actual_x", np.nan)):
                fits.missing.append(f"{q.name} at {target['run']}: no measured given loss")
                continue
            point, lower, upper = _predict(law, level, L=target["actual_x"])
            rows.append(prediction_row(q, target, "paper", "loss-to-loss, E's from chinchilla",
                                       q.name, point, lower, upper, interval_note(law)))
    bar.close()
    return rows


def _predict(law, level: float, **at) -> tuple[float, float, float]:
    point = float(np.asarray(law.predict(**at)).ravel()[0])
    lower, upper = law.predict_interval(level=level, kind="prediction", **at)
    return point, float(np.asarray(lower).ravel()[0]), float(np.asarray(upper).ravel()[0])


def _chinchilla(q, fits, n_resamples: int):
    from analysis import bootstrap, fit_law
    from l2l.quantities import quiet

    if len(q.fit) < CHINCHILLA_MIN_RUNS:
        fits.missing.append(f"chinchilla {q.column} of {q.corpus}: {len(q.fit)} grid runs with "
                            f"that metric, {CHINCHILLA_MIN_RUNS} at least are needed for its 5 "
                            "parameters")
        return None
    inputs = {"N": q.fit.N.to_numpy(float), "D": q.fit.D.to_numpy(float)}
    y = q.fit.actual.to_numpy(float)
    label = f"chinchilla {q.column} of {q.corpus}"
    try:
        law = quiet(fit_law, "chinchilla", inputs, y, caught=fits.warnings, label=label)
        return quiet(bootstrap, law, inputs, y, n_resamples=n_resamples, caught=fits.warnings,
                     label=label)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        fits.missing.append(f"{label}: the fit failed ({exc})")
        return None


def _loss_to_loss(q, E_x, E_y, fits, n_resamples: int):
    from analysis import bootstrap
    from analysis.workflows import fit_loss_to_loss
    from l2l.quantities import quiet

    x, y = q.fit.actual_x.to_numpy(float), q.fit.actual.to_numpy(float)
    ex, ey = float(E_x.params["E"]), float(E_y.params["E"])
    keep = (x > ex) & (y > ey)
    if keep.sum() < 3:
        fits.missing.append(
            f"{q.name}: {int(keep.sum())} of {len(x)} grid runs lie above both E's "
            f"(E_x {ex:.4g}, E_y {ey:.4g}, from the Chinchilla fits): too few for the law; "
            "more or larger grid runs, or a larger task sample, would help")
        return None
    if not keep.all():
        fits.missing.append(f"{q.name}: {int((~keep).sum())} grid run(s) at or below an E left "
                            "out (no logarithm)")
    meta = {"setting": q.kind.replace("-", "_"), "x": f"{q.source or q.corpus} loss",
            "y": q.column}
    try:
        law = quiet(fit_loss_to_loss, x[keep], y[keep], E_x=ex, E_y=ey, metadata=meta,
                    caught=fits.warnings, label=q.name)
        return quiet(bootstrap, law, {"L": x[keep]}, y[keep], n_resamples=n_resamples,
                     caught=fits.warnings, label=q.name)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        fits.missing.append(f"{q.name}: the fit failed ({exc})")
        return None
