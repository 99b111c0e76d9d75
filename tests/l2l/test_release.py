"""l2l release: a tiny study becomes a Hub repository laid out like the paper's, pushed to the
local Hub server (tests/local_hub.py), loaded back without the package, resumed after a failure."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi, constants, metadata_load, snapshot_download
from huggingface_hub.repocard_data import model_index_to_eval_results

from analysis import fit_law, load_law
from l2l import release
from l2l.release import build_release, main, push_release
from tests.local_hub import LocalHub
from tests.modeling.test_remote_code_and_checkpointing import BLOCK_THE_PACKAGE
from training.run_lock import FileLock

REPO = "l2l-test/tiny-study"
TOKEN = "hf_local_test_token_never_printed"
DATASET, N = "c4", 61760  # N of L2LConfig.from_depth(1, vocab_size=96)
RUN_A = f"L2L_{DATASET}_N6.2e04_D1.0e06_C3.7e11"  # saved as the trainer does, with a tokenizer
RUN_B = f"L2L_{DATASET}_N6.2e04_D2.0e06_C7.4e11"  # no code files, config.json without auto_map
PAUSED = f"L2L_{DATASET}_N6.2e04_D4.0e06_C1.5e12"  # checkpoints, no final.json
NEVER = f"L2L_{DATASET}_N6.2e04_D8.0e06_C3.0e12"  # planned, no folder
LAW = "chinchilla-x"
RUN_FILES_A = {
    "README.md", "config.json", "configuration_l2l.py", "modeling_l2l.py", "model.safetensors",
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "training_config.yaml",
    "metrics.jsonl", "final.json",
}  # fmt: skip
RUN_FILES_B = RUN_FILES_A - {"tokenizer.json", "tokenizer_config.json"}
TOP_FILES = {
    "README.md", "results.jsonl", "predictions.csv", "report.md", "figures/fit.png",
    "configuration_l2l.py", "modeling_l2l.py", f"laws/{LAW}/config.json",
    f"laws/{LAW}/README.md",
}  # fmt: skip
NEVER_COPIED = ("checkpoints", "logs", ".lock", "corpus.json")


def _finished_run(study: Path, name: str, seed: int, d: int, loss: float) -> None:
    import torch

    from modeling_l2l import L2LConfig, L2LForCausalLM

    torch.manual_seed(seed)
    folder = study / name
    L2LForCausalLM(L2LConfig.from_depth(1, vocab_size=96, max_position_embeddings=32)).save_pretrained(
        folder
    )
    final = {"run": name, "dataset": DATASET, "N": N, "D": d, "C": 6.0 * N * d, "steps": 7,
             "tokens": d, "final_val_loss": loss}  # fmt: skip
    (folder / "final.json").write_text(json.dumps(final))
    (folder / "training_config.yaml").write_text(f"run:\n  name: {name}\n  tokens: {d}\n")
    (folder / "metrics.jsonl").write_text('{"step": 7, "loss": 4.9}\n{"step": 7, "val_loss": 4.6}\n')
    # what a run folder holds besides the release's files: none of it may be released
    (folder / "corpus.json").write_text('{"source": "/home/someone/private/corpus"}')
    (folder / ".lock").write_text('{"pid": 1}')
    (folder / "checkpoints" / "step_7").mkdir(parents=True)
    (folder / "checkpoints" / "step_7" / "model.safetensors").write_bytes(b"old weights")
    (folder / "logs").mkdir()
    (folder / "logs" / "events.out").write_text("tensorboard")


def _tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "</s>": 1, **{chr(97 + i): i + 2 for i in range(26)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")
    tokenizer.save_pretrained(folder)


def _result_rows(run: str, d: int, offset: float) -> list[dict]:
    columns = {"run": run, "dataset": DATASET, "N": N, "D": d, "C": 6.0 * N * d, "n_windowed": None,
               "limit": None, "model": f"/home/someone/studies/tiny/{run}",
               "evaluated_at": "2025-01-01T00:00:00+00:00"}  # fmt: skip
    return [
        {**columns, "metric": "eval/c4_val/CrossEntropyLoss", "value": 4.5 - offset, "n": 4096,
         "source": "/home/someone/data/c4"},
        {**columns, "metric": "val_loss", "value": 4.5 - offset, "n": 4096, "source": "c4"},
        {**columns, "metric": "eval/downstream/hellaswag_test_acc", "value": 0.25 + offset,
         "n": 40, "source": "Rowan/hellaswag"},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def study_template(tmp_path_factory) -> Path:
    """A study folder as the l2l pipeline leaves it: a plan of four runs (two finished, one
    paused, one never started), the results table, a fitted law, predictions and a report."""
    from training.study import COLUMNS

    study = tmp_path_factory.mktemp("template") / "tiny"
    study.mkdir()
    _finished_run(study, RUN_A, seed=0, d=1_000_000, loss=4.61)
    _tokenizer(study / RUN_A)
    _finished_run(study, RUN_B, seed=1, d=2_000_000, loss=4.42)
    # a folder saved by other code: no code files, no auto_map; the release adds both
    for name in ("configuration_l2l.py", "modeling_l2l.py"):
        (study / RUN_B / name).unlink()
    config = json.loads((study / RUN_B / "config.json").read_text())
    del config["auto_map"]
    (study / RUN_B / "config.json").write_text(json.dumps(config, indent=2))
    (study / PAUSED / "checkpoints" / "step_3").mkdir(parents=True)

    with open(study / "runs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i, run in enumerate((RUN_A, RUN_B, PAUSED, NEVER)):
            d = 1_000_000 * 2**i
            writer.writerow([run, DATASET, N, d, 6.0 * N * d, 1, 64, 7, d / N, 4, 32, "tiny",
                             "cosine", "", 0])
    (study / "study.json").write_text(json.dumps({"preset": None, "config": None, "overrides": []}))
    record = {"preset": "tiny", "targets": [RUN_B], "corpora": [DATASET]}
    (study / "l2l_study.json").write_text(json.dumps(record))
    rows = _result_rows(RUN_A, 1_000_000, 0.0) + _result_rows(RUN_B, 2_000_000, 0.1)
    (study / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    n = np.array([1e6, 2e6, 4e6, 8e6] * 3)
    d = np.repeat([2e7, 8e7, 3.2e8], 4)
    loss = 1.7 + 400 / n**0.34 + 410 / d**0.28
    fit_law("chinchilla", {"N": n, "D": d}, loss).save_pretrained(study / "laws" / LAW)
    (study / "laws" / "scratch").mkdir()  # not a law: left out, named in the card
    (study / "laws" / "scratch" / "notes.txt").write_text("try kaplan next")
    (study / "predictions.csv").write_text(f"run,predicted\n{RUN_B},4.40\n")
    (study / "report.md").write_text("# Report\n\n![fit](figures/fit.png)\n")
    (study / "figures").mkdir()
    (study / "figures" / "fit.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return study


@pytest.fixture
def study(tmp_path, study_template) -> Path:
    folder = tmp_path / "tiny"
    shutil.copytree(study_template, folder)
    return folder


def _snapshot(folder: Path, skip: str = "release") -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (but ``skip``/): content hash and mtime."""
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                           p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).parts[0] != skip
        and not p.name.startswith(f".{skip}.")
    }  # fmt: skip


