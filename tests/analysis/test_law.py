"""The Law object: prediction, intervals, save/load round trip, Hub push to a local server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from analysis import FORMS, FitWarning, Law, bootstrap, fit_law, load_law
from tests.local_hub import LocalHub

ROOT = Path(__file__).resolve().parents[2]
TRUTH = dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)


def _sweep(seed=0):
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(2e7, 2e9, 6), np.geomspace(2e8, 5e10, 6)))
    y = FORMS["chinchilla"].predict(TRUTH, {"N": n, "D": d})
    y = y * np.exp(np.random.default_rng(seed).normal(0, 1e-3, y.size))
    return {"N": n, "D": d}, y


def test_law_is_frozen_and_reports_its_fit():
    inputs, y = _sweep()
    law = fit_law("chinchilla", inputs, y, metadata={"source": "synthetic"})
    with pytest.raises(AttributeError):
        law.form = "kaplan"
    assert law.n_points == 36 and law.converged
    assert set(law.stderr) == set(TRUTH) and all(v > 0 for v in law.stderr.values())
    assert 0.99 < law.r_squared <= 1.0
    assert "chinchilla" in law.summary() and "objective huber_log" in law.summary()
    assert "Law(chinchilla" in repr(law)
    with pytest.raises(ValueError, match="missing D"):
        law.predict(N=1e9)
    with pytest.raises(ValueError, match="unknown C"):
        law.predict(N=1e9, D=1e10, C=1.0)


def test_delta_method_interval_without_bootstrap():
    inputs, y = _sweep()
    law = fit_law("chinchilla", inputs, y)
    lower, upper = law.predict_interval(0.9, N=7e10, D=1.4e12)
    center = law.predict(N=7e10, D=1.4e12)
    assert lower < center < upper
    intervals = law.param_intervals(0.9)
    for name, (lo, hi) in intervals.items():
        assert lo < law.params[name] < hi


def test_save_and_load_round_trip(tmp_path):
    inputs, y = _sweep()
    law = bootstrap(
        fit_law("chinchilla", inputs, y, metadata={"source": "synthetic"}),
        inputs,
        y,
        n_resamples=12,
    )
    law.save_pretrained(tmp_path / "law")
    files = sorted(p.name for p in (tmp_path / "law").iterdir())
    assert files == ["README.md", "bootstrap.csv", "config.json"]
    config = json.loads((tmp_path / "law" / "config.json").read_text())
    assert config["form"] == "chinchilla" and config["objective"]["reduction"] == "mean"
    card = (tmp_path / "law" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: l2l" in card and "| alpha |" in card

    loaded = load_law(tmp_path / "law")
    assert isinstance(loaded, Law)
    assert loaded.params == law.params  # exact: floats survive JSON
    for field in (
        "form",
        "objective",
        "objective_value",
        "n_points",
        "converged",
        "fixed",
        "stderr",
        "covariance",
        "warnings",
        "metadata",
        "bootstrap_info",
        "r_squared",
    ):
        assert getattr(loaded, field) == getattr(law, field), field
    np.testing.assert_array_equal(loaded.samples, law.samples)
    np.testing.assert_array_equal(
        loaded.predict_interval(0.9, N=7e10, D=1.4e12), law.predict_interval(0.9, N=7e10, D=1.4e12)
    )
    # saving again without samples removes the stale samples file
    fit_law("chinchilla", inputs, y).save_pretrained(tmp_path / "law")
    assert not (tmp_path / "law" / "bootstrap.csv").exists()
    assert load_law(tmp_path / "law").samples is None


def _strict(text):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_every_field_round_trips_through_strict_json(tmp_path):
    """Every dataclass field comes back (NaN standard errors of an unidentifiable law, bounds,
    residuals, start, metadata), and config.json is standard JSON: no NaN/Infinity tokens, which
    the Hub and non-Python readers reject."""
    from dataclasses import fields

    c = np.geomspace(1e17, 1e21, 12)
    y = 2.0 + 30.0 * c**-0.1
    with pytest.warns(FitWarning, match="A, E not identifiable"):
        law = fit_law(
            "compute",
            {"C": c},
            y,
            fixed={"alpha": 0.0},  # A and E interchangeable: NaN standard errors and covariance
            bounds={"E": (0.5, np.inf)},
            metadata={"source": "synthetic", "nested": {"runs": [1, 2]}, "missing": float("nan")},
        )
    assert np.isnan(law.stderr["E"]) and law.bounds == {"E": (0.5, np.inf)}
    law.save_pretrained(tmp_path / "law")
    config = _strict((tmp_path / "law" / "config.json").read_text())
    assert config["stderr"]["E"] == "NaN" and config["bounds"]["E"] == [0.5, "Infinity"]
    loaded = load_law(tmp_path / "law")
    for field in fields(Law):
        ours, theirs = getattr(law, field.name), getattr(loaded, field.name)
        if field.name == "metadata":
            assert theirs == {**ours, "missing": "NaN"}  # free-form: kept as the JSON string
        elif isinstance(ours, np.ndarray) or field.name in ("stderr", "covariance"):
            values = list(ours.values()) if isinstance(ours, dict) else ours
            back = list(theirs.values()) if isinstance(theirs, dict) else theirs
            np.testing.assert_array_equal(np.asarray(back, float), np.asarray(values, float))
        else:
            assert theirs == ours, field.name


def test_a_saved_bootstrap_without_its_samples_file_is_an_error(tmp_path):
    inputs, y = _sweep()
    law = bootstrap(fit_law("chinchilla", inputs, y), inputs, y, n_resamples=4)
    law.save_pretrained(tmp_path / "law")
    (tmp_path / "law" / "bootstrap.csv").unlink()
    with pytest.raises(ValueError, match="records a bootstrap but bootstrap.csv is missing"):
        load_law(tmp_path / "law")


def test_predict_refuses_inputs_outside_the_laws_domain():
    """A NaN or a non-positive N would give a NaN prediction: an error names it instead."""
    inputs, y = _sweep()
    law = fit_law("chinchilla", inputs, y)
    with pytest.raises(ValueError, match="input 'N' has NaN"):
        law.predict(N=[1e9, np.nan], D=1e10)
    with pytest.raises(ValueError, match="logarithm of input 'D'.*non-positive"):
        law.predict_interval(0.9, N=1e9, D=[1e10, 0.0])
    l2l = Law(form="loss_to_loss", params=dict(K=0.6, kappa=1.1, E_x=1.5, E_y=0.7))
    with pytest.raises(ValueError, match="must be a loss >= 0"):
        l2l.predict(L=-1.0)


def test_load_rejects_what_is_not_a_law(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="not an l2l law"):
        load_law(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_law(tmp_path / "empty")


def test_load_errors_name_the_source(tmp_path):
    """A mistyped folder, a file, broken JSON, missing fields or samples: a ValueError naming
    the source, never huggingface_hub's or json's traceback (python -m analysis predict)."""
    with pytest.raises(ValueError, match="no saved law at .*no such folder, and not a Hub repo"):
        load_law(tmp_path / "no_such_law")  # an absolute path is no repository id
    started = time.perf_counter()
    with pytest.raises(ValueError, match="'mylaw': no such folder, and not a Hub repository id"):
        load_law("mylaw")  # a mistyped folder: at once, not after the Hub client's retries
    assert time.perf_counter() - started < 2
    with pytest.raises(ValueError, match="'nobody/no-such-law': no such folder here, and none"):
        load_law("nobody/no-such-law", local_files_only=True)  # a repository id, not cached
    (tmp_path / "law.json").write_text("{}")
    with pytest.raises(ValueError, match="is a file; a saved law is the folder"):
        load_law(tmp_path / "law.json")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"l2l_law_format": 1, "form": ')
    with pytest.raises(ValueError, match="broken'.*config.json is not valid JSON"):
        load_law(broken)
    (broken / "config.json").write_text(
        json.dumps({"l2l_law_format": 1, "form": "chinchilla", "params": {"A": 1.0}})
    )
    with pytest.raises(ValueError, match="broken'.*malformed l2l law config.*'objective'"):
        load_law(broken)
    for value, kind in (([{"l2l_law_format": 1}], "list"), ("law", "string"), (1, "number")):
        # any JSON but an object: huggingface_hub's reader raised AttributeError ('list' object
        # has no attribute 'items'), from load_law and Law.from_pretrained alike
        (broken / "config.json").write_text(json.dumps(value))
        for load in (load_law, Law.from_pretrained):
            with pytest.raises(ValueError, match=f"broken'.*config.json holds a JSON {kind}, not"):
                load(broken)
    inputs, y = _sweep()
    (broken / "config.json").unlink()  # save_pretrained refuses to replace what is not a law
    bootstrap(fit_law("chinchilla", inputs, y), inputs, y, n_resamples=3).save_pretrained(broken)
    config = json.loads((broken / "config.json").read_text())
    del config["params"]["B"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="broken'.*config.json: params .* exactly .*missing B"):
        load_law(broken)
    text = (broken / "bootstrap.csv").read_text().splitlines()
    bootstrap(fit_law("chinchilla", inputs, y), inputs, y, n_resamples=3).save_pretrained(broken)
    (broken / "bootstrap.csv").write_text("\n".join([text[0], "1,2,x,4,5"]))
    with pytest.raises(ValueError, match="bootstrap.csv: malformed bootstrap samples"):
        load_law(broken)
    (broken / "bootstrap.csv").write_text(text[0] + "\n")  # NaN intervals from no resamples
    with pytest.raises(ValueError, match="bootstrap.csv: no bootstrap samples below the header"):
        load_law(broken)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"fixed": ["Z"]},
            r"fixed names 'Z', not a parameter of form 'chinchilla' \(its "
            r"parameters: A, B, E, alpha, beta\)",
        ),
        ({"fixed": ["E", "E"]}, r"fixed names a parameter twice"),
        ({"fixed": "alpha"}, r"ill-typed field 'fixed' \('alpha': a list of strings"),
        ({"bounds": {"Z": [0, 1]}}, r"bounds names 'Z', not a parameter"),
        ({"bounds": {"E": 1.5}}, r"ill-typed field 'bounds' \('E': a \[low, high\] pair"),
        ({"params": {"Z": 1.0}}, r"params of a 'chinchilla' law must be exactly .*unknown 'Z'"),
        ({"params": {"E": "NaN"}}, r"ill-typed field 'params' \('E': a finite number"),
        ({"params": {"E": "x"}}, r"ill-typed field 'params' \('E': could not convert"),
        ({"converged": "false"}, r"ill-typed field 'converged' \('false': true or false"),
        ({"n_points": 2.5}, r"ill-typed field 'n_points' \(2.5: a whole number"),
        ({"warnings": "check"}, r"ill-typed field 'warnings'"),
        ({"covariance": [[1.0, 2.0]]}, r"covariance must be 5 x 5"),
        ({"form": "nope"}, r"unknown form 'nope'"),
    ],
)
def test_load_refuses_a_config_that_does_not_fit_its_form(tmp_path, change, message):
    """A hand-edited or damaged config.json whose fields do not fit the law's form: an error
    naming the file, the field and the form's parameters. 'fixed: ["Z"]' printed predictions as
    if nothing were wrong; tuple("alpha") made five one-letter names."""
    inputs, y = _sweep()
    fit_law("chinchilla", inputs, y).save_pretrained(tmp_path / "law")
    config = json.loads((tmp_path / "law" / "config.json").read_text())
    for key, value in change.items():
        if key == "params":
            value = {**config["params"], **value}
        config[key] = value
    (tmp_path / "law" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="law'.*config.json: .*" + message):
        load_law(tmp_path / "law")


def test_a_law_is_checked_against_its_form_however_it_is_made():
    """Not only loading: a Law built or replaced with fields its form does not have is refused."""
    from dataclasses import replace

    params = dict(K=0.6, kappa=1.1, E_x=1.5, E_y=0.7)
    with pytest.raises(ValueError, match=r"fixed names 'Z', not a parameter of form 'loss_to_lo"):
        Law(form="loss_to_loss", params=params, fixed=("Z",))
    with pytest.raises(ValueError, match="must be exactly K, kappa, E_x, E_y; missing E_y"):
        Law(form="loss_to_loss", params={k: v for k, v in params.items() if k != "E_y"})
    with pytest.raises(ValueError, match="unknown form 'l2l'"):
        Law(form="l2l", params=params)
    law = Law(form="loss_to_loss", params=params)
    with pytest.raises(ValueError, match="bounds names 'E'"):
        replace(law, bounds={"E": (0.0, 1.0)})
    with pytest.raises(ValueError, match=r"one column per parameter .* shape \(3, 2\)"):
        law.with_samples(np.ones((3, 2)), {"n_resamples": 3})


def test_a_missing_local_law_fails_at_once_naming_where_it_looked(tmp_path, monkeypatch):
    """'results/my-law' where results/ exists here is a folder in it, not the Hub repository
    'results/my-law': at once, not after ~25 s of Hub retries offline."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "law-a").mkdir(parents=True)
    started = time.perf_counter()
    with pytest.raises(ValueError) as error:
        load_law("results/my-law")
    assert time.perf_counter() - started < 2
    assert "no saved law at 'results/my-law': no such folder" in str(error.value)
    assert "not looked up on the Hub: results/ is a folder here" in str(error.value)
    assert "holds no 'my-law' (its folders: law-a)" in str(error.value)
    assert f"looked for the folder {tmp_path / 'results' / 'my-law'}" in str(error.value)
    for path in ("./my-law", "~nobody/my-law"):  # paths by their look, whatever exists
        started = time.perf_counter()
        with pytest.raises(ValueError, match="is a path, not a Hub repository id"):
            load_law(path)
        assert time.perf_counter() - started < 2
    fit_law("chinchilla", *_sweep()).save_pretrained(tmp_path / "results" / "my-law")
    assert load_law("results/my-law").form == "chinchilla"  # the folder, when it is there
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_law("~/results/my-law").form == "chinchilla"


