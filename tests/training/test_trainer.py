"""Training in-process on a CPU: a tiny model learns, the run folder honours the study contract,
resumption is exact, a NaN loss stops the run, accumulation matches a larger micro-batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import tiny_config, train_until_crash
from training.checkpoint import CheckpointError, list_checkpoints, read_train_state
from training.config import ConfigError
from training.trainer import NonFiniteLossError, build_model, build_optimizer, train


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def assert_same_weights(a, b, exact=True):
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)


def test_tiny_model_trains_and_writes_the_run_folder(tmp_path, tokenizer_dir, data_dir):
    cfg = tiny_config(tokenizer_dir, data_dir, tmp_path, "logging.trackers=[tensorboard]",
                      "logging.eval_every=10", steps=30)
    final = train(cfg)
    run_dir = tmp_path / "tiny"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == list(range(1, 31))
    first, last = train_records[0]["loss"], np.mean([r["loss"] for r in train_records[-5:]])
    assert last < first - 0.5, (first, last)  # the loss falls
    for key in ("step", "tokens", "loss", "z_loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
        assert key in train_records[0]
    assert train_records[-1]["tokens"] == 30 * 8 * 32
    assert train_records[0]["mfu"] is None  # no peak FLOP/s known for a CPU
    assert "val_loss" in train_records[9]
    assert records[-1]["val_loss"] == final["final_val_loss"]

    for name in ("config.json", "model.safetensors", "generation_config.json",
                 "training_config.yaml", "metrics.jsonl", "final.json", "tokenizer.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "logs").rglob("events.out.tfevents*"))
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [28, 30]
    on_disk = json.loads((run_dir / "final.json").read_text())
    assert on_disk == final
    for key in ("run", "dataset", "N", "D", "C", "steps", "tokens", "final_val_loss",
                "wall_time_s"):
        assert key in final
    assert final["run"] == "tiny" and final["dataset"] == "python-stdlib"
    assert final["steps"] == 30 and final["tokens"] == final["D"] == 30 * 8 * 32
    assert final["C"] == 6 * final["N"] * final["D"]
    newest = max(p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file())
    assert (run_dir / "final.json").stat().st_mtime_ns == newest  # written last

    # The saved folder is a transformers model whose loss on the held-out split is final_val_loss.
    from transformers import AutoModelForCausalLM

    from training.data import corpus_folder, load_tokenizer, open_corpus, tokenizer_tag

    model = AutoModelForCausalLM.from_pretrained(run_dir)
    assert model.num_parameters() == final["N"]

    tok = load_tokenizer(tokenizer_dir)
    folder = corpus_folder(cfg.data.data_dir, cfg.data.corpus, tokenizer_tag(tok, tokenizer_dir),
                           32, 16)
    val = torch.from_numpy(np.asarray(open_corpus(folder).validation(), dtype=np.int64))
    with torch.no_grad():
        out = model(input_ids=val, labels=val)
    assert out.loss.item() == pytest.approx(final["final_val_loss"], rel=1e-4)

    # A finished run is not trained again.
    assert train(cfg) == final


def test_resume_after_a_crash_ends_with_identical_weights(tmp_path, tokenizer_dir, data_dir,
                                                          monkeypatch):
    reference = tiny_config(tokenizer_dir, data_dir, tmp_path / "a")
    train(reference)

    crashing = tiny_config(tokenizer_dir, data_dir, tmp_path / "b")
    train_until_crash(crashing, monkeypatch, step=7)
    run_dir = tmp_path / "b" / "tiny"
    assert not (run_dir / "final.json").exists()
    assert read_train_state(list_checkpoints(run_dir / "checkpoints")[-1][1])["step"] == 4

    with pytest.raises(FileExistsError, match="--resume"):
        train(crashing)  # checkpoints exist: never silently restart over them
    resumed = crashing.with_overrides(["checkpoint.resume=true"])
    final = train(resumed)
    assert final["steps"] == 12
    assert_same_weights(weights(tmp_path / "a" / "tiny"), weights(run_dir))
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [*range(1, 13), 12]  # no step logged twice after the resume


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tokenizer_dir,
                                                                   data_dir, monkeypatch):
    import training.trainer as trainer

    calls = {"n": 0}
    real = trainer.causal_lm_loss

    def nan_from_step_6(logits, ids, z_loss):
        calls["n"] += 1
        loss, ce, z = real(logits, ids, z_loss)
        if calls["n"] > 2 * 5:  # two micro-batches per step: steps 0-4 are fine
            loss = loss * float("nan")
            ce = ce * float("nan")
        return loss, ce, z

    monkeypatch.setattr(trainer, "causal_lm_loss", nan_from_step_6)
    cfg = tiny_config(tokenizer_dir, data_dir, tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\).* at step 5") as info:
        train(cfg)
    assert "step_00000004" in str(info.value)
    run_dir = tmp_path / "tiny"
    found = list_checkpoints(run_dir / "checkpoints")
    assert [step for step, _ in found] == [4]
    state = load_file(str(found[0][1] / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in state.values())
    assert not (run_dir / "final.json").exists()


def test_accumulation_matches_one_large_micro_batch(tmp_path, tokenizer_dir, data_dir):
    train(tiny_config(tokenizer_dir, data_dir, tmp_path / "accumulate", steps=6))
    train(tiny_config(tokenizer_dir, data_dir, tmp_path / "large", "batch.micro_batch_size=8",
                      steps=6))
    assert_same_weights(weights(tmp_path / "accumulate" / "tiny"),
                        weights(tmp_path / "large" / "tiny"), exact=False)


def test_vocabulary_smaller_than_the_tokenizer_is_rejected(tmp_path, tokenizer_dir, data_dir):
    cfg = tiny_config(tokenizer_dir, data_dir, tmp_path, "model.vocab_size=100")
    with pytest.raises(ConfigError, match="model.vocab_size"):
        train(cfg)


def test_a_misspelt_model_field_is_a_config_error(tmp_path, tokenizer_dir, data_dir):
    cfg = tiny_config(tokenizer_dir, data_dir, tmp_path, "model.extra={rope_thta: 500000.0}")
    with pytest.raises(ConfigError, match=r"^model: .*'rope_thta'.*rope_theta"):
        train(cfg)
    assert not (tmp_path / "tiny").exists()  # rejected before anything was written


def test_a_damaged_checkpoint_is_named_not_skipped(tmp_path, tokenizer_dir, data_dir,
                                                   monkeypatch):
    train_until_crash(tiny_config(tokenizer_dir, data_dir, tmp_path), monkeypatch, step=5)
    weights_file = tmp_path / "tiny" / "checkpoints" / "step_00000004" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:100])  # truncated on disk
    with pytest.raises(CheckpointError, match="every one is damaged .step_00000004: "
                       "model.safetensors has 100 bytes, its manifest says"):
        train(tiny_config(tokenizer_dir, data_dir, tmp_path, "checkpoint.resume=true"))
    assert weights_file.stat().st_size == 100  # nothing moved or deleted: the user decides


def test_weight_decay_groups_follow_olmo():
    """OLMo decays every nn.Linear weight (the untied head too), the embedding only with
    decay_embeddings, norms only with decay_norm_and_bias (OLMo-ladder sets it)."""
    from training.config import TrainingConfig

    cfg = TrainingConfig.tiny_cpu().with_overrides(
        ["model.n_layers=1", "model.vocab_size=384", "optim.weight_decay=0.1"])
    model = build_model(cfg)
    names = {id(p): n for n, p in model.named_parameters()}

    def decay_of(cfg):
        optimizer = build_optimizer(model, cfg, on_gpu=False)
        return {names[id(p)]: group["weight_decay"] for group in optimizer.param_groups
                for p in group["params"]}

    paper = decay_of(cfg)
    assert len(paper) == len(names)
    assert paper.pop("model.embed_tokens.weight") == 0.0
    assert paper.pop("lm_head.weight") == 0.1
    assert {n: w for n, w in paper.items() if n.endswith("proj.weight")} == {
        n: 0.1 for n in paper if n.endswith("proj.weight")}
    norms = [n for n in paper if "norm" in n]
    assert len(norms) == 5 and all(paper[n] == 0.0 for n in norms)
    everything = decay_of(cfg.with_overrides(["optim.decay_norms=true",
                                              "optim.decay_embeddings=true"]))
    assert set(everything.values()) == {0.1}
    ladder = TrainingConfig.olmo_ladder(4)
    assert ladder.optim.decay_norms and not ladder.optim.decay_embeddings
    assert ladder.optim.z_loss == 1e-5 and ladder.schedule.warmup_start_fraction == 0.0


def test_token_ids_outside_the_vocabulary_stop_the_run(tmp_path, tokenizer_dir):
    """A damaged shard (here: every id overwritten with 500 >= vocab 384) is named, instead of an
    IndexError on a CPU or a device-side assert on a GPU."""
    from training.corpora import CorpusError

    data = tmp_path / "data"
    train(tiny_config(tokenizer_dir, str(data), tmp_path / "good", steps=2))
    (shard,) = data.rglob("train-00000.bin")
    shard.write_bytes(np.full(shard.stat().st_size // 2, 500, dtype=np.uint16).tobytes())
    with pytest.raises(CorpusError, match=r"token id 500 in .* outside model.vocab_size \(384\)"):
        train(tiny_config(tokenizer_dir, str(data), tmp_path / "bad", steps=2))


def test_cli_reports_an_unreadable_corpus(tmp_path, tokenizer_dir, data_dir, capsys):
    from training.__main__ import main

    config = tmp_path / "run.yaml"
    tiny_config(tokenizer_dir, data_dir, tmp_path, f"data.corpus={tmp_path / 'none.jsonl'}"
                ).to_yaml(config)
    assert main(["--config", str(config)]) == 2
    assert "none.jsonl' is neither a registered corpus" in capsys.readouterr().err


@pytest.mark.parametrize(("rows", "micro", "world", "limit"),
                         [(5, 2, 2, None), (16, 4, 3, None), (2048, 16, 24, None), (7, 4, 8, None),
                          (100, 4, 3, 2)])
def test_every_process_runs_the_same_number_of_validation_passes(rows, micro, world, limit):
    """Under FSDP each forward is collective: uneven shares (5 rows over 2 processes in batches
    of 2 gave 2 passes on one and 1 on the other) would hang the run at its final validation."""
    from training.trainer import validation_batches

    shares = [validation_batches(rows, micro, rank, world, limit) for rank in range(world)]
    assert len({len(batches) for batches in shares}) == 1
    used = np.concatenate([b for batches in shares for b in batches])
    expected = rows if limit is None else min(rows, limit * micro * world)
    assert sorted(used.tolist()) == list(range(expected))  # each row exactly once
    assert all(len(b) <= micro for batches in shares for b in batches)


FSDP2_NORM_SCRIPT = """
import sys, types, torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from modeling_l2l import L2LConfig, L2LForCausalLM
from training.trainer import clip_gradients
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[1], rank=0, world_size=1)
torch.manual_seed(0)
model = L2LForCausalLM(L2LConfig.from_depth(1, vocab_size=64))
reference = L2LForCausalLM(L2LConfig.from_depth(1, vocab_size=64))
reference.load_state_dict(model.state_dict())
mesh = init_device_mesh("cpu", (1,))
for layer in model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
ids = torch.randint(0, 64, (2, 8))
for m in (model, reference):
    (m(input_ids=ids).logits.float() ** 2).mean().backward()
