"""Faults a careful user meets: a corpus replaced or edited under its cache, damaged checkpoints,
two trainers in one run folder, a paused run, broken inputs. Each used to train on the wrong
data, lose work or end in a traceback."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from safetensors import safe_open

from tests.training.conftest import REPO, tiny_config
from tests.training.test_trainer import assert_same_weights, weights
from training.__main__ import main as training_main
from training.checkpoint import list_checkpoints
from training.config import ConfigError
from training.corpora import CorpusError
from training.data import build_corpus, load_tokenizer
from training.run_lock import FileLock, LockHeldError, RunLock, RunLockedError
from training.trainer import train


def _write_corpus(path, tag: str, n: int = 400) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(
        json.dumps({"text": f"{tag} document {i}: " + " ".join(f"{tag}{(i * 7 + j) % 40}"
                                                                for j in range(8 + i % 13))})
        + "\n" for i in range(n)))
    return str(path)


def _build(corpus: str, tokenizer_dir: str, data_dir):
    return build_corpus(corpus, load_tokenizer(tokenizer_dir), tokenizer_name=tokenizer_dir,
                        data_dir=data_dir, seq_len=16, val_sequences=4, train_tokens=800,
                        progress=False)


# ------------------------------------------------------------------------- the corpus cache
def test_two_corpora_of_the_same_file_name_never_share_shards(tmp_path, tokenizer_dir):
    a = _build(_write_corpus(tmp_path / "a" / "train.jsonl", "alpha"), tokenizer_dir, tmp_path)
    b = _build(_write_corpus(tmp_path / "b" / "train.jsonl", "beta"), tokenizer_dir, tmp_path)
    assert a.root != b.root
    assert (a.validation() != b.validation()).any()
    assert b.fingerprint["files"][0]["path"] == str((tmp_path / "b" / "train.jsonl").resolve())


def test_an_edited_corpus_file_is_rebuilt_and_a_moved_one_reused(tmp_path, tokenizer_dir):
    path = tmp_path / "c" / "train.jsonl"
    first = _build(_write_corpus(path, "old"), tokenizer_dir, tmp_path / "data")
    stat = os.stat(path)
    _write_corpus(path, "new")  # edited in place, size and modification time restored
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    edited = _build(str(path), tokenizer_dir, tmp_path / "data")
    assert edited.root != first.root and (edited.validation() != first.validation()).any()
    moved = tmp_path / "elsewhere" / "train.jsonl"
    moved.parent.mkdir()
    os.replace(path, moved)  # the same bytes under another path: the same corpus
    assert _build(str(moved), tokenizer_dir, tmp_path / "data").root == edited.root


def test_a_resume_refuses_a_corpus_that_changed_since_the_run_started(tmp_path, tokenizer_dir):
    corpus = _write_corpus(tmp_path / "corpus" / "train.jsonl", "first")
    cfg = tiny_config(tokenizer_dir, str(tmp_path / "data"), tmp_path / "runs",
                      f"data.corpus={corpus}", "run.max_steps=4")
    train(cfg)
    record = json.loads((tmp_path / "runs" / "tiny" / "corpus.json").read_text())
    assert record["source_fingerprint"]["files"][0]["path"] == str(
        (tmp_path / "corpus" / "train.jsonl").resolve())
    _write_corpus(tmp_path / "corpus" / "train.jsonl", "second")
    resumed = cfg.with_overrides(["checkpoint.resume=true", "run.max_steps=null"])
    with pytest.raises(CorpusError, match=r"cannot resume tiny: its corpus .* changed since the "
                       r"run started \(.*train\.jsonl was edited\)"):
        train(resumed)
    _write_corpus(tmp_path / "corpus" / "train.jsonl", "first")  # restored: the run goes on
    assert train(resumed)["steps"] == 12


# ------------------------------------------------------------------------------ checkpoints
def _zero_tensor_bytes(path) -> None:
    """Overwrite every tensor's bytes with zeros, keeping the safetensors header intact."""
    with open(path, "rb") as handle:
        header = int.from_bytes(handle.read(8), "little")
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.seek(8 + header)
        handle.write(b"\0" * (size - 8 - header))
    with safe_open(str(path), "pt") as f:  # still a valid file: only a checksum can tell
        assert f.keys()


