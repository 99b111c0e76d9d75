"""The training loop: one run of a study, from a ``TrainingConfig`` to a finished run folder.

Works the same under ``python -m training`` (one process: CPU or one GPU) and under
``accelerate launch`` (DDP or FSDP2 over GPUs and nodes, or gloo DDP over CPU processes). Each
optimizer step consumes ``global_batch_size`` sequences: positions ``[step * B, (step + 1) * B)``
of the corpus' seeded read order, split into ``world_size x accumulation`` micro-batches of
``micro_batch_size``. The step therefore sees the same sequences whatever the number of
processes, and the data position is nothing but the step.

The run folder (contract shared with evaluation)::

    <output_dir>/<run name>/
        training_config.yaml  the full config of the run
        corpus.json           the corpus' source fingerprint at the start (a resume checks it)
        .lock                 held by the one trainer of the folder (see training.run_lock)
        metrics.jsonl         one line per logged step (and the final validation)
        logs/                 tensorboard (and wandb when installed) via accelerate trackers
        checkpoints/          step_<n>/ folders (see training.checkpoint)
        config.json, model.safetensors, generation_config.json, tokenizer files:
                              the final model, ``save_pretrained``
        final.json            written last, atomically: the run is finished iff it exists

A run stopped by ``run.max_steps`` before the end of its schedule is paused, not finished: it
leaves a checkpoint and no final.json, and a later ``--resume`` with a larger ``run.max_steps``
(or none) continues the same schedule.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from analysis.atomic import write_atomic
from training.checkpoint import (
    file_digests,
    latest_checkpoint,
    load_checkpoint,
    read_train_state,
    remove_partial,
    resumable_checkpoint,
    save_checkpoint,
)
from training.config import ConfigError, TrainingConfig
from training.corpora import (
    CorpusError,
    corpus_label,
    fingerprint_changes,
    resolve_corpus,
    source_fingerprint,
)
from training.data import SequenceOrder, TrainSequences, build_corpus, load_tokenizer
from training.loss import causal_lm_loss
from training.run_lock import RunLock, RunLockedError
from training.schedule import decay_steps_for, lr_at_step, warmup_steps_for
from training.study import FINAL_NAME, run_finished
from training.typed_config import flat_fields

# The run's corpus as it was when the run started (``source_fingerprint``): a resume refuses a
# corpus whose documents changed since.
CORPUS_RECORD = "corpus.json"


# The files of the final model besides its weights (``*.safetensors``) that final.json records
# with their checksums.
MODEL_FILES = ("config.json", "model.safetensors.index.json")


class OutOfMemoryError(RuntimeError):
    """A micro-batch did not fit in the device's memory; the message says what to lower."""


