"""``python -m evaluation``: held-out losses and downstream tasks into a tidy results table.

One model::

    python -m evaluation --model runs/study/L2L_c4_N2.0e07_D4.0e08_C4.8e16 \\
        --tasks l2l,ladder --losses fineweb-100b,c4 --out results.jsonl

Every finished run of a study (resumable: rows already in ``--out`` are skipped)::

    python -m evaluation --study runs/study --tasks l2l --losses c4 --out results.jsonl
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from training.run_lock import LockHeldError

from .downstream import FAMILIES
from .losses import DEFAULT_LOSS_TOKENS
from .model_io import ModelLoadError
from .results import ResultsTable, writing
from .runner import EvalConfig, evaluate_model, evaluate_study
from .tasks import TASK_GROUPS, TASKS


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _one_line(error) -> str:
    """An error as one line: messages passed on from transformers or torch may span several."""
    return re.sub(r"\s*\n\s*", " ", str(error)).strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"tasks: {', '.join(TASKS)}\ngroups: {', '.join(TASK_GROUPS)}",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--model", help="save_pretrained folder, run folder, released run name or Hub id"
    )
    what.add_argument("--study", help="study folder: evaluate every run holding final.json")
    p.add_argument("--out", required=True, help="results table (.jsonl or .csv), appended to")
    p.add_argument("--tasks", type=_list, default=[], help="comma-separated tasks or groups")
    p.add_argument(
        "--families",
        type=_list,
        default=list(FAMILIES),
        help=f"task metric families, of {', '.join(FAMILIES)} (default: both)",
    )
    p.add_argument(
        "--losses",
        type=_list,
        default=[],
        help="held-out corpora: names (fineweb-100b, c4, ...; paper = the six training corpora "
        "+ c4; own = the run's corpus), files, .npy token streams, optionally key=source",
    )
    p.add_argument(
        "--loss-tokens",
        type=int,
        default=DEFAULT_LOSS_TOKENS,
        help="held-out tokens per corpus: the first LOSS_TOKENS // seq_len sequences (default "
        "%(default)s; a row's n counts the tokens predicted, seq_len - 1 per sequence)",
    )
    p.add_argument("--data-dir", help="training's tokenized-shard folder (default: the run's)")
    p.add_argument("--val-sequences", type=int, help="held-out split size (default: the run's)")
    p.add_argument("--task-data", help="folder of local task files (see evaluation.task_data)")
    p.add_argument("--no-hub", action="store_true", help="never download task data from the Hub")
    p.add_argument(
        "--limit", type=int, help="first N >= 1 questions per task split (quick looks: own --out)"
    )
    p.add_argument(
        "--tokenizer", help="tokenizer (Hub id, folder or offline:V) if not beside the model"
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument("--batch-tokens", type=int, default=8192, help="tokens per forward pass")
    p.add_argument(
        "--pair-encoding",
        choices=("separate", "joint"),
        default="separate",
        help="separate: OLMo in-loop evaluator (the papers); joint: lm-eval",
    )
    p.add_argument("--add-bos", action="store_true", help="prepend BOS to contexts (papers: no)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument(
        "--lm-eval-tasks",
        type=_list,
        default=[],
        help="lm-eval task names run through our scorer (our pack: l2l_*)",
    )
    p.add_argument("--lm-eval-include", help="extra folder of lm-eval task YAMLs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = EvalConfig(
            tasks=args.tasks,
            families=tuple(args.families),
            losses=args.losses,
            loss_tokens=args.loss_tokens,
            data_dir=args.data_dir,
            val_sequences=args.val_sequences,
            task_data=args.task_data,
            allow_hub=not args.no_hub,
            limit=args.limit,
            tokenizer=args.tokenizer,
            device=args.device,
            dtype=args.dtype,
            max_batch_tokens=args.batch_tokens,
            pair_encoding=args.pair_encoding,
            add_bos=args.add_bos,
            trust_remote_code=args.trust_remote_code,
            lm_eval_tasks=args.lm_eval_tasks,
            lm_eval_include=args.lm_eval_include,
            progress=not args.quiet,
        )
        table = ResultsTable(args.out)  # first: a file that is not a table is refused as such
        with writing(args.out):
            if args.study:
                failures = evaluate_study(args.study, cfg, table)
            else:
                failures = evaluate_model(args.model, cfg, table)
    except (ValueError, OSError, ModelLoadError, LockHeldError) as err:
        # OSError: a results table that cannot be written (disk full, permissions), besides the
        # FileNotFoundError of a missing folder; every row before it is in the table.
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Rows are appended and fsync'ed as each metric is computed: nothing finished is lost.
        print(f"interrupted: the rows computed so far are in {args.out}; run the same command "
              "again to compute only what is missing", file=sys.stderr)
        return 130
    for f in failures:
        print(f"FAILED {f.run}: {f.what}: {_one_line(f.error)}", file=sys.stderr)
    if table.path.exists():
        print(f"{len(table.rows)} rows in {table.path}", file=sys.stderr)
    else:  # e.g. a study with no finished run yet
        print(f"nothing evaluated: {table.path} was not written", file=sys.stderr)
    return 1 if failures else 0