def test_a_checkpoint_damaged_in_place_is_moved_aside_and_the_previous_one_resumed(
        tmp_path, tokenizer_dir, data_dir, capsys):
    reference = tiny_config(tokenizer_dir, data_dir, tmp_path / "a")
    train(reference)
    cfg = tiny_config(tokenizer_dir, data_dir, tmp_path / "b", "run.max_steps=8")
    train(cfg)
    checkpoints = tmp_path / "b" / "tiny" / "checkpoints"
    assert [step for step, _ in list_checkpoints(checkpoints)] == [4, 8]
    _zero_tensor_bytes(checkpoints / "step_00000008" / "model.safetensors")
    final = train(cfg.with_overrides(["checkpoint.resume=true", "run.max_steps=null"]))
    out = capsys.readouterr().out
    assert "checkpoint step_00000008 is damaged (model.safetensors does not match its checksum" in out
    assert "resuming from step_00000004" in out
    assert (checkpoints / "damaged-step_00000008" / "model.safetensors").is_file()  # kept
    assert final["steps"] == 12
    assert_same_weights(weights(tmp_path / "a" / "tiny"), weights(tmp_path / "b" / "tiny"))


def test_every_checkpoint_damaged_is_one_clear_error_on_the_command_line(
        tmp_path, tokenizer_dir, data_dir, capsys):
    cfg = tiny_config(tokenizer_dir, data_dir, tmp_path, "run.max_steps=4")
    train(cfg)
    path = tmp_path / "tiny" / "checkpoints" / "step_00000004" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    args = ["--preset", "tiny-cpu", "--resume", *[f"{k}={v}" for k, v in _overrides(cfg)]]
    assert training_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint under") and "has 100 bytes" in err
    assert "Traceback" not in err


def _overrides(cfg):
    """The fields of a tiny config as dotted overrides of the tiny-cpu preset."""
    flat = {
        "data.tokenizer": cfg.data.tokenizer, "data.data_dir": cfg.data.data_dir,
        "model.vocab_size": cfg.model.vocab_size, "model.n_layers": cfg.model.n_layers,
        "data.seq_len": cfg.data.seq_len, "data.val_sequences": cfg.data.val_sequences,
        "batch.global_batch_size": cfg.batch.global_batch_size,
        "batch.micro_batch_size": cfg.batch.micro_batch_size, "run.tokens": cfg.run.tokens,
        "run.name": cfg.run.name, "run.output_dir": cfg.run.output_dir,
        "logging.trackers": "[]", "logging.progress_bar": "false",
        "checkpoint.every_steps": cfg.checkpoint.every_steps, "optim.lr": cfg.optim.lr,
        "run.max_steps": cfg.run.max_steps if cfg.run.max_steps is not None else "null",
    }
    return flat.items()


# ---------------------------------------------------------------------------- the run lock
def test_a_second_trainer_in_the_same_run_folder_is_refused(tmp_path, tokenizer_dir, data_dir):
    run_dir = tmp_path / "tiny"
    run_dir.mkdir()
    with RunLock(run_dir):  # another trainer holds the folder
        with pytest.raises(RunLockedError, match=rf"being trained by another process \(pid "
                           rf"{os.getpid()} on "):
            train(tiny_config(tokenizer_dir, data_dir, tmp_path))
        assert not (run_dir / "metrics.jsonl").exists()
    assert train(tiny_config(tokenizer_dir, data_dir, tmp_path))["steps"] == 12