fake = types.SimpleNamespace(clip_grad_norm_=torch.nn.utils.clip_grad_norm_)
norm = clip_gradients(fake, model, 0.5)
expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
assert type(norm) is torch.Tensor and norm.dtype == torch.float32, type(norm)
torch.testing.assert_close(norm, expected)
assert torch.stack([torch.zeros(()), norm]).shape == (2,)
dist.destroy_process_group()
print("ok", float(norm))
"""


def test_fsdp2_gradient_norm_is_a_plain_tensor_measured_before_clipping():
    """With FSDP2 (fully_shard) the gradients are DTensors and clip_grad_norm_ returns a DTensor;
    the trainer stacks the norm with the loss for its one all-reduce, so it must be plain. Run
    in a subprocess on a one-process gloo group, against the same model unsharded."""
    import socket
    import sys

    from tests.training.conftest import run_subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = run_subprocess([sys.executable, "-c", FSDP2_NORM_SCRIPT, str(port)])
    assert proc.stdout.startswith("ok") and float(proc.stdout.split()[1]) > 0.5  # was clipped


def test_a_committed_checkpoint_is_never_deleted_to_be_rewritten(tmp_path):
    """Saving a step that is already committed keeps the committed folder (the old code deleted
    it, then renamed the new one in: a kill in between left no checkpoint of that step)."""
    from accelerate import Accelerator

    from training.checkpoint import save_checkpoint

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    root = tmp_path / "checkpoints"
    first = save_checkpoint(accelerator, root, {"step": 4}, keep_last=2)
    inode = first.stat().st_ino
    with torch.no_grad():
        model.weight.add_(1.0)
    again = save_checkpoint(accelerator, root, {"step": 4}, keep_last=2)
    assert again == first and again.stat().st_ino == inode
    assert sorted(p.name for p in root.iterdir()) == ["step_00000004"]
    (first / "train_state.json").unlink()  # a folder of that name that resume would not load...
    save_checkpoint(accelerator, root, {"step": 4}, keep_last=2)  # ...is replaced
    assert read_train_state(first)["step"] == 4
    saved = load_file(str(first / "model.safetensors"))
    assert torch.equal(saved["weight"], model.weight.detach())


def test_fsdp_without_gpus_says_it_is_not_sharding(tmp_path, tokenizer_dir, data_dir,
                                                   monkeypatch, capsys):
    """Launched with an FSDP config on CPUs, accelerate runs without sharding and says nothing;
    the trainer says it (the run itself is unaffected: its numbers are data parallelism's)."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    final = train(tiny_config(tokenizer_dir, data_dir, tmp_path, steps=2))
    assert final["distributed_type"] == "NO"
    assert "asked for FSDP but accelerate runs NO" in capsys.readouterr().out


def test_resume_drops_a_torn_metrics_line(tmp_path):
    from training.trainer import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "loss": 4.0}\n\n'
                    '{"step": 3, "loss": 3.0}\n{"step": 4, "lo')  # killed mid-append
    MetricsLog(path, enabled=True, resume_step=2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_a_micro_batch_out_of_memory_says_what_to_lower(tmp_path, tokenizer_dir, data_dir,
                                                         monkeypatch):
    import training.trainer as trainer
    from training.trainer import OutOfMemoryError

    def out_of_memory(logits, ids, z_loss):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "causal_lm_loss", out_of_memory)
    cfg = tiny_config(tokenizer_dir, data_dir, tmp_path)
    with pytest.raises(OutOfMemoryError, match=r"out of memory at step 0 in a micro-batch of 4 "
                       r"sequences .* lower batch.micro_batch_size .* --resume"):
        train(cfg)

    def cpu_allocator(logits, ids, z_loss):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 68719476736 bytes.")

    monkeypatch.setattr(trainer, "causal_lm_loss", cpu_allocator)
    with pytest.raises(OutOfMemoryError, match="lower batch.micro_batch_size"):
        train(cfg)

    def other(logits, ids, z_loss):
        raise RuntimeError("shape mismatch")  # not a memory error: raised as it is

    monkeypatch.setattr(trainer, "causal_lm_loss", other)
    with pytest.raises(RuntimeError, match="^shape mismatch$"):
        train(cfg)


def test_final_json_records_the_model_files_checksums(tmp_path, tokenizer_dir, data_dir):
    from training.checkpoint import check_files

    final = train(tiny_config(tokenizer_dir, data_dir, tmp_path))
    files = final["files"]
    assert {"model.safetensors", "config.json"} <= set(files)
    run_dir = tmp_path / "tiny"
    assert check_files(run_dir, files) is None
    (run_dir / "model.safetensors").write_bytes(b"\0" * files["model.safetensors"]["size"])
    assert "does not match its checksum" in check_files(run_dir, files)