def _release_files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != release.MANIFEST_NAME
    }


@pytest.fixture
def hub(monkeypatch):
    """The local Hub; the default endpoint points at a closed port, so a call that ignored the
    endpoint fails instead of reaching out."""
    dead = "http://127.0.0.1:9"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with LocalHub() as server:
        yield server


def _commits(hub: LocalHub) -> list[str]:
    return [r.path for r in hub.requests if r.method == "POST" and "/commit/" in r.path]


# ---------------------------------------------------------------------------- the folder


def test_dry_run_writes_the_layout_and_model_cards(study, capsys):
    before = _snapshot(study)
    assert main([str(study), "--dry-run"]) == 0
    out = capsys.readouterr().out
    folder = study / "release"
    assert out.splitlines()[0] == str(folder)
    assert f"{RUN_A}/" in out and f"{RUN_B}/" in out and f"laws/: {LAW}" in out
    assert f"{PAUSED}: unfinished: checkpoints" in out and f"{NEVER}: not started" in out

    files = _release_files(folder)
    assert files == TOP_FILES | {f"{RUN_A}/{n}" for n in RUN_FILES_A} | {
        f"{RUN_B}/{n}" for n in RUN_FILES_B
    }
    assert not any(part in NEVER_COPIED for f in files for part in f.split("/"))
    assert _snapshot(study) == before  # the study itself is untouched
    # copied byte for byte, except config.json where auto_map was missing
    for name in ("model.safetensors", "final.json", "metrics.jsonl", "training_config.yaml"):
        assert (folder / RUN_B / name).read_bytes() == (study / RUN_B / name).read_bytes()
    assert (folder / RUN_A / "config.json").read_bytes() == (study / RUN_A / "config.json").read_bytes()
    from modeling_l2l.configuration_l2l import AUTO_MAP

    config_b = json.loads((folder / RUN_B / "config.json").read_text())
    assert config_b["auto_map"] == AUTO_MAP
    assert {k: v for k, v in config_b.items() if k != "auto_map"} == json.loads(
        (study / RUN_B / "config.json").read_text()
    )
    package = Path(sys.modules["modeling_l2l"].__file__).parent
    for name in ("configuration_l2l.py", "modeling_l2l.py"):
        assert (folder / RUN_B / name).read_bytes() == (package / name).read_bytes()
        assert (folder / name).read_bytes() == (study / RUN_A / name).read_bytes()

    # the runs' cards: front matter, model-index = that run's rows of the results table
    rows = [json.loads(line) for line in (study / "results.jsonl").read_text().splitlines()]
    for run, loss in ((RUN_A, "4.6100"), (RUN_B, "4.4200")):
        meta = metadata_load(folder / run / "README.md")
        assert meta["library_name"] == "transformers"
        assert {"l2l", "scaling-laws"} <= set(meta["tags"])
        name, results = model_index_to_eval_results(meta["model-index"])
        assert name == run
        assert sorted((r.metric_type, r.metric_value) for r in results) == sorted(
            (row["metric"], row["value"]) for row in rows if row["run"] == run
        )
        # the source when it is a Hub id or a name, the metric's group for a local path
        assert {r.dataset_type for r in results} == {"Rowan/hellaswag", "c4", "c4_val"}
        assert not any("/home/someone" in str(r) for r in results)  # no local path in the card
        body = (folder / run / "README.md").read_text()
        assert f"| final validation loss | {loss} |" in body
        assert f"| training corpus | `{DATASET}` |" in body
        assert (
            f'AutoModelForCausalLM.from_pretrained("ORG/NAME", subfolder="{run}", '
            "trust_remote_code=True)" in body
        )
    assert "AutoTokenizer.from_pretrained" in (folder / RUN_A / "README.md").read_text()
    assert "target run" in (folder / RUN_B / "README.md").read_text()

    # the repository's card: every run, what was left out and why
    card = (folder / "README.md").read_text()
    meta = metadata_load(folder / "README.md")
    assert meta["library_name"] == "transformers" and {"l2l", "scaling-laws"} <= set(meta["tags"])
    assert f"| `{RUN_A}` | {DATASET} | 6.18e+04 | 1e+06 | 3.71e+11 | 4.6100 |" in card
    assert f"| `{RUN_B}` (target) |" in card
    assert f"| `{PAUSED}` | unfinished: checkpoints but no final.json" in card
    assert f"| `{NEVER}` | not started (no run folder) |" in card
    assert f"| `{LAW}` | `chinchilla` |" in card
    assert "`scratch`: " in card  # the folder under laws/ that is not a law


