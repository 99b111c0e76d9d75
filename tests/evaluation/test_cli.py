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
    # Shards go to the study's folder unless given: never the working directory (str(None)
    # made a folder "None" in it) nor the user's cache.
    data = {"tokenizer": str(run), "seq_len": 32, "val_sequences": 4,
            "data_dir": str(shards if shards is not None else study / "shards")}
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
    # --loss-tokens 64 at seq_len 32: 2 sequences, 31 predicted tokens each (the loss's n)
    assert metrics["eval/c4_val/CrossEntropyLoss"]["n"] == 62
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


def quick_args(target, out, task_dir, *extra, flag="--study"):
    return [flag, str(target), "--out", str(out), "--tasks", "copa", "--families", "zero_shot",
            "--task-data", str(task_dir), "--no-hub", "--quiet", *extra]  # fmt: skip


def no_loading(monkeypatch) -> list:
    """Record (and refuse) every model load: bad input must be refused before any."""
    loads = []
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: loads.append(a) or 1 / 0)
    return loads


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("notes.txt", "my notes", "notes.txt: a results table is a .jsonl or .csv file, not .txt"),
        ("notes.jsonl", "my notes", "notes.jsonl:1: its last line 'my notes' is neither a JSON row"),
        ("notes.csv", "run,metric,value\na,m,1\nmy own row,m,2",
         "notes.csv:3: its last line 'my own row,m,2' (no final newline) may be a complete row"),
    ],
)  # fmt: skip
def test_a_users_file_given_as_out_is_refused_untouched(checkpoint, tmp_path, task_dir, capsys,
                                                          monkeypatch, name, content, why):  # fmt: skip
    """The fault probe: --out notes.txt, a one-line file without final newline, had its notes
    replaced by result rows ("ignoring a torn last line")."""
    loads = no_loading(monkeypatch)
    out = tmp_path / name
    out.write_text(content)
    assert main(quick_args(checkpoint, out, task_dir, flag="--model")) == 2
    err = capsys.readouterr().err
    assert f"error: {out.parent}/{why}" in err and "refusing to " in err
    assert out.read_text() == content and loads == []


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--limit", "0"], "limit (--limit) must be at least 1, got 0"),  # was: every question
        (["--limit", "-2"], "limit (--limit) must be at least 1, got -2"),  # was: all but 2
        (["--val-sequences", "0"], "val_sequences (--val-sequences) must be at least 1, got 0"),
        (["--batch-tokens", "-1"], "max_batch_tokens (--batch-tokens) must be at least 1, got -1"),
        (["--families", ""], "tasks but no metric family to compute"),  # was: nothing, exit 0
        (["--losses", "=x.npy"], "held-out loss '=x.npy': expected a corpus, a file or key=source"),
        (["--losses", "c4="], "held-out loss 'c4=': expected a corpus"),
        (["--task-data", "/no/such/folder"], "task_data (--task-data) folder not found: /no/such"),
        (["--lm-eval-tasks", "l2l_copa", "--lm-eval-include", "/no/such"],
         "lm_eval_include (--lm-eval-include) folder not found: /no/such"),
        (["--dtype", "int8"], "unknown dtype 'int8'; use float32, bfloat16 or float16"),
        (["--device", "gpu"], "device 'gpu' is not usable here: Expected one of cpu, cuda"),
        (["--tasks", "copa,arc"], "unknown task 'arc'; known tasks:"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line_errors_before_any_model_is_loaded(
    checkpoint, tmp_path, task_dir, capsys, monkeypatch, extra, why
):
    loads = no_loading(monkeypatch)
    out = tmp_path / "r.jsonl"
    assert main(quick_args(checkpoint, out, task_dir, *extra, flag="--model")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {why}") and "\n" not in err
    assert loads == [] and not out.exists()


def test_an_out_that_cannot_be_written_is_an_error_before_loading(checkpoint, tmp_path, task_dir,
                                                                  capsys, monkeypatch):  # fmt: skip
    """Was a traceback (IsADirectoryError, NotADirectoryError), once a model had been evaluated."""
    loads = no_loading(monkeypatch)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder.jsonl").mkdir()
    for out, why in [(tmp_path / "folder.jsonl", "folder.jsonl is not a file"),
                     (tmp_path / "afile" / "r.jsonl", "afile is not a folder")]:  # fmt: skip
        assert main(quick_args(checkpoint, out, task_dir, flag="--model")) == 2
        assert why in capsys.readouterr().err
    assert loads == []


def test_cuda_absent_is_an_error_not_a_traceback(checkpoint, tmp_path, task_dir, capsys,
                                                  monkeypatch):  # fmt: skip
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    no_loading(monkeypatch)
    assert main(quick_args(checkpoint, tmp_path / "r.jsonl", task_dir, "--device", "cuda",
                           flag="--model")) == 2  # fmt: skip
    assert "error: device 'cuda' is not usable here" in capsys.readouterr().err


def test_a_short_held_out_split_is_reported_in_the_rows_unit(tmp_path, tokenizer, caplog):
    """The probe saw a warning of "64 sequences" beside rows of n 8192 (tokens read). The warning
    now gives sequences and tokens, and n is the predicted tokens the loss averages over."""
    study = tmp_path / "study"
    make_run(study, RUNS[0], tokenizer, shards=tmp_path / "shards")  # seq_len 32, 4 held out
    corpus = write_corpus(tmp_path / "c4.jsonl")
    out = tmp_path / "r.jsonl"
    args = ["--study", str(study), "--losses", f"c4={corpus}", "--loss-tokens", "1024", "--out",
            str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert (
        "the held-out split has 4 sequences of 32 tokens, fewer than the 32 asked for (1024 tokens "
        "// 32); the loss is over all of them: 124 predicted tokens (31 per sequence), the n of "
        "its rows"
    ) in caplog.text
    rows = ResultsTable(out).rows
    assert {r["metric"] for r in rows} >= {"eval/c4_val/CrossEntropyLoss", "val_loss"}
    assert {r["n"] for r in rows} == {4 * 31}


def test_broken_run_metadata_fails_its_run_and_the_sweep_goes_on(study, tmp_path, task_dir,
                                                                 tokenizer, capsys):  # fmt: skip
    """final.json and training_config.yaml are read for the run's columns and data settings: a bad
    value is one FAILED line naming the file and field, never a traceback that stops the study,
    nor a NaN or 'None' written into every row."""
    broken = {
        "L2L_c4_N1.0e05_D1.1e06_C1.0e12": ("[1, 2]", "final.json: expected a JSON object, got list"),
        "L2L_c4_N1.0e05_D1.2e06_C1.0e12": ('{"N": "abc"}', "final.json: 'N' is 'abc', not a positive number"),
        "L2L_c4_N1.0e05_D1.3e06_C1.0e12": ('{"N": NaN}', "final.json: 'N' is nan, not a positive number"),
        "L2L_c4_N1.0e05_D1.4e06_C1.0e12": ('{"run": null, "D": -1}', "final.json: 'D' is -1"),
        "L2L_c4_N1.0e05_D1.5e06_C1.0e12": ('{"run": ""}', "final.json: 'run' is '', not a name"),
        "L2L_c4_N1.0e05_D1.6e06_C1.0e12": (b"\xff\xfe{}", "cannot read "),
        # A copied final.json: the copy would have been taken as evaluated already.
        RUNS[0] + "_copy": (json.dumps({"run": RUNS[0]}), f"its run name '{RUNS[0]}' is also that of"),
    }  # fmt: skip
    for name, (meta, _) in broken.items():
        run = make_run(study, name, tokenizer)
        (run / "final.json").write_bytes(meta if isinstance(meta, bytes) else meta.encode())
    seq_len = make_run(study, "L2L_c4_N1.0e05_D1.7e06_C1.0e12", tokenizer)
    (seq_len / "training_config.yaml").write_text(yaml.safe_dump({"data": {"seq_len": "abc"}}))
    (study / "runs.json").write_text('{"not": "a plan"}')  # the plan only names unfinished runs
    out = tmp_path / "r.jsonl"
    corpus = write_corpus(tmp_path / "c4.jsonl")
    assert main(quick_args(study, out, task_dir, "--losses", f"c4={corpus}", "--loss-tokens",
                           "64")) == 1  # fmt: skip
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAILED")]
    for name, (_, why) in broken.items():
        assert [line for line in failed if line.startswith(f"FAILED {name}: load: ")], name
        assert any(line.startswith(f"FAILED {name}: ") and why in line for line in failed), name
    assert any(
        line.startswith(f"FAILED {seq_len.name}: held-out loss c4: ") and
        "training_config.yaml: data.seq_len is 'abc', not a positive whole number" in line
        for line in failed
    )  # fmt: skip
    rows = ResultsTable(out).rows
    assert {r["run"] for r in rows} == {*RUNS, seq_len.name}  # its tasks are evaluated
    assert all(isinstance(r["N"], float) and r["N"] == r["N"] for r in rows)


def test_refused_checkpoints_and_ids_fail_their_run_in_one_line(study, tmp_path, task_dir,
                                                                tokenizer, capsys, monkeypatch):  # fmt: skip
    """modeling_l2l refuses pickled weights, configs that do not match the weights, and ids
    outside the vocabulary: each is one FAILED line of its run, and the other runs are evaluated."""
    import torch
    from safetensors.torch import load_file

    pickled = make_run(study, "L2L_c4_N1.0e05_D1.1e06_C1.0e12", tokenizer)
    weights = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(weights, pickled / "pytorch_model.bin")
    mismatch = make_run(study, "L2L_c4_N1.0e05_D1.2e06_C1.0e12", tokenizer)
    config = json.loads((mismatch / "config.json").read_text())
    (mismatch / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    small = make_run(study, "L2L_c4_N1.0e05_D1.3e06_C1.0e12", tokenizer)
    real = runner.load_model

    def load(model, **kwargs):
        lm = real(model, **kwargs)
        if model == str(small):  # a model whose vocabulary the tokenizer's ids overrun
            lm.config.vocab_size = 50
        return lm

    monkeypatch.setattr(runner, "load_model", load)
    out = tmp_path / "r.jsonl"
    corpus = write_corpus(tmp_path / "c4.jsonl")
    assert main(quick_args(study, out, task_dir, "--losses", f"c4={corpus}", "--loss-tokens",
                           "64")) == 1  # fmt: skip
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAILED")]
    expected = [
        (pickled.name, "load", "has no safetensors weights"),
        (mismatch.name, "load", "the config does not match the weights"),
        (small.name, "held-out loss c4", "are outside the vocabulary (vocab_size=50"),
        (small.name, "task copa", "are outside the vocabulary (vocab_size=50"),
    ]
    for name, what, why in expected:
        assert any(
            line.startswith(f"FAILED {name}: {what}: ") and why in line for line in failed
        ), (name, what)
    assert len(failed) == len(expected)
    assert {r["run"] for r in ResultsTable(out).rows} == set(RUNS)
    monkeypatch.undo()
    assert main(quick_args(pickled, tmp_path / "one.jsonl", task_dir, flag="--model")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot load a causal LM from") and "safetensors" in err[-1]


def test_a_run_folder_given_as_study_is_an_error(tmp_path, task_dir, tokenizer, capsys):
    """A study holds run folders; a run folder holds final.json. Given as --study, a run folder
    used to evaluate nothing and exit 0 ("nothing evaluated")."""
    run = make_run(tmp_path / "study", RUNS[0], tokenizer)
    assert main(quick_args(run, tmp_path / "r.jsonl", task_dir)) == 2
    assert f"error: {run} is a run folder (it holds final.json), not a study: use --model" in (
        capsys.readouterr().err
    )


def test_the_own_corpus_is_read_with_the_runs_text_field(tmp_path, tokenizer, monkeypatch):
    """A run trained on the ``content`` field of a local JSONL corpus is scored on the held-out
    split of that field (training keys its shards by the field), not on a ``text`` default."""
    import evaluation.runner as runner

    corpus = tmp_path / "code.jsonl"
    corpus.write_text("".join(json.dumps({"content": f"def f{i}(): return {i}"}) + "\n"
                              for i in range(200)))
    run = make_run(tmp_path / "study", "L2L_code_N1.0e05_D2.0e06_C1.2e12", tokenizer,
                   corpus=corpus)
    config = yaml.safe_load((run / "training_config.yaml").read_text())
    config["data"]["text_field"] = "content"
    (run / "training_config.yaml").write_text(yaml.safe_dump(config))
    seen = []
    real = runner.held_out_windows

    def spy(source, **kwargs):
        seen.append((source, kwargs.get("text_field")))
        return real(source, **kwargs)

    monkeypatch.setattr(runner, "held_out_windows", spy)
    assert main(["--model", str(run), "--losses", "own", "--loss-tokens", "64",
                 "--out", str(tmp_path / "r.jsonl"), "--no-hub"]) == 0
    assert seen == [(str(corpus), "content")]
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert "val_loss" in {row["metric"] for row in rows}


def test_ctrl_c_mid_sweep_is_one_line_and_resumes(study, tmp_path, task_dir, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "c4.jsonl")
    out = tmp_path / "results.jsonl"
    calls = []

    def interrupted_on_second_task(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        yield from real(*args, **kwargs)

    real = runner.evaluate_task
    monkeypatch.setattr(runner, "evaluate_task", interrupted_on_second_task)
    assert main(sweep_args(study, out, task_dir, corpus)) == 130
    err = capsys.readouterr().err
    assert "interrupted: the rows computed so far are in" in err and "Traceback" not in err
    kept = len(ResultsTable(out).rows)
    assert kept >= 1
    monkeypatch.undo()
    assert main(sweep_args(study, out, task_dir, corpus)) == 0
    assert len(ResultsTable(out).rows) > kept


def test_a_study_shows_one_bar_not_one_per_model_and_metric(study, tmp_path, task_dir, capsys):
    corpus = write_corpus(tmp_path / "c4.jsonl")
    args = [a for a in sweep_args(study, tmp_path / "results.jsonl", task_dir, corpus)
            if a != "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "runs:" in err
    assert "Loading weights" not in err and "arc_easy" not in err
    from transformers.utils import logging as transformers_logging

    assert transformers_logging.is_progress_bar_enabled()  # put back as it was


def test_two_evaluations_never_append_to_one_table_at_once(study, tmp_path, task_dir, capsys):
    """A second evaluation into a table another one is writing would compute the same missing
    metrics and append them twice: it is refused with one line, the table untouched."""
    from evaluation.results import writing

    corpus = write_corpus(tmp_path / "c4.jsonl")
    out = tmp_path / "results.jsonl"
    out.write_text("")
    with writing(out):
        assert main(sweep_args(study, out, task_dir, corpus)) == 2
    err = capsys.readouterr().err
    assert f"error: another evaluation is writing {out}" in err and "another --out" in err
    assert out.read_text() == ""
    assert main(sweep_args(study, out, task_dir, corpus)) == 0  # once it is free
