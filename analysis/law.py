"""The fitted law: a frozen record of a fit that predicts, gives intervals and lives on the Hub.

``Law`` is what ``fit_law`` returns and ``load_law`` reads back. It is Hub-native through
huggingface_hub's ``ModelHubMixin``: ``save_pretrained(path)`` writes ``config.json`` (form,
parameters, objective and its value, fixed parameters and bounds, convergence, standard errors,
the fit's residuals; strict JSON), ``bootstrap.csv`` (one row per bootstrap resample, when there
are any) and a model card ``README.md``; ``push_to_hub`` uploads the same folder and
``load_law``/``Law.from_pretrained`` read a folder or a Hub repository. Nothing is pickled.

Two intervals (``predict_interval``): ``kind="confidence"`` where the law lies (its parameters'
uncertainty), ``kind="prediction"`` where a new run lands (that plus the runs' scatter).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from huggingface_hub import ModelCard, ModelCardData, ModelHubMixin, hf_hub_download
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
)
from scipy.special import ndtri  # the standard normal quantile (scipy.stats imports in ~2 s)

from .atomic import write_atomic
from .law_fields import (
    as_boolean,
    as_bound,
    as_finite,
    as_integer,
    as_mapping,
    as_object,
    as_strings,
    json_kind,
    read_config,
    read_samples,
    short,
    strict_json,
)
from .laws import get_form
from .objectives import Objective

INTERVAL_KINDS = ("confidence", "prediction")
DELTA_NODES = 64
"""Normal quantiles standing for the delta method's parameter uncertainty in a prediction
interval."""
MIXTURE_DRAWS = 32768
"""At most this many (parameter draw, residual) pairs per point: beyond it, the residuals are
represented by evenly spaced quantiles of their distribution."""
CONFIG_NAME = "config.json"
SAMPLES_NAME = "bootstrap.csv"
SAMPLES_DIGEST = "samples_sha256"  # in bootstrap_info: the digest of the saved bootstrap.csv
MODEL_CARD_NAME = "README.md"
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class Law(
    ModelHubMixin,
    library_name="l2l",
    tags=["scaling-laws", "l2l"],
):
    form: str
    """Name of the law form (``chinchilla``, ``kaplan``, ``compute``, ``overtrain``,
    ``loss_to_loss``, ``loss_to_error``, ``sigmoid``)."""
    params: dict[str, float]
    """Fitted (and fixed) parameter values in the form's own names and units."""
    objective: Objective = field(default_factory=Objective)
    """The objective minimised: name, Huber delta and reduction (mean or sum over points)."""
    objective_value: float = float("nan")
    """Objective at the reported parameters, with ``objective.reduction`` applied."""
    n_points: int = 0
    converged: bool = True
    message: str = ""
    """Optimiser's final message."""
    n_iterations: int = 0
    fixed: tuple[str, ...] = ()
    """Parameters pinned by the caller (not fitted)."""
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Bounds the caller gave (natural units), replacing the form's defaults for those
    parameters; ``bootstrap`` refits its resamples within them."""
    start: dict[str, float] = field(default_factory=dict)
    """The starting point whose polished fit won."""
    r_squared: float = float("nan")
    """1 - SSR/SST of the target (not its logarithm), as the loss-to-loss notebooks report."""
    stderr: dict[str, float] = field(default_factory=dict)
    """Delta-method (sandwich) standard errors of the fitted parameters; nan if not identifiable."""
    covariance: tuple[tuple[float, ...], ...] = ()
    """Sandwich covariance of the internal parameters (log for positive scale parameters) in
    the order of the form's parameters; fixed parameters have zero rows."""
    warnings: tuple[str, ...] = ()
    """Problems found after fitting: parameters at a bound, parameters not identifiable."""
    residuals: np.ndarray | None = None
    """The fit's residual at each point, in the objective's space: log(y) - log(prediction) for
    ``huber_log``, y - prediction for ``least_squares``, log(y - E_y) - log(prediction - E_y) for
    ``log_ols``. They are the run-to-run scatter of ``predict_interval(kind="prediction")``."""
    samples: np.ndarray | None = None
    """Bootstrap parameter samples (n_resamples, n_params), in the form's parameter order."""
    bootstrap_info: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    """Free-form provenance (data source, column names, ...), saved with the law (as strict
    JSON: a non-finite number in it comes back as the string "NaN", "Infinity" or "-Infinity")."""

    # ModelHubMixin.__new__ records __init__ arguments by attribute assignment, which a frozen
    # dataclass forbids; the law's own config.json is its configuration instead.
    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __post_init__(self):
        # Every way of making a law (fit_law, from_dict on a saved config.json, replace) passes
        # here: a law whose fields do not fit its form predicted as if nothing were wrong (a
        # 'fixed' naming a parameter the form lacks was used silently, a missing one dropped).
        spec = self.form_spec  # an unknown form: a ValueError listing the known ones
        names = ", ".join(spec.params)
        missing = [p for p in spec.params if p not in self.params]
        unknown = [p for p in self.params if p not in spec.params]
        if missing or unknown:
            raise ValueError(
                f"params of a {self.form!r} law must be exactly {names}; "
                + "; ".join(
                    [f"missing {', '.join(missing)}"] * bool(missing)
                    + [f"unknown {', '.join(map(repr, unknown))}"] * bool(unknown)
                )
            )
        for what, given in (
            ("fixed", self.fixed), ("bounds", self.bounds), ("stderr", self.stderr),
            ("start", self.start),
        ):  # fmt: skip
            unknown = [p for p in given if p not in spec.params]
            if unknown:
                raise ValueError(
                    f"{what} names {', '.join(map(repr, unknown))}, not a parameter of form "
                    f"{self.form!r} (its parameters: {names})"
                )
        if len(set(self.fixed)) != len(self.fixed):  # counted twice in the degrees of freedom
            raise ValueError(f"fixed names a parameter twice: {list(self.fixed)}")
        k = len(spec.params)
        if self.covariance and np.shape(self.covariance) != (k, k):
            raise ValueError(
                f"covariance must be {k} x {k} (the parameters {names}), got shape "
                f"{np.shape(self.covariance)}"
            )
        shape = None if self.samples is None else np.shape(self.samples)
        if shape is not None and (len(shape) != 2 or shape[1] != k):
            raise ValueError(
                f"bootstrap samples must have one column per parameter ({names}), got shape {shape}"
            )
        if shape is not None and shape[0] == 0:
            raise ValueError("bootstrap samples are empty: no resample to give an interval")

    @property
    def _hub_mixin_config(self) -> dict:
        return self.to_dict()

    # --- prediction -------------------------------------------------------------------------
    @property
    def form_spec(self):
        return get_form(self.form)

    def _inputs(self, inputs: dict) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
        spec = self.form_spec
        missing = [k for k in spec.inputs if k not in inputs]
        unknown = [k for k in inputs if k not in spec.inputs]
        if missing or unknown:
            raise ValueError(
                f"form {self.form!r} takes inputs {', '.join(spec.inputs)}; "
                + (f"missing {', '.join(missing)}" if missing else "")
                + ("; " if missing and unknown else "")
                + (f"unknown {', '.join(unknown)}" if unknown else "")
            )
        arrays = np.broadcast_arrays(*(np.asarray(inputs[k], dtype=float) for k in spec.inputs))
        shape = arrays[0].shape
        x = {k: a.ravel() for k, a in zip(spec.inputs, arrays, strict=True)}
        for name, values in x.items():  # a NaN prediction is never an answer
            if not np.isfinite(values).all():
                raise ValueError(f"input {name!r} has NaN or infinite value(s)")
        spec.check_domain(x)
        return x, shape

    def predict(self, **inputs) -> np.ndarray:
        """The law at the given inputs (arrays broadcast together), e.g. ``predict(N=.., D=..)``."""
        x, shape = self._inputs(inputs)
        return self.form_spec.predict(self.params, x).reshape(shape)

    def predict_samples(self, **inputs) -> np.ndarray:
        """Predictions of every bootstrap resample: (n_resamples, *shape)."""
        if self.samples is None:
            raise ValueError("this law has no bootstrap samples; run analysis.bootstrap(law, ...)")
        x, shape = self._inputs(inputs)
        spec = self.form_spec
        theta = np.array(
            [spec.to_theta(dict(zip(spec.params, s, strict=True))) for s in self.samples]
        )
        value, _ = spec._evaluate(theta, x, jac=False)
        pred = np.exp(value) if spec.output_is_log else value
        return pred.reshape((len(self.samples), *shape))

    def predict_interval(
        self, level: float = 0.9, kind: str = "confidence", **inputs
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise interval (lower, upper) at ``level``, inputs broadcast together.

        ``kind="confidence"`` (the default): where the law itself lies, i.e. the uncertainty of
        its parameters only. Percentiles of the bootstrap resamples' predictions when the law
        has samples, else the delta method (normal in log space for the loss laws).

        ``kind="prediction"``: where a new run at these inputs will land, i.e. the parameter
        uncertainty above combined with the run-to-run scatter of single runs around the law.
        The scatter is the empirical distribution of the fit's residuals (in the objective's
        space: a multiplicative scatter for the log objectives, additive for least squares),
        inflated by sqrt(n / (n - k)) for the k fitted parameters (a residual underestimates
        its error). Every parameter draw (each bootstrap resample, or 64 normal quantiles of
        the delta method) is combined with every residual, and the interval is the
        percentiles of that mixture: a residual bootstrap prediction interval (Davison and
        Hinkley 1997, section 6.3.3), deterministic. It assumes the scatter of a new run is
        like the scatter of the fitted runs; a systematic error of the law in extrapolation
        (a wrong form) is not covered by either kind.
        """
        _check_level(level)
        if kind not in INTERVAL_KINDS:
            raise ValueError(f"unknown interval kind {kind!r}; choose from {INTERVAL_KINDS}")
        tail = (1.0 - level) / 2.0
        if self.samples is None and not self.covariance:
            raise ValueError("this law has neither bootstrap samples nor a covariance")
        if kind == "confidence" and self.samples is None:
            return self._delta_interval(tail, **inputs)
        scatter = self._scatter() if kind == "prediction" else None
        if self.samples is not None:
            draws = self.predict_samples(**inputs)
        else:
            draws = self._delta_draws(**inputs)
        if scatter is None:
            return tuple(np.nanquantile(draws, [tail, 1.0 - tail], axis=0))
        space = self._residual_space()
        offset = self.params["E_y"] if space == "log_excess" else 0.0
        return _mixture_quantiles(draws, scatter, space, [tail, 1.0 - tail], offset)

    def _delta_interval(self, tail: float, **inputs) -> tuple[np.ndarray, np.ndarray]:
        value, spread, shape = self._delta(**inputs)
        spread = ndtri(1.0 - tail) * spread
        lower, upper = value - spread, value + spread
        if self.form_spec.output_is_log:
            lower, upper = np.exp(lower), np.exp(upper)
        return lower.reshape(shape)[()], upper.reshape(shape)[()]  # [()]: a scalar for one point

    def _delta(self, **inputs):
        """The law (in its evaluation space) and its delta-method standard error, flattened."""
        x, shape = self._inputs(inputs)
        spec = self.form_spec
        value, jac = spec._evaluate(spec.to_theta(self.params), x)
        jac = np.stack(np.broadcast_arrays(*jac), axis=-1)
        cov = np.asarray(self.covariance)
        return value, np.sqrt(np.einsum("np,pq,nq->n", jac, cov, jac)), shape

    def _delta_draws(self, **inputs) -> np.ndarray:
        """The delta method's normal distribution of the law as DELTA_NODES quantiles."""
        value, spread, shape = self._delta(**inputs)
        nodes = ndtri((np.arange(DELTA_NODES) + 0.5) / DELTA_NODES)
        draws = value + nodes[:, None] * spread
        if self.form_spec.output_is_log:
            draws = np.exp(draws)
        return draws.reshape((DELTA_NODES, *shape))

    def _residual_space(self) -> str:
        if self.objective.name == "log_ols":
            return "log_excess"
        return "log" if self.objective.log_residuals else "linear"

    def _scatter(self) -> np.ndarray:
        """The run-to-run scatter: the fit's residuals inflated by sqrt(n / (n - k))."""
        if self.residuals is None:
            raise ValueError(
                "this law has no fit residuals (a translated law, or one saved by an older "
                "version): refit it for a prediction interval"
            )
        residuals = np.asarray(self.residuals, dtype=float)
        n, k = residuals.size, len(self.params) - len(self.fixed)
        if n <= k:
            raise ValueError(
                f"the run-to-run scatter cannot be estimated from {n} residual(s) of a fit with "
                f"{k} free parameter(s)"
            )
        return residuals * np.sqrt(n / (n - k))

    def param_intervals(self, level: float = 0.9) -> dict[str, tuple[float, float]]:
        """Interval per parameter: bootstrap percentiles, else delta method (log-normal for
        positive scale parameters)."""
        _check_level(level)
        tail = (1.0 - level) / 2.0
        spec = self.form_spec
        if self.samples is not None:
            q = np.nanquantile(self.samples, [tail, 1.0 - tail], axis=0)
            return {p: (float(q[0, j]), float(q[1, j])) for j, p in enumerate(spec.params)}
        if not self.covariance:
            raise ValueError("this law has neither bootstrap samples nor a covariance")
        z = ndtri(1.0 - tail)
        theta = spec.to_theta(self.params)
        sd = np.sqrt(np.diag(np.asarray(self.covariance)))
        out = {}
        for j, p in enumerate(spec.params):
            lo, hi = theta[j] - z * sd[j], theta[j] + z * sd[j]
            out[p] = (float(np.exp(lo)), float(np.exp(hi))) if p in spec.log_params else (lo, hi)
        return out

    # --- reporting --------------------------------------------------------------------------
    def summary(self) -> str:
        spec = self.form_spec
        lines = [
            f"{self.form}: {spec.formula}",
            f"objective {self.objective.name} (delta {self.objective.delta:g}, "
            f"{self.objective.reduction}) = {self.objective_value:.6g} on {self.n_points} points; "
            f"R^2 {self.r_squared:.5f}; {'converged' if self.converged else 'NOT converged'}",
        ]
        for p in spec.params:
            se = self.stderr.get(p, float("nan"))
            tag = " (fixed)" if p in self.fixed else f" +- {se:.3g}"
            lines.append(f"  {p:>8s} = {self.params[p]:.6g}{tag}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return (
            f"Law({self.form}: {params}; {self.objective.name}[{self.objective.reduction}]="
            f"{self.objective_value:.4g}, n={self.n_points})"
        )

    def with_samples(self, samples: np.ndarray, info: dict) -> Law:
        return replace(self, samples=np.asarray(samples, float), bootstrap_info=dict(info))

    # --- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "l2l_law_format": FORMAT_VERSION,
            "form": self.form,
            "formula": self.form_spec.formula,
            "params": dict(self.params),
            "objective": self.objective.to_dict(),
            "objective_value": self.objective_value,
            "n_points": self.n_points,
            "converged": self.converged,
            "message": self.message,
            "n_iterations": self.n_iterations,
            "fixed": list(self.fixed),
            "bounds": {name: list(pair) for name, pair in self.bounds.items()},
            "start": dict(self.start),
            "r_squared": self.r_squared,
            "stderr": dict(self.stderr),
            "covariance": [list(row) for row in self.covariance],
            "warnings": list(self.warnings),
            "residuals": None if self.residuals is None else [float(v) for v in self.residuals],
            "bootstrap_info": dict(self.bootstrap_info),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict, samples: np.ndarray | None = None) -> Law:
        if not isinstance(data, dict):
            raise ValueError(
                f"not an l2l law config: a JSON {json_kind(data)}, where a law is an object "
                '({"l2l_law_format": 1, "form": ..., "params": {...}, ...})'
            )
        if data.get("l2l_law_format") != FORMAT_VERSION:
            raise ValueError(
                f"not an l2l law file (l2l_law_format {data.get('l2l_law_format')!r}, "
                f"expected {FORMAT_VERSION})"
            )
        return cls._from_fields(data, samples)

    @classmethod
    def _from_fields(cls, data: dict, samples: np.ndarray | None) -> Law:
        def field_(key, convert, *default):
            """data[key] converted, or the default; a ValueError naming the field otherwise."""
            if key not in data:
                if default:
                    return default[0]
                raise ValueError(f"malformed l2l law config: missing field {key!r}")
            value = data[key]
            try:
                return convert(value)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                detail = f"no {error}" if isinstance(error, KeyError) else str(error)
                # an object's or list's entry is named by the error itself
                shown = "" if isinstance(value, dict | list) else f"{short(value)}: "
                raise ValueError(
                    f"malformed l2l law config: ill-typed field {key!r} ({shown}{detail})"
                ) from None

        spec = get_form(field_("form", str))
        numbers = as_mapping(float)
        return cls(
            form=spec.name,
            # every name, not only the form's: an unknown one is an error, not dropped; a NaN
            # parameter would print NaN predictions as if they were answers
            params=field_("params", as_mapping(as_finite)),
            objective=field_("objective", lambda v: Objective(**as_object(v))),
            objective_value=field_("objective_value", float),
            n_points=field_("n_points", as_integer),
            converged=field_("converged", as_boolean),
            message=field_("message", str, ""),
            n_iterations=field_("n_iterations", as_integer, 0),
            fixed=field_("fixed", as_strings, ()),
            bounds=field_("bounds", as_mapping(as_bound), {}),
            start=field_("start", numbers, {}),
            r_squared=field_("r_squared", float, float("nan")),
            stderr=field_("stderr", numbers, {}),
            covariance=field_(
                "covariance", lambda v: tuple(tuple(float(x) for x in row) for row in v), ()
            ),
            warnings=field_("warnings", as_strings, ()),
            residuals=field_(
                "residuals", lambda v: None if v is None else np.array(v, float), None
            ),
            samples=samples,
            bootstrap_info=field_("bootstrap_info", lambda v: dict(as_object(v)), {}),
            metadata=field_("metadata", lambda v: dict(as_object(v)), {}),
        )

    def _save_pretrained(self, save_directory: Path) -> None:
        # Strict JSON (the Hub and non-Python readers reject NaN/Infinity tokens): non-finite
        # numbers are written as the strings "NaN", "Infinity", "-Infinity", which float() and
        # numpy read back in every numeric field.
        # The samples first, then the config naming their digest: a reader of a folder being
        # saved again can tell an old config beside new samples (``_from_pretrained``).
        record = self.to_dict()
        samples_path = save_directory / SAMPLES_NAME
        if self.samples is not None:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(self.form_spec.params)
            writer.writerows([repr(float(v)) for v in row] for row in self.samples)
            samples = buffer.getvalue().encode("utf-8")
            write_atomic(samples_path, samples)
            record["bootstrap_info"] = {**record.get("bootstrap_info", {}),
                                        SAMPLES_DIGEST: hashlib.sha256(samples).hexdigest()}
        text = json.dumps(strict_json(record), indent=2, allow_nan=False)
        write_atomic(save_directory / CONFIG_NAME, text + "\n")
        if self.samples is None:
            samples_path.unlink(missing_ok=True)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir,
        force_download: bool,
        local_files_only: bool,
        token,
        config: dict | None = None,
        **ignored,
    ) -> Law:
        def resolve(name: str) -> str | None:
            if os.path.isdir(model_id):
                path = os.path.join(model_id, name)
                return path if os.path.exists(path) else None
            try:
                return hf_hub_download(
                    repo_id=model_id,
                    filename=name,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    local_files_only=local_files_only,
                    token=token,
                )
            except EntryNotFoundError:  # only the optional samples file may be missing
                if name == CONFIG_NAME:
                    raise
                return None

        if config is None:
            path = resolve(CONFIG_NAME)
            if path is None:
                raise ValueError(f"no {CONFIG_NAME} in {model_id!r}: not a saved law")
            config = read_config(path, f"{model_id!r}: {CONFIG_NAME}")
        try:
            law = cls.from_dict(config)
        except ValueError as error:
            raise ValueError(f"{model_id!r}: {CONFIG_NAME}: {error}") from None
        if not law.bootstrap_info:
            return law
        # the law was saved with its samples: they must be there, and be those it names
        samples_path = resolve(SAMPLES_NAME)
        if samples_path is None:
            raise ValueError(
                f"{model_id!r}: {CONFIG_NAME} records a bootstrap but {SAMPLES_NAME} is missing"
            )
        samples = read_samples(samples_path, law.form_spec.params)
        digest = law.bootstrap_info.get(SAMPLES_DIGEST)
        with open(samples_path, "rb") as handle:
            if digest is not None and hashlib.sha256(handle.read()).hexdigest() != digest:
                raise ValueError(
                    f"{model_id!r}: {SAMPLES_NAME} is not the one its {CONFIG_NAME} was saved "
                    "with (the law is being saved again, or its files were mixed): load it "
                    "again, or fit it again")
        info = {k: v for k, v in law.bootstrap_info.items() if k != SAMPLES_DIGEST}
        return replace(law, bootstrap_info=info, samples=samples)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        force_download: bool = False,
        token=None,
        cache_dir=None,
        local_files_only: bool = False,
        revision: str | None = None,
        **kwargs,
    ) -> Law:
        """A law from a folder or a Hub repository, as ``ModelHubMixin.from_pretrained``, with
        config.json read once, here: the mixin's reader downloaded it again after a failed try
        and broke with an AttributeError on a config.json that is JSON but not an object."""
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            **kwargs,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs):
        """Save the law into the folder ``save_directory`` (``ModelHubMixin.save_pretrained``):
        a new or empty folder, one holding a law (replaced), or one whose other files are kept;
        a folder whose config.json or bootstrap.csv is not a law's is refused (they would be
        replaced or deleted)."""
        save_directory = Path(save_directory)
        previous = check_save_directory(save_directory)
        card = save_directory / MODEL_CARD_NAME
        # The mixin keeps an existing README.md: the card of the law replaced here would then
        # describe its parameters beside this law's config.json. An untouched card is rewritten;
        # one edited by hand is kept, as the mixin does.
        if previous is not None and card.is_file():
            if card.read_text(encoding="utf-8") == str(previous.generate_model_card()):
                card.unlink()
        return super().save_pretrained(save_directory, **kwargs)

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        data = ModelCardData(**self._hub_mixin_info.model_card_data.to_dict())
        rows = "\n".join(
            f"| {p} | {v:.6g} | "
            + ("fixed" if p in self.fixed else f"{self.stderr.get(p, float('nan')):.3g}")
            + " |"
            for p, v in self.params.items()
        )
        text = (
            f"---\n{data.to_yaml()}\n---\n\n"
            f"# Scaling law: `{self.form}`\n\n"
            f"`{self.form_spec.formula}`, fitted with l2l's `analysis` module "
            f"(`from analysis import load_law`).\n\n"
            f"| parameter | value | std. error |\n|---|---|---|\n{rows}\n\n"
            f"Objective `{self.objective.name}` (delta {self.objective.delta:g}, "
            f"{self.objective.reduction} over points) = {self.objective_value:.6g} on "
            f"{self.n_points} points, R^2 {self.r_squared:.5f}, "
            f"{'converged' if self.converged else 'not converged'}.\n"
        )
        if self.warnings:
            text += "\nWarnings:\n" + "".join(f"- {w}\n" for w in self.warnings)
        return ModelCard(text)


