"""Training throughput of ``training.trainer.train`` against a plain PyTorch loop, and the data
pipeline's throughput against the bare tokenizer.

    python benchmarks/bench_train.py                 # CPU: trainer vs plain loop, data pipeline
    python benchmarks/bench_train.py --gpu           # GPU: bf16 MFU at seq 512, n = 8, 16, 32
    python benchmarks/bench_train.py --data-only     # the data pipeline alone (any machine)

CPU. Both sides train the same model (tiny-cpu preset: depth 2, d = 128, offline BPE of 4096
tokens, 16 sequences of 128 per step as 2 micro-batches of 8, fp32) on the same batches for the
same number of steps. The peer is the loop anyone would write first: ``model(input_ids,
labels=input_ids).loss`` (transformers' cross-entropy), ``loss.backward()``, clipping,
``AdamW.step()``. Ours adds what the recipe and the run folder need (z-loss, LR schedule, data
order, accelerate, metrics, finite-loss check). MFU on a CPU is reported against the measured
fp32 matmul peak of this machine (a 2048^3 GEMM), since no datasheet peak applies.

Data. Tokenise + pack + write shards of the ``python-stdlib`` corpus (offline BPE) from scratch,
against the same tokenizer encoding the same documents with nothing else (the lower bound), plus
the random-access read rate of the memory-mapped shards.

GPU (needs a CUDA device). ``train()`` itself with bf16 autocast, ``torch.compile`` and fused
AdamW at sequence 512 for depths 8, 16 and 32; MFU is the trainer's own (the model's FLOP count,
6 N_matmul + 12 L d T per token, over the device's dense bf16 peak), the median over logged
intervals after compilation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import TrainingConfig  # noqa: E402
from training.data import SequenceOrder, TrainSequences, build_corpus, load_tokenizer  # noqa: E402

WARMUP_STEPS = 5  # the plain loop's first steps (allocator, caches) are left out of its median


def measured_matmul_peak(clock, size: int = 2048, repeats: int = 5) -> float:
    """fp32 GEMM FLOP/s of this machine, the best of ``repeats``, timed by the same clock."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        a @ b
        best = min(best, clock() - start)
    return 2 * size**3 / best


def bench_config(work: Path, steps: int) -> TrainingConfig:
    cfg = TrainingConfig.tiny_cpu().with_overrides([
        f"data.data_dir={work / 'data'}", f"run.output_dir={work / 'runs'}",
        f"run.tokens={steps * 16 * 128}", "checkpoint.every_steps=0", "logging.log_every=5",
        "logging.trackers=[]", "logging.progress_bar=false", "run.name=bench",
    ])
    return cfg.validate()


def run_ours(cfg: TrainingConfig, peak: float, clock) -> dict:
    import types

    from accelerate.state import AcceleratorState, GradientState, PartialState

    import training.trainer as trainer
    from training.trainer import train

    # The trainer times its steps with time.perf_counter; under --clock cpu it reads the
    # process' CPU time instead, like the peer below.
    trainer.time = types.SimpleNamespace(perf_counter=clock, time=time.time)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    cfg = cfg.with_overrides([f"logging.peak_flops={peak}"])
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    try:
        train(cfg)
    finally:
        trainer.time = time
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "tokens_per_s" in r][1:]  # drop the first interval (warmup)
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in records),
            "mfu": statistics.median(r["mfu"] for r in records)}


def run_plain_loop(cfg: TrainingConfig, steps: int, clock) -> dict:
    """The peer: a plain PyTorch loop over the same batches."""
    from training.trainer import build_model

    tokenizer = load_tokenizer(cfg.data.tokenizer)
    model = build_model(cfg, tokenizer.eos_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  eps=cfg.optim.eps, weight_decay=0.0)
    corpus = build_corpus(cfg.data.corpus, tokenizer, tokenizer_name=cfg.data.tokenizer,
                          data_dir=cfg.data.data_dir, seq_len=cfg.data.seq_len,
                          val_sequences=cfg.data.val_sequences, train_tokens=cfg.run.tokens,
                          progress=False)
    data = TrainSequences(corpus)
    order = SequenceOrder(min(len(data), steps * 16), cfg.data.seed)
    times = []
    for step in range(steps):
        start = clock()
        for k in range(2):
            rows = order.indices(step * 16 + k * 8 + np.arange(8))
            batch = torch.from_numpy(data.gather(rows))
            loss = model(input_ids=batch, labels=batch).loss / 2
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(clock() - start)
    per_step = statistics.median(times[WARMUP_STEPS:])
    return {"tokens_per_s": 16 * 128 / per_step}