def test_results_table_and_laws_load_from_the_release(study, tmp_path, caplog):
    import datasets

    expected = [json.loads(line) for line in (study / "results.jsonl").read_text().splitlines()]
    with open(study / "results.jsonl", "a") as handle:  # a crash mid-append tore the last row
        handle.write('{"run": "L2L_c4_N6.2e04_D1.0e06_C3.7e11", "metric": "eval/dow')
    folder = build_release(study)
    assert "results.jsonl:7: leaving out a torn last line" in caplog.text
    table = datasets.load_dataset(
        "json", data_files=str(folder / "results.jsonl"), split="train", cache_dir=str(tmp_path / "ds")
    )
    assert table.num_rows == len(expected) == 6
    assert table["run"] == [r["run"] for r in expected]
    assert table["metric"] == [r["metric"] for r in expected]
    assert table["value"] == pytest.approx([r["value"] for r in expected])

    original = load_law(study / "laws" / LAW)
    law = load_law(folder / "laws" / LAW)
    assert law.form == "chinchilla" and law.params == original.params
    assert not (folder / "laws" / "scratch").exists()


def test_release_folder_loads_without_the_package_and_gives_the_same_logits(study, tmp_path):
    folder = build_release(study)
    loads = [{"model": str(folder / run), "expected": _expected_logits(study / run, tmp_path)}
             for run in (RUN_A, RUN_B)]  # fmt: skip
    result = _load_without_the_package(loads, tmp_path, {"HF_HUB_OFFLINE": "1"})
    assert result.stdout.count("SAME_LOGITS") == 2, result.stdout + result.stderr


