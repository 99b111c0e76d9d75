"""python -m analysis.reproduce {l2l,gadre,ladder,chinchilla} --data DIR --out DIR [--given GIVEN.csv]
[--max-flops C]

``--given GIVEN.csv`` (l2l only): columns ``data,val_loss``, the measured val_loss of the depth-40
1e21-FLOP run on one or more corpora; also writes ``given_predictions.csv``, that run's val_loss
on every other corpus from each given one (train-to-train, the paper's law and calibrated) and
from all of them combined (``analysis.reproduce.l2l``, item 6).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from analysis.paths import check_out_folder, exit_if_shadowed
from analysis.reproduce import PAPERS, reproduce
from analysis.testbeds import TestbedUnavailableError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.reproduce",
        description="Reproduce a paper's fits from its released data: CSV tables, PNG figures, "
        "and a printout beside the paper's numbers.",
    )
    parser.add_argument(
        "paper", choices=sorted(PAPERS), help="; ".join(f"{k}: {v}" for k, v in PAPERS.items())
    )
    parser.add_argument(
        "--data",
        default=None,
        help="folder with the paper's released data (default: download from its repository)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: reproduce-<paper>)")
    parser.add_argument(
        "--given",
        default=None,
        metavar="GIVEN.csv",
        help="l2l only: CSV with columns data,val_loss, the measured val_loss of the depth-40 "
        "1e21-FLOP run on one or more corpora; writes given_predictions.csv (columns data, "
        "source, method, prediction, lower, upper): that run's val_loss on every other corpus, "
        "from each given source by the paper's train-to-train law (method paper) and calibrated "
        "on nested backtests (calibrated), and from all sources combined (source all, method "
        "multi_source), with 90%% prediction intervals",
    )
    parser.add_argument(
        "--max-flops",
        default=None,
        type=float,
        metavar="C",
        help="l2l only: fit every law of the reproduction on the runs of at most C FLOPs "
        "(e.g. 1e19), to backtest its outputs, decisions_1e21.csv among them, from a smaller "
        "grid; at least 5 of the sweep's budgets must remain",
    )
    args = parser.parse_args(argv)
    # The reproductions import the package on first use: a folder ./analysis breaks them.
    exit_if_shadowed("analysis", code=1)
    start = time.perf_counter()
    out = args.out or f"reproduce-{args.paper}"
    try:
        given = None
        for flag, value in (("--given", args.given), ("--max-flops", args.max_flops)):
            if value is not None and args.paper != "l2l":
                raise ValueError(f"{flag} applies to l2l only, not {args.paper}")
        if args.max_flops is not None and not (math.isfinite(args.max_flops) and args.max_flops > 0):
            raise ValueError(f"--max-flops must be a positive number of FLOPs, got {args.max_flops}")
        if args.given is not None:
            from analysis.reproduce import l2l

            given = l2l.read_given(args.given)  # before the fits, as --out
        check_out_folder(out)  # before the fits, which may take minutes
        if given is not None or args.max_flops is not None:
            from analysis.reproduce import l2l

            result = l2l.reproduce(args.data, out, given=given, max_flops=args.max_flops)
        else:
            result = reproduce(args.paper, args.data, out)
    except (OSError, ValueError, TestbedUnavailableError) as error:  # OSError: e.g. --out a file
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.text)
    written = [*result.tables, *(p.name for p in result.figures)]
    print(f"wrote {', '.join(written)} to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
