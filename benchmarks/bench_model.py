"""Training throughput of L2LForCausalLM: against transformers' Olmo2ForCausalLM on CPU, MFU on GPU.

CPU mode (default): forward + backward tokens/s of ``L2LForCausalLM`` and of transformers'
``Olmo2ForCausalLM`` at a matched size: same width d = 64 n, depth n, n heads, vocabulary 32000,
sequence 512, both with SDPA attention, fp32; Olmo2's SwiGLU MLP (three d x i matrices) gets
``i = round(8 d / 3)`` so that its 3 d i weights match our 2 d (4 d). The two models alternate
within each round (which one goes first alternates too) and each round keeps each model's fastest
step, so load from other processes drifting over the run hits both alike; the reported ratio is
the median of the per-round ratios.

    python benchmarks/bench_model.py                     # n = 4, 8 rounds
    python benchmarks/bench_model.py --depths 4 8 --rounds 10

GPU mode: MFU of a full training step (forward, backward, fused AdamW) in bf16 autocast at
sequence 512 with ``torch.compile``, for n = 8, 16, 32, from ``model.estimate_mfu`` (peak FLOP/s
by device name). Add ``--compare-olmo2`` for the same step with Olmo2ForCausalLM, and ``--json
PATH`` to also write the measurements (device, versions, and per depth and model: MFU, tokens/s,
batch size, peak memory) as JSON.

    python benchmarks/bench_model.py --gpu --depths 8 16 32 --compare-olmo2 --json mfu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import torch
import transformers
from transformers import Olmo2Config, Olmo2ForCausalLM

from modeling_l2l import L2LConfig, L2LForCausalLM, peak_flops_for_device

SEQ_LEN = 512
VOCAB_SIZE = 32000


def l2l_model(n: int) -> L2LForCausalLM:
    return L2LForCausalLM(L2LConfig.from_depth(n, attn_implementation="sdpa"))


def olmo2_model(n: int) -> Olmo2ForCausalLM:
    d = 64 * n
    config = Olmo2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=d,
        intermediate_size=round(8 * d / 3),  # 3 d i = 8 d^2: the FLOPs of our d -> 4d -> d MLP
        num_hidden_layers=n,
        num_attention_heads=n,
        max_position_embeddings=SEQ_LEN,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=None,
        eos_token_id=2,
        attn_implementation="sdpa",
    )
    return Olmo2ForCausalLM(config)


def matmul_params(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def train_step_seconds(model, batch: torch.Tensor, steps: int) -> tuple[float, float]:
    """Fastest of ``steps`` forward + backward steps: (wall-clock seconds, CPU seconds).

    The fastest step, not the mean: on a shared machine, other processes only ever add time. CPU
    seconds (this process's, all threads) barely see other processes at one thread; at several
    threads they also count OpenMP's spin-waiting, so wall-clock is then the measure.
    """
    wall, cpu = [], []
    for _ in range(steps):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        model(batch, labels=batch, use_cache=False).loss.backward()
        model.zero_grad(set_to_none=True)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"


def run_cpu(depths: list[int], rounds: int, steps: int, batch_size: int) -> None:
    print(f"# CPU forward+backward, seq {SEQ_LEN}, batch {batch_size}, fp32, sdpa")
    print(
        f"# {datetime.date.today()} | torch {torch.__version__} | transformers "
        f"{transformers.__version__} | {machine_description()}"
    )
    print(f"# load average before: {os.getloadavg()}")
    for n in depths:
        torch.manual_seed(0)
        models = {"L2L": l2l_model(n).train(), "Olmo2": olmo2_model(n).train()}
        batch = torch.randint(0, VOCAB_SIZE, (batch_size, SEQ_LEN))
        for name, model in models.items():
            train_step_seconds(model, batch, 1)  # warm-up: allocator, kernels
            print(
                f"n={n} {name}: {model.num_parameters():,} params, "
                f"{matmul_params(model):,} matmul params"
            )
        tokens = batch_size * SEQ_LEN
        wall_ratios, cpu_ratios, wall_tps = [], [], {name: [] for name in models}
        for r in range(rounds):
            order = list(models) if r % 2 == 0 else list(reversed(models))
            seconds = {name: train_step_seconds(models[name], batch, steps) for name in order}
            for name in models:
                wall_tps[name].append(tokens / seconds[name][0])
            wall_ratios.append(seconds["Olmo2"][0] / seconds["L2L"][0])
            cpu_ratios.append(seconds["Olmo2"][1] / seconds["L2L"][1])
            print(
                f"  round {r}: L2L {wall_tps['L2L'][-1]:.0f} tok/s, Olmo2 "
                f"{wall_tps['Olmo2'][-1]:.0f} tok/s, ratio {wall_ratios[-1]:.3f} "
                f"(CPU-time ratio {cpu_ratios[-1]:.3f}, load {os.getloadavg()[0]:.2f})"
            )
        median = {name: statistics.median(v) for name, v in wall_tps.items()}
        print(
            f"n={n}: median L2L {median['L2L']:.0f} tok/s, Olmo2 {median['Olmo2']:.0f} tok/s; "
            f"median per-round ratio L2L/Olmo2: wall-clock {statistics.median(wall_ratios):.3f} "
            f"(min {min(wall_ratios):.3f}, max {max(wall_ratios):.3f}), CPU time "
            f"{statistics.median(cpu_ratios):.3f} (min {min(cpu_ratios):.3f}, "
            f"max {max(cpu_ratios):.3f})"
        )
    print(f"# load average after: {os.getloadavg()}")


def gpu_batch_size(n: int) -> int:
    # micro-batch that fits 80 GB with fp32 weights + AdamW state and bf16 activations
    return {8: 32, 16: 16, 32: 8}.get(n, max(4, 256 // n))


def gpu_tokens_per_second(model: torch.nn.Module, batch_size: int, steps: int) -> float:
    """Tokens/s of compiled training steps: bf16 autocast forward, backward, fused AdamW."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    compiled = torch.compile(model)
    batch = torch.randint(0, VOCAB_SIZE, (batch_size, SEQ_LEN), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = compiled(batch, labels=batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # compile and warm up
        step()
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    return batch_size * SEQ_LEN * steps / (time.perf_counter() - start)


def run_gpu(
    depths: list[int],
    steps: int,
    compare_olmo2: bool,
    batch_size: int | None,
    json_path: str | None = None,
) -> None:
    """One line per depth and model; ``json_path`` gets the same numbers, rewritten after each
    measurement so that a run stopped part-way (a timeout, out of memory at n = 32) keeps the
    depths it finished."""
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device)
    peak = peak_flops_for_device(name)
    if peak is None:
        raise SystemExit(f"GPU {name!r} is not in PEAK_FLOPS_BY_DEVICE: no MFU without its peak")
    print(f"# GPU training step (fwd+bwd+AdamW), seq {SEQ_LEN}, bf16 autocast, torch.compile")
    print(
        f"# {datetime.date.today()} | torch {torch.__version__} | transformers "
        f"{transformers.__version__} | {name} (peak {peak / 1e12:.0f} TFLOP/s bf16)"
    )
    builders = {"L2L": l2l_model, "Olmo2": olmo2_model} if compare_olmo2 else {"L2L": l2l_model}
    results = {
        "device": name,
        "peak_flops": peak,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "seq_len": SEQ_LEN,
        "steps": steps,
        "models": {label: {} for label in builders},  # label -> str(n) -> measurements
    }
    for n in depths:
        bs = batch_size or gpu_batch_size(n)
        for label, build in builders.items():
            torch.manual_seed(0)
            model = build(n).to(device).train()
            tokens_per_second = gpu_tokens_per_second(model, bs, steps)
            if isinstance(model, L2LForCausalLM):
                mfu = model.estimate_mfu(tokens_per_second, peak_flops=peak)
            else:  # the same convention, 6 N_matmul + 12 L d T, for Olmo2
                flops = 6 * matmul_params(model) + 12 * n * 64 * n * SEQ_LEN
                mfu = tokens_per_second * flops / peak
            memory = torch.cuda.max_memory_allocated(device) / 2**30
            print(
                f"n={n} {label}: batch {bs}, {tokens_per_second:,.0f} tok/s, MFU {mfu:.1%}, "
                f"peak memory {memory:.1f} GiB"
            )
            results["models"][label][str(n)] = {
                "mfu": mfu,
                "tokens_per_s": tokens_per_second,
                "batch_size": bs,
                "peak_memory_gib": memory,
            }
            if json_path:
                with open(json_path, "w") as f:
                    json.dump(results, f, indent=1)
            del model
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="MFU mode on a CUDA GPU")
    parser.add_argument(
        "--depths",
        type=int,
        nargs="+",
        default=None,
        help="model depths n (default: 4 on CPU, 8 16 32 on GPU)",
    )
    parser.add_argument("--rounds", type=int, default=8, help="CPU: interleaved rounds")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps per measurement (default: 3 on CPU, 20 on GPU)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sequences per step (default: 1 on CPU, by depth on GPU)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU: torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--compare-olmo2", action="store_true", help="GPU: also time Olmo2")
    parser.add_argument("--json", help="GPU: also write the measurements as JSON to this path")
    args = parser.parse_args()
    if args.json and not args.gpu:
        parser.error("--json records the GPU mode's measurements: use it with --gpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device")
        depths = args.depths or [8, 16, 32]
        run_gpu(depths, args.steps or 20, args.compare_olmo2, args.batch_size, args.json)
    else:
        run_cpu(args.depths or [4], args.rounds, args.steps or 3, args.batch_size or 1)


if __name__ == "__main__":
    main()
