"""``python -m evaluation``: one model, a whole study, resuming, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from evaluation import runner
from evaluation.cli import main
from evaluation.results import ResultsTable
from tests.evaluation.conftest import build_model
from tests.evaluation.test_losses import write_corpus

RUNS = ["L2L_c4_N1.0e05_D2.0e06_C1.2e12", "L2L_fineweb-100b_N1.0e05_D4.0e06_C2.4e12"]


def make_run(study, name, tokenizer, *, seed=0, final=True, dataset=None, shards=None, vocab=None,
             corpus=None, context=256):  # fmt: skip
    """A run folder as training leaves it: weights, tokenizer, training config, final.json."""
    run = study / name
    build_model(vocab or len(tokenizer), context=context, seed=seed).save_pretrained(run)
    tokenizer.save_pretrained(run)
    data = {"tokenizer": str(run), "seq_len": 32, "val_sequences": 4, "data_dir": str(shards)}
    if corpus is not None:
        data["corpus"] = str(corpus)
    (run / "training_config.yaml").write_text(yaml.safe_dump({"data": data}))
    if final:
        dataset = dataset or name.split("_")[1]
        meta = {"run": name, "dataset": dataset, "N": 1.0e5, "D": 2.0e6, "C": 1.2e12, "steps": 10}
        (run / "final.json").write_text(json.dumps(meta))
    return run


@pytest.fixture
def study(tmp_path, tokenizer):
    study = tmp_path / "study"
    shards = tmp_path / "shards"
    for seed, name in enumerate(RUNS):
        make_run(study, name, tokenizer, seed=seed, shards=shards)
    make_run(study, "L2L_c4_N1.0e05_D9.0e06_C5.4e12", tokenizer, final=False, shards=shards)
    return study


def sweep_args(study, out, task_dir, corpus, *extra):
    return [
        "--study", str(study), "--out", str(out), "--tasks", "arc_easy,winogrande",
        "--losses", f"c4={corpus}", "--loss-tokens", "64", "--task-data", str(task_dir),
        "--no-hub", "--quiet", *extra,
    ]  # fmt: skip


def test_sweep_evaluates_finished_runs_and_resumes(study, tmp_path, task_dir, monkeypatch):
    corpus = write_corpus(tmp_path / "c4.jsonl")
    out = tmp_path / "results.jsonl"
    assert main(sweep_args(study, out, task_dir, corpus)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["run"] for r in rows} == set(RUNS)  # the unfinished run is skipped
    first = [r for r in rows if r["run"] == RUNS[0]]
    metrics = {r["metric"]: r for r in first}
    assert {"eval/c4_val/CrossEntropyLoss", "eval/c4_val/BitsPerByte", "val_loss",
            "eval/downstream_ce_loss/arc_easy_test_ce_loss", "eval/downstream/winogrande_test_acc",
            "eval/downstream_bpb/arc_easy_val_rc_5shot_bpb",
            "eval/downstream_bpb/arc_easy_test_rc_5shot_bpb"} <= set(metrics)  # fmt: skip
    assert metrics["val_loss"]["value"] == metrics["eval/c4_val/CrossEntropyLoss"]["value"]
    assert metrics["eval/c4_val/CrossEntropyLoss"]["n"] == 64
    row = metrics["eval/downstream/winogrande_test_acc"]
    assert (row["dataset"], row["N"], row["D"], row["C"]) == ("c4", 1.0e5, 2.0e6, 1.2e12)
    assert not any(
        r["metric"] == "val_loss" for r in rows if r["run"] == RUNS[1]
    )  # trained on fineweb

    # Rerun: nothing to do, nothing loaded.
    loads = []
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: loads.append(a) or 1 / 0)
    assert main(sweep_args(study, out, task_dir, corpus)) == 0
    assert loads == [] and len(out.read_text().splitlines()) == len(rows)
    monkeypatch.undo()

    # A row lost and a torn line (a crash mid-write): only the lost metric is recomputed.
    lines = out.read_text().splitlines()
    kept = [line for line in lines if "winogrande_test_acc" not in line or RUNS[1] not in line]
    out.write_text("\n".join(kept) + '\n{"run": "L2L_c4')
    assert main(sweep_args(study, out, task_dir, corpus)) == 0
    table = ResultsTable(out)
    assert len(table.rows) == len(rows) and table.has(
        RUNS[1], "eval/downstream/winogrande_test_acc"
    )


def test_a_crash_mid_sweep_keeps_the_finished_rows(study, tmp_path, task_dir, monkeypatch):
    corpus = write_corpus(tmp_path / "c4.jsonl")
    out = tmp_path / "results.jsonl"
    calls = []

    def crash_on_second_task(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        yield from real(*args, **kwargs)

    real = runner.evaluate_task
    monkeypatch.setattr(runner, "evaluate_task", crash_on_second_task)
    with pytest.raises(RuntimeError, match="power cut"):
        main(sweep_args(study, out, task_dir, corpus))
    rows = ResultsTable(out).rows
    assert {r["metric"] for r in rows} >= {
        "eval/c4_val/CrossEntropyLoss",
        "eval/downstream/arc_easy_test_acc",
    }
    monkeypatch.undo()
    assert main(sweep_args(study, out, task_dir, corpus)) == 0  # resumes where it stopped
    assert len(ResultsTable(out).rows) > len(rows)


def test_a_broken_run_does_not_stop_the_sweep(study, tmp_path, task_dir, tokenizer, capsys):
    corrupt = make_run(study, "L2L_c4_N1.0e05_D1.0e06_C6.0e11", tokenizer)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    wrong_vocab = make_run(study, "L2L_c4_N1.0e05_D3.0e06_C1.8e12", tokenizer, vocab=100)
    bad_config = make_run(study, "L2L_c4_N1.0e05_D5.0e06_C3.0e12", tokenizer)
    (bad_config / "training_config.yaml").write_text("data: [unclosed\n")
    out = tmp_path / "results.jsonl"
    args = sweep_args(study, out, task_dir, write_corpus(tmp_path / "c4.jsonl"))
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"FAILED {corrupt.name}: load: cannot load a causal LM" in err
    assert f"FAILED {wrong_vocab.name}: load: the tokenizer has {len(tokenizer)} tokens" in err
    assert f"FAILED {bad_config.name}: load: " in err and "not valid YAML" in err
    assert {r["run"] for r in ResultsTable(out).rows} == set(RUNS)


def test_single_model_and_module_entry_point(checkpoint, tmp_path, task_dir):
    out = tmp_path / "one.csv"
    cmd = [sys.executable, "-m", "evaluation", "--model", str(checkpoint), "--tasks", "copa",
           "--families", "zero_shot", "--task-data", str(task_dir), "--no-hub", "--out", str(out), "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = ResultsTable(out).rows
    assert {r["metric"] for r in rows} == {
        "eval/downstream_ce_loss/copa_test_ce_loss", "eval/downstream/copa_test_acc",
        "eval/downstream/copa_test_len_norm",
    }  # fmt: skip
    assert (
        rows[0]["run"] == checkpoint.name and rows[0]["dataset"] == "c4" and rows[0]["N"] == 1.0e5
    )


def test_bad_command_lines(tmp_path, checkpoint, capsys):
    out = str(tmp_path / "r.jsonl")
    assert main(["--model", str(checkpoint), "--tasks", "arc,copa", "--out", out]) == 2
    assert "unknown task 'arc'; known tasks: arc_challenge, arc_easy" in capsys.readouterr().err
    assert main(["--model", str(checkpoint), "--out", out]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing"), "--tasks", "copa", "--out", out]) == 2
    assert "cannot load a causal LM" in capsys.readouterr().err
    assert main(["--study", str(tmp_path / "nostudy"), "--tasks", "copa", "--out", out]) == 2
    assert "study folder not found" in capsys.readouterr().err
    (tmp_path / "unfinished").mkdir()  # a study whose runs have not finished yet
    assert main(["--study", str(tmp_path / "unfinished"), "--tasks", "copa", "--out", out]) == 0
    assert f"nothing evaluated: {out} was not written" in capsys.readouterr().err  # not "0 rows in"


def test_a_released_run_by_name(monkeypatch, checkpoint, tmp_path, task_dir, tokenizer):
    """``--model L2L_...`` fetches the released run through modeling_l2l (faked: offline)."""
    import modeling_l2l

    fetched = []
    monkeypatch.setattr(
        modeling_l2l, "prepare_l2l_run", lambda name: fetched.append(name) or checkpoint
    )
    tokenizer.save_pretrained(tmp_path / "tok")
    out = tmp_path / "r.jsonl"
    name = "L2L_starcoder_N1.1e08_D3.0e08_C2.0e17"
    args = ["--model", name, "--tokenizer", str(tmp_path / "tok"), "--tasks", "copa", "--families",
            "zero_shot", "--task-data", str(task_dir), "--no-hub", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0 and fetched == [name]
    row = ResultsTable(out).rows[0]
    assert (row["run"], row["dataset"], row["N"], row["D"], row["C"]) == (
        name,
        "starcoder",
        1.1e8,
        3.0e8,
        2.0e17,
    )


def test_paper_losses_expand_to_the_seven_corpora():
    cfg = runner.EvalConfig(losses=["paper", "mine=/data/val.npy"])
    keys = [key for key, _ in runner._loss_sources(cfg)]
    assert keys == ["fineweb-100b", "fineweb-edu-100b", "proof-pile-2", "slimpajama-chunk1",
                    "smollm-corpus", "starcoder", "c4", "mine"]  # fmt: skip


def test_own_corpus_loss_is_each_runs_val_loss(tmp_path, tokenizer):
    study = tmp_path / "study"
    for seed, name in enumerate(RUNS):
        corpus = write_corpus(tmp_path / f"corpus{seed}.jsonl", n_docs=30 + 10 * seed)
        make_run(study, name, tokenizer, seed=seed, shards=tmp_path / "shards", corpus=corpus)
    out = tmp_path / "r.jsonl"
    args = [
        "--study",
        str(study),
        "--losses",
        "own",
        "--loss-tokens",
        "64",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    got = {(r["run"], r["metric"]): r["value"] for r in ResultsTable(out).rows}
    assert got[(RUNS[0], "val_loss")] == got[(RUNS[0], "eval/c4_val/CrossEntropyLoss")]
    assert got[(RUNS[1], "val_loss")] == got[(RUNS[1], "eval/fineweb_100b_val/CrossEntropyLoss")]


def test_an_answer_longer_than_the_context_is_scored_and_counted(tmp_path, tokenizer, task_dir):
    """The lead's case: a PIQA solution longer than a tiny model's context. The task is evaluated
    (not failed), and its rows say how many questions needed windows."""
    study = tmp_path / "study"
    make_run(study, RUNS[0], tokenizer, shards=tmp_path / "shards", context=32)
    data = tmp_path / "tasks"
    data.mkdir()
    docs = [json.loads(line) for line in (task_dir / "piqa_validation.jsonl").read_text().splitlines()]
    docs[2]["sol1"] = " ".join(["the cat sat on the mat"] * 12)  # > 32 tokens on its own
    (data / "piqa_validation.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "r.jsonl"
    args = ["--study", str(study), "--tasks", "piqa", "--families", "zero_shot", "--task-data",
            str(data), "--no-hub", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    rows = ResultsTable(out).rows
    assert len(rows) == 3
    assert all(r["n"] == 6 and r["n_windowed"] == 1 and r["value"] == r["value"] for r in rows)


def test_quick_looks_and_full_evaluations_never_share_a_table(checkpoint, tmp_path, task_dir,
                                                               capsys):  # fmt: skip
    """A resumed full evaluation must not keep a --limit quick look's values as complete."""
    out = tmp_path / "r.jsonl"
    base = ["--model", str(checkpoint), "--tasks", "copa", "--families", "zero_shot",
            "--task-data", str(task_dir), "--no-hub", "--out", str(out), "--quiet"]  # fmt: skip
    assert main([*base, "--limit", "2"]) == 0
    rows = ResultsTable(out).rows
    assert {(r["n"], r["limit"]) for r in rows} == {(2, 2)}
    assert main(base) == 2
    assert "holds rows computed with --limit 2; this evaluation uses every question" in (
        capsys.readouterr().err
    )
    assert main([*base, "--limit", "2"]) == 0 and len(ResultsTable(out).rows) == 3  # resumes
    full = tmp_path / "full.jsonl"
    assert main([*base[:-3], "--out", str(full), "--quiet"]) == 0
    assert {(r["n"], r["limit"]) for r in ResultsTable(full).rows} == {(6, None)}
    assert main([*base[:-3], "--out", str(full), "--quiet", "--limit", "3"]) == 2
