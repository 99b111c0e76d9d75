"""Study specs: presets are StudySpecs, YAML round-trips them, bad specs are one line naming the
field, and a spec becomes a study folder (runs, configs, tokenizer, record)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analysis.sizes import param_count
from l2l.cli import main
from l2l.plan import (
    STUDY_RECORD,
    plan_runs,
    plan_study,
    read_record,
    read_spec,
    run_training_config,
)
from l2l.presets import PRESETS, get_preset
from l2l.spec import Grid, Shape, StudySpec, Target
from training.typed_config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def small_spec(tmp_path, **changes) -> StudySpec:
    """Two local corpora of a few hundred documents each (enough for a tokenizer and a plan)."""
    import random

    corpora = {}
    for name, seed in (("alpha", 0), ("beta", 1)):
        rng = random.Random(seed)
        words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
                 for _ in range(3000)]
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": " ".join(rng.choices(words, k=60))}) + "\n"
                                for _ in range(600)))
        corpora[name] = str(path)
    spec = get_preset("smoke")
    spec.corpora = corpora
    spec.tokenizer_sample_bytes = 60_000
    spec.recipe.data.val_sequences = 4
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec.check()


# ------------------------------------------------------------------------------- the spec
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_yaml(name, tmp_path):
    spec = get_preset(name)
    path = tmp_path / "spec.yaml"
    path.write_text(spec.to_yaml())
    assert StudySpec.from_yaml(path).to_dict() == spec.to_dict()
    assert isinstance(spec.recipe.optim.lr, float)  # a preset holds a TrainingConfig


def test_print_config_is_a_spec_that_plans_the_same_runs(tmp_path, capsys):
    assert main(["plan", "--preset", "tiny", "--print-config"]) == 0
    path = tmp_path / "tiny.yaml"
    path.write_text(capsys.readouterr().out)
    assert [r.run for r in plan_runs(StudySpec.from_yaml(path))[0]] == \
        [r.run for r in plan_runs(get_preset("tiny"))[0]]


@pytest.mark.parametrize("change, message", [
    ({"grid": {"shapes": [{"width": 64, "layers": 1}], "budgets": [1e11], "budgts": 1}},
     r"grid.budgts: unknown field \(did you mean 'grid.budgets'\?\)"),
    ({"tokenzier": "bpe:2048"}, r"tokenzier: unknown field \(did you mean 'tokenizer'\?\)"),
    ({"grid": {"shapes": [{"width": 64, "layers": 1}], "budgets": [2e11, 1e11]}},
     r"grid.budgets: .* must be in increasing order"),
    ({"targets": [{"shape": {"width": 192, "layers": 2}, "flop_budget": 1e11}]},
     r"targets\[0\].flop_budget: 1e\+11 is inside the grid"),
    ({"grid": {"shapes": [{"width": 100, "layers": 1}], "budgets": [1e11]}},
     r"grid.shapes\[0\].width: 100 must be a positive multiple of 64"),
    ({"tokenizer": "bpe:1024"}, r"recipe.model.vocab_size: 384 does not match the tokenizer"),
    ({"corpora": {"my corpus": "x.jsonl"}}, r"corpora.my corpus: a label is 1 to 64 letters"),
    ({"recipe.optim.lr": -1}, r"recipe.optim.lr: must be a finite number > 0"),
])
def test_a_bad_spec_is_one_line_naming_the_field(change, message, tmp_path):
    data = get_preset("tiny").to_dict()
    for key, value in change.items():
        *sections, last = key.split(".")
        place = data
        for section in sections:
            place = place[section]
        place[last] = value
    with pytest.raises(ConfigError, match=message):
        StudySpec.from_dict(data)


def test_a_grid_too_small_for_the_law_is_refused():
    spec = get_preset("smoke")
    spec.grid = Grid(shapes=[Shape(64, 1), Shape(64, 2)], budgets=[5e10, 1e11])
    with pytest.raises(ConfigError, match=r"grid: 4 run\(s\) per corpus .* at least 6 runs"):
        plan_runs(spec)


def test_a_ladder_target_inside_the_grid_is_refused():
    spec = get_preset("olmo-ladder")
    spec.targets = [Target(Shape.paper(12), tokens_per_param=40)]  # depth 16 has more of all
    with pytest.raises(ConfigError, match="is inside the grid"):
        plan_runs(spec)


def test_corpus_flag_replaces_the_corpora_and_bad_sources_are_named(tmp_path, capsys):
    spec = small_spec(tmp_path)
    a, b = spec.corpora["alpha"], spec.corpora["beta"]
    assert main(["plan", "--preset", "smoke", "--corpus", f"web={a}", "--corpus", f"code={b}",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "L2L_web_" in out and "L2L_code_" in out and "python-stdlib" not in out
    # the preset's words were about its own corpora (the report opened with them)
    assert main(["plan", "--preset", "smoke", "--corpus", f"web={a}", "--corpus", f"code={b}",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["description"] == "web against code, on the grid and targets of the `smoke` study"
    assert main(["plan", "--preset", "smoke", "--corpus", "web", "--dry-run"]) == 2
    assert "expected NAME=SOURCE" in capsys.readouterr().err
    assert main(["plan", "--preset", "smoke", "--corpus", f"web={tmp_path}/nothing.jsonl",
                 "--corpus", f"b={b}", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "corpora.web:" in err and "does not exist" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["plan", "--preset", "smoke", "--corpus", f"web={empty}",
                 "--corpus", f"b={b}", "--out", str(tmp_path / "s2")]) == 2
    assert "corpora.web:" in capsys.readouterr().err


# ------------------------------------------------------------------------------- planning
def test_tiny_plan_is_the_grid_and_one_target_per_corpus():
    runs, targets = plan_runs(get_preset("tiny"))
    spec = PRESETS["tiny"]
    assert len(runs) == 2 * (16 + 1) and len(targets) == 2
    tokens_per_step = spec.recipe.batch.global_batch_size * spec.recipe.data.seq_len
    for run in runs:
        assert run.N == param_count(run.d_model, run.n_layers, spec.vocab_size)
        assert run.D == run.steps * tokens_per_step  # the tokens trained, whole steps
        assert abs(6 * run.N * run.D - run.C) / run.C < 0.05
    target_runs = [r for r in runs if r.run in targets]
    assert {(r.d_model, r.n_layers, r.C) for r in target_runs} == {(128, 2, 3.9e12)}
    assert all(2 < r.tokens_per_param < 200 for r in runs)  # the papers' range, targets too


def test_a_plan_trains_the_study_tokenizer_on_every_corpus(tmp_path):
    spec = small_spec(tmp_path)
    runs = plan_study(spec, tmp_path / "study")
    record = read_record(tmp_path / "study")
    assert read_spec(tmp_path / "study").to_dict() == spec.to_dict()
    assert set(record["tokenizer"]["sample_chars"]) == {"alpha", "beta"}
    assert record["tokenizer"]["skipped_chars"] > 0  # the held-out text is not trained on
    tokenizer = tmp_path / "study" / "tokenizer"
    assert (tokenizer / "tokenizer.json").is_file()
    assert not list(tokenizer.glob("sample-*"))  # the corpora's text is not kept
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(str(tokenizer))) == 2048
    configs = list((tmp_path / "study" / "configs").glob("L2L_*.yaml"))
    assert len(configs) == len(runs)  # `l2l plan` writes every run's config
    run = next(r for r in runs if (r.d_model, r.n_layers) == (128, 1))
    cfg = run_training_config(tmp_path / "study", run, spec)
    assert (cfg.model.d_model, cfg.model.n_heads, cfg.model.n_layers) == (128, 2, 1)
    assert cfg.optim.lr == pytest.approx(5e-3 / math.sqrt(2))
    assert cfg.data.tokenizer == str(tokenizer.resolve())
    assert cfg.data.corpus == spec.corpora[run.dataset]


def test_replanning_keeps_the_study_and_another_spec_or_a_sweep_study_is_refused(tmp_path):
    spec = small_spec(tmp_path)
    first = plan_study(spec, tmp_path / "study")
    assert plan_study(spec, tmp_path / "study") == first
    other = small_spec(tmp_path, name="other")
    with pytest.raises(ConfigError, match="planned from another spec .*name"):
        plan_study(other, tmp_path / "study")
    sweep = tmp_path / "sweep"
    subprocess.run([sys.executable, "-m", "training.sweep", "--grid", "custom", "--preset",
                    "tiny-cpu", "--depths", "1", "2", "--multipliers", "0.25", "--corpora",
                    "python-stdlib", "--out", str(sweep)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    before = {p.name: p.read_bytes() for p in sweep.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="holds a study of `python -m training.sweep`"):
        plan_study(spec, sweep)
    assert {p.name: p.read_bytes() for p in sweep.iterdir() if p.is_file()} == before


def test_an_interrupted_plan_is_planned_again(tmp_path):
    spec = small_spec(tmp_path)
    plan_study(spec, tmp_path / "study")
    (tmp_path / "study" / STUDY_RECORD).unlink()  # killed before its record
    assert len(plan_study(spec, tmp_path / "study")) == 14
    assert read_record(tmp_path / "study")["targets"]


def test_paper_presets_plan_the_papers_grids(tmp_path):
    runs, targets = plan_runs(get_preset("paper-fineweb-edu"))
    target_runs = [r for r in runs if r.run in targets]
    assert [(r.n_layers, r.C) for r in target_runs] == [(40, 1e21)]
    assert len(runs) == 96  # the 95 (depth, budget) pairs of the sweep and the 1e21 run
    ladder, target = plan_runs(get_preset("olmo-ladder"))
    assert len(ladder) == 20 and len(target) == 1
    deepest = [r for r in ladder if r.n_layers == 16]
    assert len({r.global_batch_size for r in ladder}) > 1  # OLMo-ladder's batch grows with N
    assert max(deepest, key=lambda r: r.D).run == target[0]


def test_help_is_fast_and_loads_no_model_code():
    probe = ("import sys; from l2l.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


def test_plan_dry_run_writes_nothing_and_needs_no_model(tmp_path):
    probe = ("import sys; from l2l.cli import main; main(['plan', '--preset', 'tiny', "
             "'--dry-run', '--out', sys.argv[1]]); "
             "print(sorted(m for m in ('torch', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "t")], cwd=REPO,
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "(target)" in out.stdout and out.stdout.strip().endswith("[]")
    assert not (tmp_path / "t").exists()


def test_a_spec_file_runs_as_a_study(tmp_path):
    spec = small_spec(tmp_path, name="mine")
    path = tmp_path / "mine.yaml"
    path.write_text(spec.to_yaml())
    assert main(["plan", "--config", str(path), "--out", str(tmp_path / "mine")]) == 0
    assert read_spec(tmp_path / "mine").name == "mine"
    data = yaml.safe_load(path.read_text())
    data["grid"]["budgets"] = [1e11, 5e10]
    path.write_text(yaml.safe_dump(data))
    assert main(["plan", "--config", str(path), "--out", str(tmp_path / "other")]) == 2


def test_slurm_dry_run_writes_configs_and_prints_the_dependent_jobs(tmp_path, capsys):
    assert main(["study", "--preset", "paper-fineweb-edu", "--out", str(tmp_path / "p"),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would submit: sbatch --parsable --array=0-95" in out
    assert "[train] 96 would be submitted to slurm" in out  # was "nothing to do"
    # the follow-up job with its dependency (the array's id not known yet), which was left out
    assert ("would submit: sbatch --parsable '--dependency=afterany:<array job id>' "
            "--job-name=l2l-p-fit") in out
    assert f"-m l2l study --config {(tmp_path / 'p' / 'spec.yaml').resolve()}" in out
    assert "--follow-up" in out
    assert len(list((tmp_path / "p" / "configs").glob("L2L_*.yaml"))) == 96


def test_the_readme_spec_plans_as_written(tmp_path):
    """The README's example spec (its yaml block under 'Your own study'), its corpora pointed at
    two small local files: a partial recipe keeps the default recipe's other fields, and the
    vocabulary follows the bpe tokenizer."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Your own study"):]
    block = section[section.index("```yaml") + len("```yaml"):]
    data = yaml.safe_load(block[:block.index("```")])
    data["corpora"] = small_spec(tmp_path).corpora
    spec = StudySpec.from_dict(data)
    assert spec.recipe.model.vocab_size == spec.bpe_vocab
    assert spec.recipe.optim.lr == data["recipe"]["optim"]["lr"]
    assert spec.recipe.data.seq_len == get_preset("tiny").recipe.data.seq_len
    runs, targets = plan_runs(spec)
    assert targets and all(2 < r.tokens_per_param < 200 for r in runs if r.run not in targets)
