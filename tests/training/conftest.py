"""Fixtures for the training tests: a small BPE tokenizer trained on the standard library, a shared
folder of built corpora, and tiny configs that train in well under a second per step on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.config import TrainingConfig

REPO = Path(__file__).resolve().parents[2]
# The test models are tiny: one thread beats two (and far beats two on a loaded machine, where
# intra-op threads spin waiting for each other).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """A 384-token byte-level BPE (EOS ``<eos>``) trained on 100 standard-library files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from training.corpora import stdlib_files

    texts = [p.read_text(encoding="utf-8", errors="ignore") for p in stdlib_files()[:100]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    out = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """Built corpora shared by the tests (each build is deterministic, so sharing is safe)."""
    return str(tmp_path_factory.mktemp("data"))


def tiny_config(tokenizer_dir: str, data_dir: str, output_dir: str | Path, *overrides: str,
                steps: int = 12) -> TrainingConfig:
    """Depth 1 (d = 64), vocabulary 384, sequences of 32, 8 per step in micro-batches of 4."""
    cfg = TrainingConfig.tiny_cpu().with_overrides([
        f"data.tokenizer={tokenizer_dir}", f"data.data_dir={data_dir}", "model.vocab_size=384",
        "model.n_layers=1", "data.seq_len=32", "data.val_sequences=16",
        "batch.global_batch_size=8", "batch.micro_batch_size=4", f"run.tokens={steps * 8 * 32}",
        "run.name=tiny", f"run.output_dir={output_dir}", "logging.trackers=[]",
        "logging.progress_bar=false", "logging.log_every=1", "checkpoint.every_steps=4",
        "checkpoint.keep_last=2", "optim.lr=3e-3", *overrides,
    ])
    return cfg.validate()


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps process-wide singletons; each in-process run starts from a clean slate."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def run_subprocess(args: list[str], *, env: dict | None = None, timeout: float = 240,
                   check: bool = True) -> subprocess.CompletedProcess:
    """Run a command from the repository root with the test's Python on PATH."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1", **(env or {})}
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
    proc = subprocess.run(args, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def train_until_crash(cfg, monkeypatch, step: int) -> None:
    """Train ``cfg`` as a process killed when it reaches ``step`` would: a KeyboardInterrupt
    raised from inside the loop (the learning rate of that step), checkpoints as they were."""
    import training.trainer as trainer
    from training.trainer import train

    real = trainer.lr_at_step

    def crash(at, **kwargs):
        if at == step:
            raise KeyboardInterrupt("simulated crash")
        return real(at, **kwargs)

    monkeypatch.setattr(trainer, "lr_at_step", crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    finally:
        monkeypatch.setattr(trainer, "lr_at_step", real)

