"""python -m analysis.reproduce {l2l,gadre,ladder,chinchilla} --data DIR --out DIR"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)
    # The reproductions import the package on first use: a folder ./analysis breaks them.
    exit_if_shadowed("analysis", code=1)
    start = time.perf_counter()
    out = args.out or f"reproduce-{args.paper}"
    try:
        check_out_folder(out)  # before the fits, which may take minutes
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