def test_a_law_not_here_nor_on_the_hub_names_both_offline(tmp_path):
    """Offline (HF_HUB_OFFLINE=1), a Hub id that is no folder here fails at once from the Hub
    cache, and the error names the folder looked for and the Hub repository tried."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "predict", "nobody/my-law", "--at", "N=1e9,D=1e10"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert time.perf_counter() - started < 15  # the Hub client's retries take ~25 s
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "from the Hub repository 'nobody/my-law' (offline (HF_HUB_OFFLINE is set)" in (
        result.stderr
    )
    assert f"looked for the folder {tmp_path / 'nobody' / 'my-law'}" in result.stderr


def test_save_refuses_a_folder_holding_something_else(tmp_path):
    """save_pretrained replaces config.json and replaces or deletes bootstrap.csv: a folder whose
    files of those names are not a law's is refused, and nothing in it is touched."""
    inputs, y = _sweep()
    law = fit_law("chinchilla", inputs, y)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="model holds a config.json that is not a saved law"):
        law.save_pretrained(model)
    assert (model / "config.json").read_text() == '{"model_type": "llama"}'
    assert sorted(p.name for p in model.iterdir()) == ["config.json"]
    table = tmp_path / "table"
    table.mkdir()
    (table / "bootstrap.csv").write_text("my,own\n1,2\n")
    with pytest.raises(ValueError, match="table holds a bootstrap.csv but no saved law"):
        law.save_pretrained(table)
    assert (table / "bootstrap.csv").read_text() == "my,own\n1,2\n"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    law.save_pretrained(tmp_path / "notes")  # other files are left alone
    assert (tmp_path / "notes" / "notes.txt").read_text() == "mine"
    assert load_law(tmp_path / "notes").params == law.params


