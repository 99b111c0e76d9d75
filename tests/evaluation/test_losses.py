"""Held-out cross-entropy and bits per byte against a direct computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.losses import (
    HeldOutDataError,
    corpus_key,
    held_out_loss,
    held_out_windows,
    loss_metric_names,
    token_byte_lengths,
)


def test_loss_and_bpb_equal_a_direct_computation(model, tokenizer):
    docs = [
        " ".join(["the cat sat on the mat", "water moves rock"][i % 2] for _ in range(i + 3))
        for i in range(9)
    ]
    stream = [
        t
        for d in docs
        for t in tokenizer.encode(d, add_special_tokens=False) + [tokenizer.eos_token_id]
    ]
    windows = np.array(stream[: 5 * 40]).reshape(5, 40)
    got = held_out_loss(
        model,
        windows,
        byte_lengths=token_byte_lengths(tokenizer),
        max_batch_tokens=80,
        progress=False,
    )
    nats, n_bytes = 0.0, 0
    for row in windows:  # one window at a time, no batching
        ids = torch.tensor(row[None])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].double()
        nats += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        # ASCII text: every token decodes on its own; EOS stands for no text
        n_bytes += sum(len(tokenizer.decode([t])) for t in row[1:] if t != tokenizer.eos_token_id)
    assert got.n_scored == 5 * 39 and got.n_tokens == 200 and got.seq_len == 40
    assert got.ce == pytest.approx(nats / 195, rel=1e-5)
    assert got.bpb == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)


def test_byte_lengths_of_a_byte_level_vocabulary_are_exact(tokenizer):
    lengths = token_byte_lengths(tokenizer)
    text = "the café sat on the mat — naïve 🐈 water"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert lengths[ids].sum() == len(text.encode("utf-8"))
    assert lengths[tokenizer.eos_token_id] == 0


def test_byte_lengths_of_a_sentencepiece_vocabulary():
    vocab = {"<s>": 0, "</s>": 1, "▁the": 2, "<0x0A>": 3, "é": 4, "cat": 5}
    sp = type("SP", (), {"get_vocab": lambda self: vocab, "all_special_ids": [0, 1],
                         "__len__": lambda self: 6})()  # fmt: skip
    assert token_byte_lengths(sp).tolist() == [0, 0, 4, 1, 2, 3]


def test_metric_names_follow_the_sweep_columns():
    assert (
        loss_metric_names("fineweb-edu-100b")["ce"] == "eval/fineweb_edu_100b_val/CrossEntropyLoss"
    )
    assert (
        corpus_key("slimpajama-chunk1") == "slimpajama" and corpus_key("smollm-corpus") == "smollm"
    )
    assert loss_metric_names("c4")["ppl"] == "eval/c4_val/Perplexity"


def test_token_file_windows(tmp_path):
    np.save(tmp_path / "val.npy", np.arange(100, dtype=np.uint16))
    windows = held_out_windows(str(tmp_path / "val.npy"), seq_len=16, n_tokens=70)
    assert windows.shape == (4, 16) and windows[1, 0] == 16
    np.save(tmp_path / "short.npy", np.arange(10))
    with pytest.raises(HeldOutDataError, match="fewer than one sequence"):
        held_out_windows(str(tmp_path / "short.npy"), seq_len=16, n_tokens=64)
    np.save(tmp_path / "bad.npy", np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(HeldOutDataError, match="1-D integer array"):
        held_out_windows(str(tmp_path / "bad.npy"), seq_len=2, n_tokens=4)


def write_corpus(path, n_docs=40):
    words = "the cat sat on the mat and the dog ran to the rock near water".split()
    with open(path, "w") as f:
        for i in range(n_docs):
            f.write(
                json.dumps({"text": " ".join(words[(i + j) % len(words)] for j in range(20))})
                + "\n"
            )
    return path


def test_held_out_split_comes_from_training_pipeline(tmp_path, tokenizer):
    """The windows are training's validation split: first documents, EOS after each."""
    tokenizer.save_pretrained(tmp_path / "tok")
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    windows = held_out_windows(
        str(corpus), seq_len=32, n_tokens=96, tokenizer=str(tmp_path / "tok"),
        data_dir=str(tmp_path / "shards"), val_sequences=4,
    )  # fmt: skip
    assert windows.shape == (3, 32)
    first_doc = json.loads(corpus.read_text().splitlines()[0])["text"]
    expected = tokenizer.encode(first_doc, add_special_tokens=False) + [tokenizer.eos_token_id]
    assert windows.reshape(-1)[: len(expected)].tolist() == expected
    # More windows than the held-out split holds: capped, never reading training documents.
    windows = held_out_windows(
        str(corpus), seq_len=32, n_tokens=32 * 10, tokenizer=str(tmp_path / "tok"),
        data_dir=str(tmp_path / "shards"), val_sequences=4,
    )  # fmt: skip
    assert windows.shape == (4, 32)


def test_bad_held_out_inputs(model, tokenizer):
    with pytest.raises(HeldOutDataError, match="outside the model's vocabulary"):
        held_out_loss(model, np.full((1, 8), len(tokenizer) + 3), progress=False)
    with pytest.raises(HeldOutDataError, match="longer than the model's context"):
        held_out_loss(model, np.zeros((1, 1000), dtype=np.int64), progress=False)
    with pytest.raises(HeldOutDataError, match="a tokenizer name is needed"):
        held_out_windows("c4", seq_len=8, n_tokens=16)
    with pytest.raises(HeldOutDataError, match="less than one sequence"):
        held_out_windows("c4", seq_len=8, n_tokens=4, tokenizer="x")


def test_an_unreachable_corpus_is_a_held_out_data_error(monkeypatch, tmp_path, tokenizer):
    """Offline, a registered corpus fails with ConnectionError (an OSError): reported as the
    corpus' failure, so a sweep goes on with its other metrics instead of stopping."""
    import training.data

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'allenai/c4' on the Hub")

    monkeypatch.setattr(training.data, "load_validation_split", offline)
    with pytest.raises(HeldOutDataError, match="held-out split of 'c4': Couldn't reach"):
        held_out_windows("c4", seq_len=8, n_tokens=16, tokenizer="x", data_dir=str(tmp_path))


def test_a_short_token_file_is_reported_in_sequences_and_tokens(tmp_path, caplog):
    """Fewer tokens than asked for: all are used, and the warning gives the unit of the rows' n
    (predicted tokens), as for a short held-out split (test_cli)."""
    np.save(tmp_path / "val.npy", np.arange(100))
    windows = held_out_windows(str(tmp_path / "val.npy"), seq_len=16, n_tokens=1000)
    assert windows.shape == (6, 16)
    assert (
        "the token stream has 6 sequences of 16 tokens, fewer than the 62 asked for (1000 tokens "
        "// 16); the loss is over all of them: 90 predicted tokens (15 per sequence)"
    ) in caplog.text