def _out_of_memory(exc: BaseException) -> bool:
    # CUDA raises torch.OutOfMemoryError; the CPU allocator a RuntimeError naming the failure.
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; the run stopped before the update."""


def build_model(cfg: TrainingConfig, eos_token_id: int | None = None):
    """The L2L model of the config, initialised from ``run.seed`` (fp32 weights)."""
    from modeling_l2l import L2LConfig, L2LForCausalLM

    overrides = dict(cfg.model.extra)
    if cfg.model.d_model is not None:
        overrides["hidden_size"] = cfg.model.d_model
    if cfg.model.n_heads is not None:
        overrides["num_attention_heads"] = cfg.model.n_heads
    try:
        model_config = L2LConfig.from_depth(
            cfg.model.n_layers,
            vocab_size=cfg.model.vocab_size,
            max_position_embeddings=cfg.data.seq_len,
            eos_token_id=eos_token_id,
            **overrides,
        )
    except ValueError as exc:  # e.g. a misspelt model.extra key, a head size RoPE cannot rotate
        raise ConfigError(f"model: {exc}") from None
    model_config._attn_implementation = cfg.model.attn_implementation
    torch.manual_seed(cfg.run.seed)
    model = L2LForCausalLM(model_config)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def build_optimizer(model, cfg: TrainingConfig, on_gpu: bool) -> torch.optim.AdamW:
    """AdamW with OLMo's weight-decay groups: every linear weight (the untied head included),
    the input embedding only with ``optim.decay_embeddings``, the LayerNorm weights (the only
    vectors: the model has no biases) only with ``optim.decay_norms``."""
    embedding = model.get_input_embeddings().weight
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if param is embedding:
            decayed = cfg.optim.decay_embeddings
        else:
            decayed = param.ndim >= 2 or cfg.optim.decay_norms
        (decay if decayed else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = cfg.optim.fused if cfg.optim.fused is not None else on_gpu
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
                             fused=fused or None)


def run_name(cfg: TrainingConfig, n_params: int) -> str:
    if cfg.run.name:
        return cfg.run.name
    from analysis.run_names import format_run_name

    flop_budget = cfg.run.flop_budget or 6.0 * n_params * cfg.run.tokens
    return format_run_name(corpus_label(cfg.data.corpus), n_params, cfg.run.tokens, flop_budget)


def _make_accelerator(cfg: TrainingConfig, run_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available(),
                 "wandb": is_wandb_available() and _wandb_configured()}
    trackers = [t for t in cfg.logging.trackers if available.get(t)]
    kwargs = {}
    if cfg.precision.compile:
        kwargs["dynamo_backend"] = "inductor"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        kwargs["fsdp_plugin"] = fsdp_plugin(cfg)
    return Accelerator(
        mixed_precision=cfg.precision.mixed_precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(run_dir),
                                            logging_dir=str(run_dir / "logs")),
        **kwargs,
    ), [t for t in cfg.logging.trackers if not available.get(t)]


def fsdp_plugin(cfg: TrainingConfig):
    """accelerate's FSDP plugin (its settings from the launcher's FSDP_* environment) with OLMo's
    "mixed" precision: blocks compute in the autocast dtype, gradients are reduced across
    processes in fp32 and the sharded master weights stay fp32. accelerate's default policy
    would reduce in bf16 too, losing precision in the average over many ranks."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    if cfg.precision.mixed_precision == "no":
        return FullyShardedDataParallelPlugin()
    dtype = torch.bfloat16 if cfg.precision.mixed_precision == "bf16" else torch.float16
    version_2 = os.environ.get("FSDP_VERSION", "1") == "2"
    policy = {"param_dtype": dtype, "reduce_dtype": torch.float32,
              ("output_dtype" if version_2 else "buffer_dtype"): dtype}
    return FullyShardedDataParallelPlugin(mixed_precision_policy=policy)