def test_saving_over_a_law_rewrites_its_untouched_model_card(tmp_path):
    """The Hub mixin keeps an existing README.md: the card of the law replaced described its
    parameters beside the new config.json. An untouched card is rewritten, an edited one kept."""
    inputs, y = _sweep()
    first = fit_law("chinchilla", inputs, y)
    second = fit_law("chinchilla", inputs, y, fixed={"E": 1.5})
    first.save_pretrained(tmp_path / "law")
    second.save_pretrained(tmp_path / "law")
    card = (tmp_path / "law" / "README.md").read_text()
    assert card == str(second.generate_model_card()) and "| E | 1.5 | fixed |" in card
    (tmp_path / "law" / "README.md").write_text(card + "\nMy notes.\n")
    first.save_pretrained(tmp_path / "law")
    assert (tmp_path / "law" / "README.md").read_text().endswith("My notes.\n")
    assert load_law(tmp_path / "law").params == first.params


PUSH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from analysis import FORMS, bootstrap, fit_law, load_law
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(2e7, 2e9, 5), np.geomspace(2e8, 5e10, 5)))
    truth = dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)
    y = FORMS["chinchilla"].predict(truth, {"N": n, "D": d})
    law = bootstrap(fit_law("chinchilla", {"N": n, "D": d}, y), {"N": n, "D": d}, y, n_resamples=8)
    url = law.push_to_hub("l2l-test/chinchilla-law")
    fresh = fit_law("compute", {"C": n * d * 6}, y)
    fresh.push_to_hub("l2l-test/compute-law")
    back = load_law("l2l-test/chinchilla-law")
    no_samples = load_law("l2l-test/compute-law")
    print(json.dumps({
        "url": str(url),
        "same_params": back.params == law.params,
        "same_samples": bool(np.array_equal(back.samples, law.samples)),
        "compute_samples": no_samples.samples is None,
        "compute_form": no_samples.form,
    }))
    """
)


def test_push_to_hub_and_load_back_through_a_local_hub(tmp_path):
    """The real push_to_hub / hf_hub_download code paths, against tests/local_hub.py
    (create repo, preupload, commit, resolve), selected with HF_ENDPOINT in a subprocess."""
    with LocalHub() as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "HF_TOKEN": "hf_local_test_token",
            "HF_HOME": str(tmp_path / "hf_home"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "0",
            "PYTHONPATH": str(ROOT),
        }
        result = subprocess.run(
            [sys.executable, "-c", PUSH_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report == {
            "url": report["url"],
            "same_params": True,
            "same_samples": True,
            "compute_samples": True,
            "compute_form": "compute",
        }
        assert report["url"].startswith(hub.endpoint + "/l2l-test/chinchilla-law/commit/")
        stored = hub.files("l2l-test/chinchilla-law")
        assert sorted(stored) == ["README.md", "bootstrap.csv", "config.json"]
        assert json.loads(stored["config.json"])["form"] == "chinchilla"
        assert sorted(hub.files("l2l-test/compute-law")) == ["README.md", "config.json"]
        posts = [request.path for request in hub.requests if request.method == "POST"]
        assert "/api/repos/create" in posts
        assert any("/preupload/main" in p for p in posts) and any(
            "/commit/main" in p for p in posts
        )
        auth = {
            r.headers.get("authorization") or r.headers.get("Authorization") for r in hub.requests
        }
        assert auth == {"Bearer hf_local_test_token"}


def test_a_config_beside_another_fits_samples_is_refused(tmp_path):
    """A law saved again while another process reads it: the reader must never pair one fit's
    config.json with another fit's bootstrap.csv (samples go first, the config names their
    digest)."""
    C = np.geomspace(1e17, 1e21, 12)
    rng = np.random.default_rng(0)
    laws = []
    for seed in (0, 1):
        y = (1.8 + 30 * C**-0.07) * np.exp(0.004 * rng.standard_normal(C.size))
        law = fit_law("compute", {"C": C}, y)
        laws.append(bootstrap(law, {"C": C}, y, n_resamples=20, seed=seed))
    laws[0].save_pretrained(tmp_path / "a")
    laws[1].save_pretrained(tmp_path / "b")
    loaded = load_law(tmp_path / "a")
    assert np.array_equal(loaded.samples, laws[0].samples)
    assert "samples_sha256" not in loaded.bootstrap_info
    (tmp_path / "a" / "bootstrap.csv").write_bytes((tmp_path / "b" / "bootstrap.csv").read_bytes())
    with pytest.raises(ValueError, match="bootstrap.csv is not the one its config.json was saved"):
        load_law(tmp_path / "a")
