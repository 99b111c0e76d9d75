"""l2l analysis: fit scaling laws, loss-to-loss laws, over-training and task laws, with uncertainty.

Imports without torch. The API (names are stable)::

    from analysis import fit_law, load_law, bootstrap
    law = fit_law(form, inputs, target, *, objective=None, fixed=None, bounds=None, start=None)
    laws = fit_laws(form, [inputs, ...], [target, ...], ...)   # many fits at once, same results
    law.params                        # dict of floats, in the form's parameter names
    law.predict(**inputs)             # numpy array, inputs broadcast together
    law.objective, law.objective_value, law.converged, law.n_points, law.stderr, law.warnings
    law = bootstrap(law, inputs, target, n_resamples=200, groups=None, seed=0)
    law.predict_interval(level=0.9, **inputs)   # (lower, upper) of the law: parameter uncertainty
    law.predict_interval(level=0.9, kind="prediction", **inputs)  # where a new run will land
    law.param_intervals(level=0.9)
    law.save_pretrained(path); load_law(path_or_repo_id); law.push_to_hub(repo_id)

Forms (``analysis.laws.FORMS``; inputs -> parameters):
    chinchilla    L = E + A/N^alpha + B/D^beta                  N, D -> A, B, E, alpha, beta
    kaplan        L = ((A/N)^(alpha/beta) + B/D)^beta + E       N, D -> A, B, E, alpha, beta
    compute       L = E + A C^-alpha                            C    -> A, E, alpha
    overtrain     L = E + (a M^eta + b M^-eta) C^-eta           C, M -> E, a, b, eta
    loss_to_loss  L_y = K max(L - E_x, 0)^kappa + E_y           L    -> K, kappa, E_x, E_y
    loss_to_error Err = epsilon - k exp(-gamma L)               L    -> epsilon, k, gamma
    sigmoid       Acc = a / (1 + exp(-k (L - L0))) + b          L    -> a, b, k, L0

Objectives (``analysis.objectives``): ``huber_log`` (Huber, delta 1e-3, on log residuals; the
MEAN over points by default, ``huber_log(reduction="sum")`` for Epoch AI / OLMo-ladder),
``least_squares`` and ``log_ols`` (OLS of log(L_y - E_y) on log(L_x - E_x), E's fixed).

Lower-level pieces, also stable: ``analysis.fit.make_problem`` / ``solve`` (validate, then
optimise without diagnostics), ``analysis.problem.stack`` / ``analysis.fit.solve_stacked`` (the
same for many problems at once), ``analysis.laws.get_form``, ``analysis.objectives.Objective``.
Workflows (``analysis.workflows``): ``compute_optimal``, ``fit_loss_to_loss``,
``train_to_train``, ``train_to_test``, ``test_to_test``, ``translate_law``, ``fit_two_step`` /
``TwoStepLaw``. Figures: ``analysis.plots.plot_law``. Command line: ``python -m analysis fit|predict``.
"""

import sys
import types

from analysis.lazy import lazy_names

# The API loads on first use (PEP 562), so that a torch-free helper module (``analysis.sizes``,
# ``analysis.atomic``, ``analysis.cache``) imports in milliseconds for the other packages, not
# after scipy and huggingface_hub.
_API = {
    "bootstrap": ".bootstrap",
    "FitWarning": ".fit",
    "fit_law": ".fit",
    "fit_laws": ".fit",
    "Law": ".law",
    "load_law": ".law",
    "FORMS": ".laws",
    "get_form": ".laws",
    "Objective": ".objectives",
    "huber_log": ".objectives",
    "least_squares": ".objectives",
    "log_ols": ".objectives",
}


__getattr__, __dir__ = lazy_names(__name__, _API)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # Importing the submodule ``analysis.bootstrap`` binds it under its name here, where the
        # API name ``bootstrap`` is the function: keep the function.
        if name == "bootstrap" and isinstance(value, types.ModuleType):
            value = value.bootstrap
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "FORMS",
    "FitWarning",
    "Law",
    "Objective",
    "bootstrap",
    "fit_law",
    "fit_laws",
    "get_form",
    "huber_log",
    "least_squares",
    "load_law",
    "log_ols",
]