def load_law(path_or_repo_id: str | os.PathLike, **kwargs) -> Law:
    """Read a law saved with ``save_pretrained`` from a folder or a Hub repository id.

    A folder is looked for first. A name that can only be a path (no 'owner/name', or starting
    with '.', '/' or '~', or in a folder that exists here, like 'results/my-law' where results/
    exists) fails at once when there is no such folder; otherwise the Hub is asked (at once from
    its cache when HF_HUB_OFFLINE is set). Whatever goes wrong (no such folder or repository, the
    Hub unreachable, a config.json that is not JSON or not a law) is a ValueError naming the
    source, and both places looked in when the law was found in neither."""
    source = str(path_or_repo_id)
    local = os.path.expanduser(source)
    if os.path.exists(local) and not os.path.isdir(local):
        raise ValueError(
            f"{source!r} is a file; a saved law is the folder holding {CONFIG_NAME} "
            f"(written by save_pretrained or python -m analysis fit --out)"
        )
    looked = f"looked for the folder {os.path.abspath(local)}"
    if not os.path.isdir(local):
        # Without this, a mistyped folder name waited ~25 s for huggingface_hub's retries when
        # offline before saying the same.
        reason = _not_a_hub_id(source)
        if reason:
            raise ValueError(f"no saved law at {source!r}: no such folder, and {reason}; {looked}")
    try:
        return Law.from_pretrained(local if os.path.isdir(local) else source, **kwargs)
    except HFValidationError:  # neither a local folder nor a well-formed repository id
        raise ValueError(
            f"no saved law at {source!r}: no such folder, and not a Hub repository id; {looked}"
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        if os.path.isdir(local):
            raise
        reason = (
            "offline (HF_HUB_OFFLINE is set) and not in the local Hub cache"
            if hub_constants.HF_HUB_OFFLINE
            else f"{type(error).__name__}: {error}"
        )
        raise ValueError(
            f"no saved law at {source!r}: no such folder here, and none could be downloaded "
            f"from the Hub repository {source!r} ({reason}); {looked}"
        ) from None
    except ValueError as error:  # not a law, malformed fields: say which source
        if source in str(error) or local in str(error):
            raise
        raise ValueError(f"{source!r}: {error}") from None


def _not_a_hub_id(source: str) -> str | None:
    """Why ``source``, not a folder here, cannot be a law's Hub repository id (None if it can)."""
    if source.count("/") != 1:
        # Only legacy canonical models have ids without an owner ("gpt2"); a law pushed with
        # push_to_hub is always "owner/name".
        return "not a Hub repository id ('owner/name')"
    if source.startswith((".", "/", "~")) or "\\" in source:
        return "it is a path, not a Hub repository id ('owner/name')"
    first, rest = source.split("/")
    if os.path.isdir(first):  # results/my-law with results/ here: a folder in it was meant
        folders = sorted(p.name for p in Path(first).iterdir() if p.is_dir())
        held = f"its folders: {', '.join(folders[:10])}" if folders else "it holds no folder"
        more = f" and {len(folders) - 10} more" if len(folders) > 10 else ""
        return (
            f"not looked up on the Hub: {first}/ is a folder here, and it holds no {rest!r} "
            f"({held}{more})"
        )
    return None


def check_save_directory(path: str | os.PathLike) -> Law | None:
    """The law saved in the folder ``path``, or None where there is none (a new folder, or one
    without a law's files); a ValueError where saving a law there would destroy something else:
    ``path`` is a file, or its config.json or bootstrap.csv are not a law's (saving replaces the
    one and replaces or deletes the other)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; the law is saved as a folder")
    config_path = path / CONFIG_NAME
    if config_path.exists():
        try:
            config = read_config(str(config_path), str(config_path))
            if "l2l_law_format" not in config:
                raise ValueError(f"{config_path} has no l2l_law_format field")
        except (ValueError, OSError) as error:
            raise ValueError(
                f"{path} holds a {CONFIG_NAME} that is not a saved law ({error}); saving a law "
                "there would replace it: choose another folder"
            ) from None
        try:  # a damaged law of ours may be replaced
            return Law.from_dict(config)
        except ValueError:
            return None
    if (path / SAMPLES_NAME).exists():
        raise ValueError(
            f"{path} holds a {SAMPLES_NAME} but no saved law ({CONFIG_NAME}); saving a law there "
            "would replace or delete it: choose another folder"
        )
    return None


def _mixture_quantiles(
    draws, scatter, space: str, quantiles, offset: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles of y = draw (+) residual over every pair of a parameter draw (S, *shape) and a
    residual of ``scatter``, in the residual's space: multiplicative (``log``), additive
    (``linear``), or multiplicative above ``offset`` = E_y (``log_excess``: loss-to-loss by
    log OLS, where log(y - E_y) has the residuals)."""
    count = len(draws)
    shape = draws.shape[1:]
    draws = draws.reshape(count, -1) - offset
    keep = max(16, MIXTURE_DRAWS // count)
    if scatter.size > keep:  # evenly spaced quantiles stand for the whole distribution
        scatter = np.quantile(scatter, (np.arange(keep) + 0.5) / keep)
    factor = scatter[None, :, None] if space == "linear" else np.exp(scatter)[None, :, None]
    lower, upper = np.empty(draws.shape[1]), np.empty(draws.shape[1])
    step = max(1, 2**22 // (count * scatter.size))  # bounded memory for many points
    for lo in range(0, draws.shape[1], step):
        part = draws[:, None, lo : lo + step]
        mixture = part + factor if space == "linear" else part * factor
        ends = np.nanquantile(mixture.reshape(-1, mixture.shape[-1]), quantiles, axis=0)
        lower[lo : lo + step], upper[lo : lo + step] = ends
    return (lower + offset).reshape(shape)[()], (upper + offset).reshape(shape)[()]


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")