def test_a_killed_trainer_never_blocks_the_resume(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from training.run_lock import RunLock; "
         f"lock = RunLock({str(run_dir)!r}).acquire(); print('locked', flush=True); "
         "time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(run_dir).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunLock(run_dir).acquire().release()


def test_a_file_lock_refuses_at_once_or_waits_for_its_holder(tmp_path):
    """FileLock is the one lock of the project: RunLock (a trainer), the shard build (waits) and
    the release build (refuses) are made of it."""
    path = tmp_path / "corpus.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from training.run_lock import FileLock; "
         f"lock = FileLock({str(path)!r}).acquire(); print('locked', flush=True); "
         "sys.stdin.readline(); lock.release(); time.sleep(60)"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError, match=rf"corpus.lock is held by another process "
                           rf"\(pid {holder.pid} on "):
            FileLock(path).acquire()
        started = time.monotonic()
        threading.Timer(0.5, lambda: (holder.stdin.write("\n"), holder.stdin.flush())).start()
        with FileLock(path, wait=True):  # a second build waits for the first, then goes on
            assert time.monotonic() - started >= 0.4
            assert f'"pid": {os.getpid()}' in path.read_text()  # now it names this process
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# --------------------------------------------------------------------- a pause is not the end
def test_max_steps_pauses_and_a_larger_value_continues_the_same_schedule(
        tmp_path, tokenizer_dir, data_dir, capsys):
    train(tiny_config(tokenizer_dir, data_dir, tmp_path / "a"))
    paused_cfg = tiny_config(tokenizer_dir, data_dir, tmp_path / "b", "run.max_steps=5",
                             "checkpoint.every_steps=0")  # a pause checkpoints even so
    paused = train(paused_cfg)
    assert paused == {"run": "tiny", "paused": True, "steps": 5, "total_steps": 12, "tokens": 1280}
    run_dir = tmp_path / "b" / "tiny"
    assert not (run_dir / "final.json").exists()
    assert "paused at step 5 of 12" in capsys.readouterr().out
    resume = paused_cfg.with_overrides(["checkpoint.resume=true"])
    assert train(resume.with_overrides(["run.max_steps=5"]))["paused"]  # the same pause again
    assert train(resume.with_overrides(["run.max_steps=9"]))["steps"] == 9
    final = train(resume.with_overrides(["run.max_steps=null"]))
    assert final["steps"] == 12 and (run_dir / "final.json").is_file()
    assert_same_weights(weights(tmp_path / "a" / "tiny"), weights(run_dir))
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [*range(1, 13), 12]


# ------------------------------------------------------------- bad input, one line each
def test_a_yaml_syntax_error_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("run:\n  tokens: 1e6\n model: [\n")
    assert training_main(["--print-config", "--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken} is not valid YAML: ") and "line 3" in err
    assert err.count("\n") == 1


def test_an_output_dir_that_is_a_file_is_a_config_error(tmp_path, tokenizer_dir, data_dir):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(ConfigError, match=rf"run.output_dir: {notes} is a file, not a folder"):
        train(tiny_config(tokenizer_dir, data_dir, notes))
    with pytest.raises(ConfigError, match="is a file"):
        train(tiny_config(tokenizer_dir, data_dir, notes / "runs"))
    assert notes.read_text() == "my notes"


@pytest.mark.parametrize("damage", ["garbled", "truncated"])
def test_a_corrupt_gzip_corpus_is_named(tmp_path, tokenizer_dir, damage):
    data = gzip.compress(b"".join(json.dumps({"text": f"doc {i} " * 20}).encode() + b"\n"
                                  for i in range(500)))
    path = tmp_path / "corpus.jsonl.gz"
    path.write_bytes(data[:40] + b"\x00garbage" * 40 + data[-20:] if damage == "garbled"
                     else data[: len(data) // 2])
    kind = "zlib.error" if damage == "garbled" else "EOFError"
    with pytest.raises(CorpusError, match=rf"cannot read json \[{path}\]: {kind}"):
        _build(str(path), tokenizer_dir, tmp_path / "data")


def test_one_long_text_file_says_how_to_split_it(tmp_path, tokenizer_dir):
    book = tmp_path / "book.txt"
    book.write_text("\n\n".join(f"Paragraph {i}. " + "words and more words " * 30
                                for i in range(400)))
    with pytest.raises(CorpusError, match=r"the validation split took all of its 1 document\(s\) "
                       r"and left none for training.*a \.txt file is one document: split the text"):
        _build(str(book), tokenizer_dir, tmp_path / "data")



def test_a_damaged_index_or_corpus_record_is_named(tmp_path, tokenizer_dir, data_dir):
    corpus = _write_corpus(tmp_path / "corpus" / "train.jsonl", "text")
    built = _build(corpus, tokenizer_dir, tmp_path / "data")
    (built.root / "index.json").write_text('{"format": 2, "val": ')
    with pytest.raises(CorpusError, match=rf"built corpus {built.root} is damaged: its index.json "
                       "cannot be read"):
        _build(corpus, tokenizer_dir, tmp_path / "data")
    cfg = tiny_config(tokenizer_dir, data_dir, tmp_path / "runs", "run.max_steps=4")
    train(cfg)
    (tmp_path / "runs" / "tiny" / "corpus.json").write_text("[1, 2]")
    with pytest.raises(CorpusError, match="corpus.json is damaged"):
        train(cfg.with_overrides(["checkpoint.resume=true"]))