def test_an_interrupted_build_keeps_the_earlier_release(study, monkeypatch):
    first = build_release(study)
    manifest = (first / release.MANIFEST_NAME).read_bytes()
    (study / "report.md").write_text("# Report, second version\n")

    def broken(self, name, source):  # the disk fills up half way through the runs
        if name.startswith(RUN_B):
            raise OSError(28, "No space left on device")
        return copy(self, name, source)

    copy = release._Writer.copy
    monkeypatch.setattr(release._Writer, "copy", broken)
    with pytest.raises(OSError, match="No space left"):
        build_release(study)
    assert (first / release.MANIFEST_NAME).read_bytes() == manifest
    assert (first / "report.md").read_text() == "# Report\n\n![fit](figures/fit.png)\n"
    assert not list(study.glob(".release.building-*"))
    monkeypatch.undo()

    (study / ".release.building-killed").mkdir()  # what a build killed with SIGKILL leaves
    assert build_release(study) == first
    assert (first / "report.md").read_text() == "# Report, second version\n"
    assert not list(study.glob(".release.building-*")) and not list(study.glob(".release.old-*"))


def test_the_results_table_is_read_by_its_one_reader(study, capsys):
    """The same row twice (appended twice) is released once in the run's card; two values of one
    run and metric stop the build with both named (analysis.results_table's rules)."""
    line = (study / "results.jsonl").read_text().splitlines()[0]
    row = json.loads(line)
    with open(study / "results.jsonl", "a") as handle:
        handle.write(line + "\n")
    card = (build_release(study) / row["run"] / "README.md").read_text()
    assert card.count(f"| `{row['metric']}` |") == 1
    with open(study / "results.jsonl", "a") as handle:
        handle.write(json.dumps({**row, "value": row["value"] + 1}) + "\n")
    assert main([str(study), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"run {row['run']!r}, metric {row['metric']!r}: {row['value']!r} and " in err
    assert "delete the row that is wrong" in err


def test_one_build_at_a_time(study):
    with FileLock(study / ".release.lock"):  # another process is building it
        with pytest.raises(RuntimeError, match=r"another process is building the release .*"
                                               r"release \(pid \d+ on .*; wait for it to finish"):
            build_release(study)
    assert not (study / "release").exists()
    assert build_release(study) == study / "release"


# ---------------------------------------------------------------------------- the Hub


@pytest.mark.parametrize("lfs", [False, True], ids=["regular", "lfs"])
# huggingface_hub's LFS PUT passes a file object as httpx's deprecated ``data=``
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
def test_push_then_push_again_uploads_nothing_new(study, monkeypatch, capfd, lfs):
    if lfs:  # with hf_xet installed the client sends LFS files over Xet, which LocalHub lacks
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with LocalHub(lfs=lfs) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)  # what HF_ENDPOINT sets
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        assert main([str(study), "--repo-id", REPO]) == 0  # the command line, token from env
        out, err = capfd.readouterr()
        assert TOKEN not in out + err
        assert f"{hub.endpoint}/{REPO} (main): uploaded 2 runs, skipped 0" in out
        assert f"left out {NEVER}: not started" in out
        assert len(_commits(hub)) == 3  # one per run, then the top level
        folder = study / "release"
        stored = hub.files(REPO)
        assert set(stored) == _release_files(folder)
        assert all(stored[name] == (folder / name).read_bytes() for name in stored)
        if lfs:
            tree = HfApi(endpoint=hub.endpoint).list_repo_tree(REPO, recursive=True)
            assert {f.path for f in tree if getattr(f, "lfs", None)} == {  # the binary files
                f"{RUN_A}/model.safetensors", f"{RUN_B}/model.safetensors", "figures/fit.png"
            }
        head, requests = hub.head(REPO), len(hub.requests)
        stamp = (folder / release.MANIFEST_NAME).stat().st_mtime_ns

        summary = push_release(study, REPO, token=TOKEN, endpoint=hub.endpoint, progress=False)
        assert summary["uploaded"] == [] and summary["skipped"] == [RUN_A, RUN_B]
        assert summary["top_level"] == "skipped" and summary["commits"] == []
        assert summary["left_out"].keys() == {PAUSED, NEVER}
        assert hub.head(REPO) == head
        later = hub.requests[requests:]
        assert not any(r.method == "PUT" or "/commit/" in r.path or "/preupload/" in r.path
                       for r in later)  # fmt: skip
        # the release folder was up to date: reused, not rebuilt
        assert (folder / release.MANIFEST_NAME).stat().st_mtime_ns == stamp

        # a new result of RUN_A changes its card, the table and the repository's card (which
        # counts the rows): only those are sent
        row = {**_result_rows(RUN_A, 1_000_000, 0.0)[0], "metric": "eval/c4_val/BitsPerByte",
               "value": 1.25}  # fmt: skip
        with open(study / "results.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        summary = push_release(study, REPO, token=TOKEN, endpoint=hub.endpoint, progress=False)
        assert summary["uploaded"] == [RUN_A] and summary["skipped"] == [RUN_B]
        assert summary["top_level"] == "uploaded"
        changed = {p for p, data in hub.files(REPO).items() if stored.get(p) != data}
        assert changed == {f"{RUN_A}/README.md", "results.jsonl", "README.md"}
        assert "7 tidy rows" in hub.files(REPO)["README.md"].decode()
        meta = metadata_load(folder / RUN_A / "README.md")
        assert ("eval/c4_val/BitsPerByte", 1.25) in {
            (r.metric_type, r.metric_value) for r in model_index_to_eval_results(meta["model-index"])[1]
        }


def _rate_limited():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", f"http://127.0.0.1/api/models/{REPO}/commit/main")
    message = "You have exceeded the rate limit for repository commits (128 per hour)."
    return HfHubHTTPError(f"429 Client Error: {message}", response=httpx2.Response(429, request=request))


@pytest.mark.parametrize(
    "failure, raised, match",
    [
        (lambda: ConnectionError("connection reset by peer"), ConnectionError, "reset"),
        # the Hub's commit rate limit: said so, with what was done and that a rerun resumes
        (_rate_limited, RuntimeError, r"too many requests.*rate limit.*committed 1 run\(s\), "
         "and running it again later uploads the rest"),
    ],
    ids=["connection", "rate-limit"],
)
def test_an_interrupted_push_uploads_only_the_missing_run_when_run_again(
    study, hub, monkeypatch, failure, raised, match
):
    create_commit = HfApi.create_commit

    def failing(self, repo_id, operations, *, commit_message, **kwargs):
        if RUN_B in commit_message:  # the push breaks off at the second run
            raise failure()
        return create_commit(self, repo_id, operations, commit_message=commit_message, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", failing)
    with pytest.raises(raised, match=match):
        push_release(study, REPO, token=TOKEN, endpoint=hub.endpoint, progress=False)
    partial = hub.files(REPO)
    assert {p.split("/")[0] for p in partial} == {RUN_A, "configuration_l2l.py", "modeling_l2l.py"}
    assert len(_commits(hub)) == 1
    monkeypatch.setattr(HfApi, "create_commit", create_commit)

    summary = push_release(study, REPO, token=TOKEN, endpoint=hub.endpoint, progress=False)
    assert summary["uploaded"] == [RUN_B] and summary["skipped"] == [RUN_A]
    assert summary["top_level"] == "uploaded" and len(summary["commits"]) == 2
    files = hub.files(REPO)
    assert {p for p in files if p not in partial} == {
        f"{RUN_B}/{n}" for n in RUN_FILES_B
    } | (TOP_FILES - {"configuration_l2l.py", "modeling_l2l.py"})
    assert all(files[p] == data for p, data in partial.items())  # RUN_A was not sent again
    assert set(files) == _release_files(study / "release")


def test_pushed_release_loads_from_the_hub_without_the_package(study, hub, tmp_path):
    summary = push_release(study, REPO, token=TOKEN, endpoint=hub.endpoint, progress=False)
    assert summary["uploaded"] == [RUN_A, RUN_B]
    assert summary["url"] == f"{hub.endpoint}/{REPO}"
    card = hub.files(REPO)[f"{RUN_A}/README.md"].decode()
    assert f'from_pretrained("{REPO}", subfolder="{RUN_A}", trust_remote_code=True)' in card

    loads = [{"model": REPO, "subfolder": run, "expected": _expected_logits(study / run, tmp_path)}
             for run in (RUN_A, RUN_B)]  # fmt: skip
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
    result = _load_without_the_package(loads, tmp_path, env)
    assert result.stdout.count("SAME_LOGITS") == 2, result.stdout + result.stderr
    served = set(hub.downloaded(REPO))
    assert {f"{RUN_A}/model.safetensors", "modeling_l2l.py", "configuration_l2l.py"} <= served

    # the laws: analysis.load_law reads folders (no subfolder of a repository): a snapshot's
    root = snapshot_download(REPO, allow_patterns=["laws/*"], cache_dir=tmp_path / "hf",
                             endpoint=hub.endpoint, token=False)  # fmt: skip
    law = load_law(Path(root) / "laws" / LAW)
    assert law.params == load_law(study / "laws" / LAW).params


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("repo_id", ["tiny-study", "a/b/c", "my org/study", "org/", "org/na--me"])
def test_a_bad_repo_id_is_refused_before_any_work(study, repo_id):
    with pytest.raises(ValueError, match="invalid repo id"):
        push_release(study, repo_id, token=TOKEN, endpoint="http://127.0.0.1:9")
    assert not (study / "release").exists()


def test_no_token_says_how_to_log_in_before_any_work(study, tmp_path, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(ValueError, match="no Hugging Face token.*hf auth login.*HF_TOKEN"):
        push_release(study, REPO, endpoint="http://127.0.0.1:9")
    assert not (study / "release").exists()


def test_bad_studies_are_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_release(tmp_path / "absent")
    stray = tmp_path / "notes"
    stray.mkdir()
    (stray / "todo.txt").write_text("train something")
    with pytest.raises(ValueError, match="not a study folder"):
        build_release(stray)
    with pytest.raises(ValueError, match="not a study folder"):
        push_release(stray, REPO, token=TOKEN, endpoint="http://127.0.0.1:9")
    assert main([str(stray)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {stray} is not a study folder")
    assert main([str(stray), "--repo-id", "no-owner"]) == 2
    assert "error: invalid repo id 'no-owner'" in capsys.readouterr().err


def test_a_study_without_a_finished_run_writes_nothing(study):
    for run in (RUN_A, RUN_B):
        (study / run / "final.json").unlink()
    before = sorted(p.relative_to(study) for p in study.rglob("*"))
    with pytest.raises(ValueError, match=f"(?s)study {study} has no finished run.*{PAUSED}: unfinished"):
        build_release(study)
    with pytest.raises(ValueError, match="has no finished run"):
        push_release(study, REPO, token=TOKEN, endpoint="http://127.0.0.1:9")
    assert sorted(p.relative_to(study) for p in study.rglob("*")) == before


def test_out_never_replaces_a_folder_that_is_not_a_release(study, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="not an l2l release"):
        build_release(study, precious)
    with pytest.raises(FileExistsError, match="not an l2l release"):
        build_release(study, study / RUN_A)  # nor a run folder, nor the study itself
    with pytest.raises(FileExistsError, match="not an l2l release"):
        build_release(study, study)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert [p.name for p in precious.iterdir()] == ["thesis.tex"]
    assert build_release(study, tmp_path / "elsewhere" / "rel") == tmp_path / "elsewhere" / "rel"


def test_the_command_line_imports_nothing_heavy():
    code = textwrap.dedent(
        """
        import sys
        from l2l.release import build_parser
        args = build_parser().parse_args(["STUDY", "--repo-id", "o/n", "--private"])
        assert args.private and args.repo_id == "o/n" and not args.dry_run
        heavy = ("torch", "transformers", "huggingface_hub", "datasets", "numpy", "scipy")
        # analysis.lazy (the packages' lazy names, stdlib only) loads; nothing of the fitting
        analysis = {m for m in sys.modules if m.startswith("analysis")} - {"analysis", "analysis.lazy"}
        print(sorted(m for m in heavy if m in sys.modules) + sorted(analysis))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    help_text = subprocess.run([sys.executable, "-m", "l2l.release", "--help"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)  # fmt: skip
    assert help_text.returncode == 0 and help_text.stdout.startswith("usage: l2l release")


# ---------------------------------------------------------------------------- helpers

# Runs in a fresh interpreter that cannot import modeling_l2l (the package is installed editable,
# so besides -I a meta-path finder refuses the name), as a user of the Hub repository would.
LOAD_SCRIPT = BLOCK_THE_PACKAGE + textwrap.dedent(
    """
    import json, sys

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    for load in json.loads(sys.argv[1]):
        kwargs = {"subfolder": load["subfolder"]} if "subfolder" in load else {}
        lm = AutoModelForCausalLM.from_pretrained(load["model"], trust_remote_code=True, **kwargs)
        assert type(lm).__module__.startswith("transformers_modules"), type(lm).__module__
        expected = load_file(load["expected"])
        with torch.no_grad():
            logits = lm.eval()(expected["input_ids"]).logits
        torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=0)
        print("SAME_LOGITS", load["model"], load.get("subfolder"))
    """
)


def _expected_logits(run_folder: Path, tmp_path: Path) -> str:
    """The logits of the original run folder (loaded here, with the package) on fixed ids."""
    import torch
    from safetensors.torch import save_file

    from modeling_l2l import L2LForCausalLM

    model = L2LForCausalLM.from_pretrained(run_folder).eval()
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(ids).logits.contiguous()
    path = tmp_path / f"{run_folder.name}.expected.safetensors"
    save_file({"input_ids": ids, "logits": logits}, path)
    return str(path)


def _load_without_the_package(loads: list[dict], tmp_path: Path, extra_env: dict):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONSTARTUP"} and not key.startswith("HF_")
    }
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1", **extra_env)
    script = tmp_path / "load_release.py"
    script.write_text(LOAD_SCRIPT)
    return subprocess.run(
        [sys.executable, "-I", str(script), json.dumps(loads)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_hub_that_never_answers_or_refuses_is_one_line_not_a_hang(study, monkeypatch, capsys):
    """A server that accepts the connection and never answers: the push stops within its
    timeout; a closed port: one line, not a transport traceback."""
    import socket
    import threading
    import time

    from l2l.release import push

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept_and_ignore():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_ignore, daemon=True)
    thread.start()
    monkeypatch.setattr(push, "HUB_TIMEOUT_S", 1.5)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    try:
        silent = f"http://127.0.0.1:{listener.getsockname()[1]}"
        monkeypatch.setattr(constants, "ENDPOINT", silent)
        start = time.monotonic()
        assert main([str(study), "--repo-id", REPO]) == 2
        assert time.monotonic() - start < 60
        err = capsys.readouterr().err
        assert f"error: cannot reach the Hub at {silent}" in err and "Traceback" not in err
        assert "run the same command again" in err
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert main([str(study), "--repo-id", REPO]) == 2
    err = capsys.readouterr().err
    assert "error: cannot reach the Hub at http://127.0.0.1:9 (ConnectError" in err
    assert TOKEN not in err


def test_a_weight_file_damaged_after_training_is_not_released(study, capsys):
    """final.json records the model's files with their checksums; a model.safetensors cut in
    half since is named and left out, never shipped (or pushed)."""
    from training.checkpoint import file_digests

    folder = study / RUN_A
    final = json.loads((folder / "final.json").read_text())
    final["files"] = file_digests(folder, ["model.safetensors", "config.json"])
    (folder / "final.json").write_text(json.dumps(final))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main([str(study), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"    {RUN_A}: model.safetensors has" in out and "train it again" in out
    assert not (study / "release" / RUN_A).exists() and (study / "release" / RUN_B).is_dir()