def _wandb_configured() -> bool:
    """wandb is used only when it can log without prompting: an API key (environment or
    ``wandb login``) or an offline/disabled mode. The key itself is never read into our logs."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _changed_fields(before: TrainingConfig, after: TrainingConfig) -> list[str]:
    """Fields that differ, except those that may change between sessions of one run."""
    free = ("checkpoint.", "logging.", "run.max_steps", "data.hub_mirror")
    old, new = flat_fields(before.to_dict()), flat_fields(after.to_dict())
    return sorted(k for k in old.keys() | new.keys()
                  if old.get(k) != new.get(k) and not k.startswith(free))


class MetricsLog:
    """``metrics.jsonl``, appended line by line by the main process; on resume the lines past the
    checkpoint's step are dropped so the file never holds a step twice."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if _step_of(line) is not None and _step_of(line) <= resume_step]
            write_atomic(path, "".join(line + "\n" for line in kept))
        elif enabled and resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def _step_of(line: str) -> int | None:
    """The step of a metrics.jsonl line; None for a blank or torn one (a crash mid-append, a full
    disk), which resuming drops rather than fail on."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return None


@torch.no_grad()
def evaluate(model, accelerator, sequences: np.ndarray, micro_batch_size: int,
             max_batches: int | None = None) -> float:
    """Mean next-token cross-entropy over ``sequences`` (the held-out split), sharded over
    processes; every predicted token counts equally."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for batch in validation_batches(len(sequences), micro_batch_size, accelerator.process_index,
                                    accelerator.num_processes, max_batches):
        ids = torch.from_numpy(np.asarray(sequences[batch if len(batch) else [0]],
                                          dtype=np.int64)).to(accelerator.device)
        logits = model(input_ids=ids, use_cache=False).logits
        if len(batch):
            _, cross_entropy, _ = causal_lm_loss(logits, ids, z_loss=0.0)
            predictions = ids.shape[0] * (ids.shape[1] - 1)
            total[0] += cross_entropy.double() * predictions
            total[1] += predictions
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def validation_batches(rows: int, micro_batch_size: int, rank: int, world: int,
                       max_batches: int | None = None) -> list[np.ndarray]:
    """This process' micro-batches of held-out rows (row i goes to process i mod world).

    Every process gets the same number of batches, the ones past its share empty (the caller
    runs a throw-away forward pass for those): under FSDP a forward pass is collective (each
    block all-gathers its shards), and a process that stopped one batch early would leave the
    others waiting forever."""
    selected = np.arange(rows)
    if max_batches is not None:
        selected = selected[: max_batches * micro_batch_size * world]
    mine = selected[rank::world]
    passes = -(-len(selected[0::world]) // micro_batch_size)  # process 0 has the most rows
    return [mine[i * micro_batch_size:(i + 1) * micro_batch_size] for i in range(passes)]


def train(cfg: TrainingConfig) -> dict:
    """Train one run to completion (or resume it); return the contents of ``final.json``.

    A run paused by ``run.max_steps`` returns ``{"run", "paused": True, "steps",
    "total_steps", "tokens"}`` instead."""
    cfg.validate()
    started = time.time()
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    if len(tokenizer) > cfg.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size: {cfg.model.vocab_size} is smaller than the vocabulary of "
            f"data.tokenizer {cfg.data.tokenizer!r} ({len(tokenizer)})"
        )
    model = build_model(cfg, eos_token_id=tokenizer.eos_token_id)
    n_params = model.num_parameters()
    name = run_name(cfg, n_params)
    run_dir = Path(os.path.expanduser(cfg.run.output_dir)) / name
    checkpoints = run_dir / "checkpoints"
    _check_output_dir(run_dir)

    accelerator, missing_trackers = _make_accelerator(cfg, run_dir)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        # e.g. an FSDP config on a machine without GPUs: accelerate then gives every process a
        # world of its own, and they would all write the same run folder.
        raise RuntimeError(
            f"{launched} processes were launched but accelerate formed a group of "
            f"{accelerator.num_processes} ({accelerator.distributed_type}); for DDP on CPUs "
            "use training/launch/cpu_ddp.yaml with ACCELERATE_USE_CPU=1 (FSDP needs GPUs)"
        )
    main = accelerator.is_main_process
    log = accelerator.print
    if (os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
            and accelerator.distributed_type.value != "FSDP"):
        # accelerate falls back to plain data parallelism without GPUs, silently.
        log(f"warning: the launch asked for FSDP but accelerate runs "
            f"{accelerator.distributed_type.value} (FSDP needs GPUs): the model is replicated "
            "on every process, not sharded")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_run(run_dir, accelerator):
        if run_finished(run_dir):
            log(f"{name}: already finished ({run_dir / FINAL_NAME}); nothing to do")
            return json.loads((run_dir / FINAL_NAME).read_text())
        world = accelerator.num_processes
        accum = cfg.grad_accumulation_steps(world)
        micro = cfg.batch.micro_batch_size
        total_steps, train_steps = cfg.total_steps, cfg.train_steps
        tokens_per_step = cfg.tokens_per_step

        if main:
            for path in remove_partial(checkpoints):
                log(f"removed an interrupted checkpoint write: {path}")
        if main and cfg.checkpoint.resume:
            resumable_checkpoint(checkpoints, log)  # damaged ones are moved aside, and said so
        accelerator.wait_for_everyone()
        resume_from = latest_checkpoint(checkpoints)
        branching = resume_from is None and cfg.schedule.trunk is not None
        if branching:  # a WSD decay branch starts from its trunk's checkpoint, as from its own
            from training.branches import start_branch_on_every_process

            resume_from = start_branch_on_every_process(cfg, run_dir, accelerator, log)
        if resume_from is not None and not cfg.checkpoint.resume and not branching:
            raise FileExistsError(
                f"{run_dir} already holds checkpoints ({resume_from.name}); pass --resume "
                "(checkpoint.resume=true) to continue it, or choose another run.name / run.output_dir"
            )
        saved_config = run_dir / "training_config.yaml"
        if main and resume_from is not None and saved_config.is_file():
            changed = _changed_fields(TrainingConfig.from_yaml(saved_config), cfg)
            if changed:
                log(f"warning: resuming {name} with a config that differs from its "
                    f"training_config.yaml in {', '.join(changed)}")
        if main:
            cfg.to_yaml(saved_config)
            for tracker in missing_trackers:
                log(f"logging.trackers: {tracker} is not installed (or wandb not logged in); "
                    "skipping it")

        fingerprint = source_fingerprint(resolve_corpus(cfg.data.corpus), cfg.data.text_field)
        corpus_record = run_dir / CORPUS_RECORD
        if resume_from is not None and corpus_record.is_file():
            try:
                started_with = json.loads(corpus_record.read_text())["source_fingerprint"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CorpusError(
                    f"cannot resume {name}: {corpus_record} is damaged ({type(exc).__name__}: "
                    f"{exc}), so the corpus cannot be checked against the one the run started "
                    "with; restore the file from a copy"
                ) from None
            changes = fingerprint_changes(started_with, fingerprint)
            if changes:
                raise CorpusError(
                    f"cannot resume {name}: its corpus {cfg.data.corpus!r} changed since the run "
                    f"started ({'; '.join(changes)}); restore the corpus, or train a new run "
                    "(another run.name or run.output_dir)"
                )

        # Data: built once (main process first; the others then find it on disk).
        # Every run of a WSD trunk reads the trunk's data order, so a branch continues it.
        needed_sequences = (cfg.schedule.trunk_steps or total_steps) * cfg.batch.global_batch_size
        with accelerator.main_process_first():
            corpus = build_corpus(
                cfg.data.corpus, tokenizer, tokenizer_name=cfg.data.tokenizer,
                data_dir=cfg.data.data_dir, seq_len=cfg.data.seq_len,
                val_sequences=cfg.data.val_sequences,
                train_tokens=cfg.data.train_tokens or needed_sequences * cfg.data.seq_len,
                text_field=cfg.data.text_field, hub_mirror=cfg.data.hub_mirror,
                progress=main and cfg.logging.progress_bar,
            )
        if main:
            write_atomic(corpus_record, json.dumps({"corpus": cfg.data.corpus,
                                                    "shards": str(corpus.root),
                                                    "source_fingerprint": corpus.fingerprint},
                                                   indent=1))
        train_data = TrainSequences(corpus)
        _in_vocabulary(corpus.validation(), cfg.model.vocab_size, corpus.root)
        order = SequenceOrder(min(len(train_data), needed_sequences), cfg.data.seed)
        epochs = needed_sequences / order.n
        if epochs > 1:
            log(f"note: corpus {cfg.data.corpus!r} holds {order.n} training sequences; the run reads "
                f"{needed_sequences} ({epochs:.2f} epochs)")

        raw_model = model  # the model's own FLOP count and MFU helper, before any wrapping
        on_gpu = accelerator.device.type == "cuda"
        if on_gpu and cfg.precision.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        optimizer = build_optimizer(model, cfg, on_gpu)
        model, optimizer = accelerator.prepare(model, optimizer)
        loss_fn = torch.compile(causal_lm_loss) if cfg.precision.compile else causal_lm_loss

        step, tokens_seen, earlier_wall_time = 0, 0, 0.0
        if resume_from is not None:
            state = load_checkpoint(accelerator, resume_from)
            if (state["order_n"], state["order_seed"]) != (order.n, order.seed):
                raise RuntimeError(
                    f"cannot resume {name}: the checkpoint read {state['order_n']} sequences in order "
                    f"seed {state['order_seed']}, the data now gives {order.n} / {order.seed}"
                )
            step, tokens_seen = state["step"], state["tokens"]
            earlier_wall_time = state.get("wall_time_s", 0.0)  # time of the sessions before
            log(f"resumed {name} from {resume_from} (step {step} of {train_steps})")
        metrics = MetricsLog(run_dir / "metrics.jsonl", main,
                             resume_step=step if resume_from is not None else None)
        accelerator.init_trackers(
            cfg.logging.project, config=flat_fields(cfg.to_dict()),
            init_kwargs={"wandb": {"name": name, "dir": str(run_dir / "logs")}},
        )

        warmup = warmup_steps_for(total_steps, cfg.schedule.warmup_fraction,
                                  cfg.schedule.warmup_tokens, tokens_per_step)
        decay_steps = decay_steps_for(total_steps, cfg.schedule.decay_fraction)
        keep_steps = set(cfg.checkpoint.keep_steps)  # a WSD trunk's branch points

        def learning_rate(at: int) -> float:
            return lr_at_step(at, peak_lr=cfg.optim.lr, total_steps=total_steps, warmup_steps=warmup,
                              final_lr_fraction=cfg.schedule.final_lr_fraction,
                              warmup_start_fraction=cfg.schedule.warmup_start_fraction,
                              kind=cfg.schedule.kind, decay_steps=decay_steps,
                              decay_shape=cfg.schedule.decay_shape)

        def train_state() -> dict:
            return {"step": step, "tokens": tokens_seen, "order_n": order.n,
                    "order_seed": order.seed, "world_size": world, "run": name,
                    "wall_time_s": earlier_wall_time + time.time() - started}

        def checkpoint() -> Path:
            return save_checkpoint(accelerator, checkpoints, train_state(), cfg.checkpoint.keep_last,
                                   keep_steps)

        from tqdm.auto import tqdm

        bar = tqdm(total=train_steps, initial=step, desc=name, unit="step",
                   disable=not (main and cfg.logging.progress_bar))
        model.train()
        interval_tokens, interval_time = 0, 0.0
        sum_ce = torch.zeros((), device=accelerator.device)
        sum_z = torch.zeros((), device=accelerator.device)
        logged_steps = 0
        while step < train_steps:
            tick = time.perf_counter()
            lr = learning_rate(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_ce = torch.zeros((), device=accelerator.device)
            step_z = torch.zeros((), device=accelerator.device)
            for k in range(accum):
                j = accelerator.process_index * accum + k  # this micro-batch's slot in the step
                positions = step * cfg.batch.global_batch_size + j * micro + np.arange(micro)
                batch = torch.from_numpy(_in_vocabulary(
                    train_data.gather(order.indices(positions)), cfg.model.vocab_size, corpus.root))
                batch = batch.to(accelerator.device, non_blocking=True)
                sync = contextlib.nullcontext() if k == accum - 1 else accelerator.no_sync(model)
                try:
                    with sync:
                        logits = model(input_ids=batch, use_cache=False).logits
                        loss, cross_entropy, z_squared = loss_fn(logits, batch, cfg.optim.z_loss)
                        # Every micro-batch predicts micro x (L - 1) tokens (packed, never
                        # padded), so the mean of the micro-batch means, and DDP's mean over
                        # processes, is the step's mean over all its tokens.
                        accelerator.backward(loss / accum)
                except (torch.OutOfMemoryError, RuntimeError) as exc:
                    if not _out_of_memory(exc):
                        raise
                    accelerator.end_training()
                    raise OutOfMemoryError(
                        f"{name}: out of memory at step {step} in a micro-batch of {micro} "
                        f"sequences x {cfg.data.seq_len} tokens on {accelerator.device}: lower "
                        f"batch.micro_batch_size (gradient accumulation keeps the global batch of "
                        f"{cfg.batch.global_batch_size}) or set model.gradient_checkpointing=true, "
                        "then run again with --resume (the last checkpoint is kept)"
                    ) from None
                step_ce += cross_entropy / accum
                step_z += cfg.optim.z_loss * z_squared / accum
            grad_norm = clip_gradients(accelerator, model, cfg.optim.grad_clip)
            # One sync per step: the mean loss over processes decides whether the update is safe.
            check = accelerator.reduce(torch.stack([step_ce, grad_norm]), reduction="mean")
            step_loss, step_norm = float(check[0]), float(check[1])
            if not (math.isfinite(step_loss) and math.isfinite(step_norm)):
                optimizer.zero_grad(set_to_none=True)
                last = latest_checkpoint(checkpoints)
                accelerator.end_training()
                raise NonFiniteLossError(
                    f"{name}: non-finite loss ({step_loss}) or gradient norm ({step_norm}) at step "
                    f"{step}; stopped before applying the update. The last good checkpoint is "
                    f"{last if last is not None else 'none (no checkpoint was written yet)'}; "
                    "nothing was saved after it. Lower optim.lr or inspect the data, then resume "
                    "with --resume."
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += tokens_per_step
            interval_tokens += tokens_per_step
            interval_time += time.perf_counter() - tick
            sum_ce += step_ce
            sum_z += step_z
            logged_steps += 1
            bar.update(1)

            if step % cfg.logging.log_every == 0 or step == train_steps:
                means = accelerator.reduce(torch.stack([sum_ce, sum_z]) / logged_steps, "mean")
                tokens_per_s = interval_tokens / max(interval_time, 1e-9)
                record = {
                    "step": step, "tokens": tokens_seen, "loss": float(means[0]),
                    "z_loss": float(means[1]), "lr": lr, "grad_norm": step_norm,
                    "tokens_per_s": tokens_per_s,
                    "mfu": _mfu(raw_model, tokens_per_s / world, accelerator.device,
                                cfg.data.seq_len, cfg.logging.peak_flops),
                }
                if cfg.logging.eval_every and step % cfg.logging.eval_every == 0:
                    record["val_loss"] = evaluate(model, accelerator, corpus.validation(), micro,
                                                  cfg.logging.val_batches)
                metrics.write(record)
                accelerator.log({f"train/{k}": v for k, v in record.items()
                                 if k != "step" and v is not None}, step=step)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
                sum_ce.zero_()
                sum_z.zero_()
                logged_steps, interval_tokens, interval_time = 0, 0, 0.0
            if (cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0
                    or step in keep_steps):
                checkpoint()
        bar.close()
        last = latest_checkpoint(checkpoints)
        paused = step < total_steps
        if ((cfg.checkpoint.every_steps or paused)
                and (last is None or read_train_state(last)["step"] != step)):
            checkpoint()  # the end state, so that an interrupted finalisation resumes here
        if paused:
            log(f"{name}: paused at step {step} of {total_steps} (run.max_steps); resume with "
                "--resume and a larger run.max_steps, or none, to continue the same schedule")
            accelerator.end_training()
            return {"run": name, "paused": True, "steps": step, "total_steps": total_steps,
                    "tokens": tokens_seen}

        val_loss = evaluate(model, accelerator, corpus.validation(), micro, cfg.logging.val_batches)
        final = {
            "run": name, "dataset": corpus_label(cfg.data.corpus), "N": n_params,
            "D": cfg.run.tokens, "C": cfg.run.flop_budget or 6.0 * n_params * cfg.run.tokens,
            "steps": step, "tokens": tokens_seen, "final_val_loss": val_loss,
            "val_sequences": corpus.num_val_sequences, "seq_len": cfg.data.seq_len,
            "wall_time_s": round(earlier_wall_time + time.time() - started, 2), "world_size": world,
            "distributed_type": str(accelerator.distributed_type.value),
            "schedule": cfg.schedule.kind,
        }
        if cfg.schedule.trunk is not None:  # a decay branch: its trunk and where it left it
            from training.branches import branch_record

            final.update(branch_record(run_dir))
        metrics.write({"step": step, "tokens": tokens_seen, "val_loss": val_loss})
        accelerator.log({"val/loss": val_loss}, step=step)
        state_dict = accelerator.get_state_dict(model)
        if main:
            save_final_model(accelerator.unwrap_model(model), state_dict, run_dir)
            tokenizer.save_pretrained(run_dir)
            # The model's files with their checksums: a release (or anyone) can tell a weight
            # file damaged after the run finished from the one it trained.
            final["files"] = file_digests(run_dir, [
                p.name for p in run_dir.iterdir()
                if p.name.endswith(".safetensors") or p.name in MODEL_FILES])
            write_atomic(run_dir / FINAL_NAME, json.dumps(final, indent=1))
            log(f"{name}: finished {step} steps, validation loss {val_loss:.4f} -> {run_dir}")
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return final


def _check_output_dir(run_dir: Path) -> None:
    """The nearest existing folder on the way to ``run_dir`` must be a folder, not a file."""
    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"run.output_dir: {path} is a file, not a folder")
            return


@contextlib.contextmanager
def _exclusive_run(run_dir: Path, accelerator):
    """Hold the run folder's lock (main process) for the whole run; every process refuses to
    start when another trainer holds it, so that none waits forever for the main one."""
    lock, refused = None, None
    if accelerator.is_main_process:
        try:
            lock = RunLock(run_dir).acquire()
        except RunLockedError as exc:
            refused = exc
    if accelerator.num_processes > 1:
        granted = torch.tensor([0.0 if refused else 1.0], device=accelerator.device)
        if float(accelerator.gather(granted).min()) == 0.0 and refused is None:
            refused = RunLockedError(f"{run_dir} is being trained by another process")
    if refused is not None:
        raise refused
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def save_final_model(model, state_dict: dict, run_dir: Path) -> None:
    """``save_pretrained`` of the trained weights (``state_dict``, gathered from every process)
    with the code and ``auto_map`` of ``L2LForCausalLM``.

    FSDP2's ``fully_shard`` swaps the model's class in place for a subclass that torch creates in
    its ``_fsdp_init`` module, and ``unwrap_model`` cannot undo that: saved as it is, the folder's
    ``auto_map`` named ``_fsdp_init.FSDPL2LForCausalLM`` and held copies of torch's FSDP files
    instead of our modeling code, so remote-code loading failed. The weights are written through
    an unsharded skeleton of the plain class instead (on the meta device: no memory, no init)."""
    from modeling_l2l import L2LForCausalLM

    if type(model) is not L2LForCausalLM:
        with torch.device("meta"):
            plain = L2LForCausalLM(model.config)
        plain.generation_config = model.generation_config
        model = plain
    model.save_pretrained(run_dir, state_dict=state_dict, safe_serialization=True)


def clip_gradients(accelerator, model, max_norm: float | None) -> torch.Tensor:
    """Clip the global gradient norm to ``max_norm`` (None: no clipping) and return the norm
    measured before clipping, as a plain fp32 scalar. Under FSDP2 the gradients are DTensors and
    so is their norm: it is made a regular tensor before it meets the loss in one all-reduce."""
    from torch.distributed.tensor import DTensor

    norm = accelerator.clip_grad_norm_(model.parameters(),
                                       max_norm if max_norm is not None else float("inf"))
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return norm.float().reshape(())


def _in_vocabulary(ids: np.ndarray, vocab_size: int, root: Path) -> np.ndarray:
    """``ids``, checked: an id past the embedding is a damaged shard (or one written by another
    tokenizer), and on a GPU it would end the run with an opaque device-side assert."""
    if ids.size and int(ids.max()) >= vocab_size:
        raise CorpusError(
            f"token id {int(ids.max())} in {root} is outside model.vocab_size ({vocab_size}): "
            "the shards are damaged or were written by another tokenizer; delete the folder "
            "to rebuild it"
        )
    return ids


def _mfu(model, tokens_per_s_per_device: float, device: torch.device, seq_len: int,
         peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation of one device by the model's helper (``estimate_mfu``: its own
    FLOP count over the device's peak), or None where no peak is known (the CPU unless
    ``logging.peak_flops`` is set, a GPU missing from the table)."""
    if peak_flops is None and device.type != "cuda":
        return None
    try:
        return model.estimate_mfu(tokens_per_s_per_device, device=device, seq_len=seq_len,
                                  peak_flops=peak_flops)
    except ValueError:
        return None
