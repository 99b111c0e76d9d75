"""Bad input is a ValueError naming the problem, never a silent NaN fit; analysis needs no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from analysis import Objective, fit_law

ROOT = Path(__file__).resolve().parents[2]
N = np.repeat(np.geomspace(1e7, 1e9, 3), 3)[:8]
D = np.tile(np.geomspace(1e9, 1e11, 3), 3)[:8]
Y = 1.7 + 400 / N**0.34 + 2000 / D**0.37  # 8 points of a 3 x 3 grid: every parameter identifiable


def _fit(form="chinchilla", inputs=None, target=None, **kwargs):
    return fit_law(
        form,
        {"N": N, "D": D} if inputs is None else inputs,
        Y if target is None else target,
        **kwargs,
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: _fit(target=np.where(np.arange(8) == 3, np.nan, Y)),
            r"target has 1 NaN or infinite value\(s\) at \[3\]",
        ),
        (
            lambda: _fit(inputs={"N": np.where(np.arange(8) == 0, np.inf, N), "D": D}),
            "input 'N' has 1 NaN or infinite",
        ),
        # the offending value as a plain number, not numpy's repr "np.float64(-...)"
        (lambda: _fit(inputs={"N": -N, "D": D}), r"input 'N'.*8 non-positive value\(s\), e.g. -1"),
        (lambda: _fit(target=-Y), r"takes log\(target\).*non-positive value\(s\), e.g. -\d"),
        (lambda: fit_law("loss_to_loss", {"L": -Y}, Y), r"must be a loss >= 0; got -\d"),
        # numpy would silently drop the imaginary part
        (lambda: _fit(inputs={"N": N + 1j, "D": D}), "input 'N' must be real numbers"),
        (
            lambda: _fit(inputs={"N": N[:4], "D": D[:4]}, target=Y[:4]),
            "4 point\\(s\\) cannot determine 5 free parameter",
        ),
        (lambda: _fit(inputs={"N": N[:5], "D": D}), "input 'N' has 5 values but the target has 8"),
        (lambda: _fit("chinchila"), "unknown form 'chinchila'; known forms: chinchilla, kaplan"),
        (lambda: _fit(fixed={"gamma": 1.0}), "unknown parameter 'gamma' in fixed"),
        (lambda: _fit(fixed={"E": float("nan")}), "fixed parameter 'E' must be finite"),
        (lambda: _fit(fixed={"E": None}), "fixed parameter 'E' must be a number, got None"),
        (
            lambda: _fit(fixed={"E": 5.0}),
            "fixed E=5.0 is not below any target .* never predicts less than E",
        ),
        (
            lambda: fit_law("loss_to_loss", {"L": Y}, Y, fixed={"E_y": 4.5}),
            "fixed E_y=4.5 is not below any target",
        ),
        (lambda: _fit(fixed={"A": -1.0}), "fixed A=-1.0 is outside its allowed range"),
        (lambda: _fit(inputs={"N": N}), r"takes inputs \['N', 'D'\]; missing \['D'\]"),
        (lambda: _fit(inputs={"N": N, "D": D, "C": N}), r"unknown \['C'\]"),
        (lambda: _fit(inputs=[N, D]), "inputs must be a dict"),
        (lambda: _fit(target=np.stack([Y, Y])), "target must be one-dimensional"),
        (lambda: _fit(target=["a"] * 8), "target must be numeric"),
        (lambda: _fit(objective="huber"), "unknown objective 'huber'"),
        (
            lambda: _fit(objective={"name": "huber_log", "reduction": "median"}),
            "unknown reduction 'median'",
        ),
        (lambda: _fit(objective=Objective(delta=0.0)), "Huber delta must be a positive"),
        (
            lambda: _fit(objective="log_ols"),
            "log_ols.*needs form 'loss_to_loss' with both E_x and E_y fixed",
        ),
        (lambda: _fit(bounds={"alpha": (1.0, 0.5)}), "lower < upper"),
        (lambda: _fit(bounds={"zeta": (0.0, 1.0)}), "unknown parameter 'zeta' in bounds"),
        (lambda: _fit(bounds={"E": (0.0, 1.0, 2.0)}), "bounds for 'E' must be a .lower, upper."),
        (lambda: _fit(start={"A": 1.0}), "start must give every free parameter"),
        (
            lambda: _fit(start=dict(A=400.0, B=2000.0, E=1.7, alpha=float("nan"), beta=0.37)),
            "start value of 'alpha' must be finite",
        ),
        (
            lambda: fit_law("loss_to_loss", {"L": Y}, Y, fixed={"E_x": 5.0}),
            "fixed E_x=5.0 is outside its allowed range .* the fit would be impossible",
        ),
        (
            lambda: fit_law(
                "loss_to_loss", {"L": Y}, Y, objective="log_ols", fixed={"E_x": 1.0, "E_y": 2.5}
            ),
            r"log_ols takes log\(target \(y\) - E\).*not above the fixed E=2.5",
        ),
    ],
)
def test_bad_input_is_a_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_fit_never_returns_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning on a clean, identifiable fit
        law = _fit()
    assert all(np.isfinite(v) for v in law.params.values())
    assert np.isfinite(law.objective_value)


BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    import numpy as np
    import analysis
    from analysis import fit_law, load_law, bootstrap
    import analysis.workflows, analysis.plots, analysis.__main__
    law = fit_law("compute", {"C": np.geomspace(1e17, 1e21, 12)}, 2 + 30 * np.geomspace(1e17, 1e21, 12) ** -0.1)
    assert law.converged
    assert "torch" not in sys.modules, "analysis imported torch"
    print("ok")
    """
)


def test_analysis_imports_and_fits_without_torch():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