def bench_data(work: Path, tokens: int) -> dict:
    """Build ``tokens`` training tokens of python-stdlib from scratch, then encode the very
    documents the build consumed with the bare tokenizer (the peer: no streaming, EOS, packing or
    writing)."""
    from training.corpora import CORPORA, iter_documents

    tokenizer = load_tokenizer("offline:4096")
    start = time.perf_counter()
    built = build_corpus("python-stdlib", tokenizer, tokenizer_name="offline:4096",
                         data_dir=work / "data-bench", seq_len=512, val_sequences=64,
                         train_tokens=tokens, progress=False)
    pipeline_s = time.perf_counter() - start
    written = (built.num_train_sequences + built.num_val_sequences) * 512
    consumed = built.index["val"]["documents"] + built.index["train"]["documents"]
    docs = []
    for text in iter_documents(CORPORA["python-stdlib"]):
        docs.append(text)
        if len(docs) == consumed:
            break
    start = time.perf_counter()
    encoded = 0
    for i in range(0, len(docs), 128):
        batch = tokenizer(docs[i:i + 128], add_special_tokens=False, verbose=False)
        encoded += sum(len(ids) for ids in batch["input_ids"])
    tokenizer_s = time.perf_counter() - start
    data = TrainSequences(built)
    order = SequenceOrder(len(data), 0)
    start = time.perf_counter()
    read = 0
    for step in range(200):
        read += data.gather(order.indices(step * 32 + np.arange(32))).size
    read_s = time.perf_counter() - start
    return {"pipeline_tokens_written_per_s": written / pipeline_s,
            "pipeline_tokens_encoded_per_s": (encoded + consumed) / pipeline_s,
            "tokenizer_tokens_per_s": encoded / tokenizer_s,
            "ratio_pipeline_vs_tokenizer": tokenizer_s / pipeline_s,
            "documents": consumed, "tokens_written": written,
            "memmap_random_read_tokens_per_s": read / read_s}


def bench_gpu(work: Path, depths: list[int], steps: int) -> list[dict]:
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from training.trainer import train

    results = []
    for n in depths:
        micro = {8: 64, 16: 32, 32: 16}.get(n, 16)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
        cfg = TrainingConfig.paper(n).with_overrides([
            "data.corpus=python-stdlib", "data.tokenizer=offline:32000", "data.val_sequences=64",
            f"data.data_dir={work / 'data'}", f"run.output_dir={work / 'runs'}",
            f"run.name=gpu-n{n}", f"batch.global_batch_size={micro}",
            f"batch.micro_batch_size={micro}", f"run.tokens={steps * micro * 512}",
            "precision.compile=true", "precision.mixed_precision=bf16", "optim.fused=true",
            "checkpoint.every_steps=0", "logging.log_every=5", "logging.trackers=[]",
            "logging.progress_bar=false",
        ]).validate()
        train(cfg)
        lines = (work / "runs" / f"gpu-n{n}" / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        records = [r for r in records if "tokens_per_s" in r][2:]  # after compilation
        results.append({"n": n, "micro_batch": micro,
                        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in records),
                        "mfu": statistics.median(r["mfu"] for r in records)})
    return results


def environment() -> dict:
    import accelerate
    import transformers

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "machine": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average": load,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--data-only", action="store_true",
                        help="only the data pipeline (CPU work: on a GPU machine, its host's rate)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-tokens", type=float, default=2e6)
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="CPU: time steps by the process' CPU time (robust when other jobs "
                        "share the cores; use with OMP_NUM_THREADS=1); wall: elapsed time")
    args = parser.parse_args()
    # The trainer logs every 5 steps; the first interval (two on a GPU: compilation) is not
    # timed, and the plain loop leaves out its first WARMUP_STEPS.
    minimum = 15 if args.gpu else 10
    if args.steps <= minimum:
        parser.error(f"--steps must be above {minimum} (warm-up steps are not timed)")
    env = environment()
    print(json.dumps(env))
    result = {"environment": env}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.data_only:
            result["data"] = bench_data(work, int(args.data_tokens))
            print(json.dumps(result, indent=1))
        elif args.gpu:
            result["gpu"] = bench_gpu(work, args.depths, args.steps)
            for row in result["gpu"]:
                print(f"n={row['n']:>2} micro-batch {row['micro_batch']:>3}: "
                      f"{row['tokens_per_s']:,.0f} tokens/s, MFU {row['mfu']:.1%}")
        else:
            clock = time.process_time if args.clock == "cpu" else time.perf_counter
            peak = measured_matmul_peak(clock)
            cfg = bench_config(work, args.steps)
            ours, peer = [], []
            for _ in range(args.repeats):  # alternate, so that load changes hit both sides
                peer.append(run_plain_loop(cfg, args.steps, clock))
                ours.append(run_ours(cfg, peak, clock))
            mine = statistics.median(r["tokens_per_s"] for r in ours)
            theirs = statistics.median(r["tokens_per_s"] for r in peer)
            result["cpu"] = {"clock": args.clock, "matmul_peak_flops": peak,
                             "ours_tokens_per_s": mine,
                             "ours_mfu_vs_matmul_peak": statistics.median(r["mfu"] for r in ours),
                             "plain_loop_tokens_per_s": theirs, "ratio": mine / theirs,
                             "ours_all": [round(r["tokens_per_s"]) for r in ours],
                             "plain_loop_all": [round(r["tokens_per_s"]) for r in peer],
                             "ratio_per_pair": [round(a["tokens_per_s"] / b["tokens_per_s"], 3)
                                                for a, b in zip(ours, peer, strict=True)]}
            result["data"] = bench_data(work, int(args.data_tokens))
            print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
