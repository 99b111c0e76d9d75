"""``l2l release STUDY [--dry-run | --repo-id ORG/NAME]``: the command line of the release.

It imports nothing heavy until the arguments are parsed, so ``--help`` answers at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2l.layout import RELEASE_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2l release",
        description="Write a finished study as a Hub repository laid out like the loss-to-loss "
        "paper's (one folder per run, model cards, the results table and the fitted laws) "
        "and, with --repo-id, push it. A rerun uploads only what the Hub lacks.",
    )
    parser.add_argument("study", type=Path, help="the study folder")
    parser.add_argument("--repo-id", default=None, metavar="ORG/NAME",
                        help="Hub repository to push to (created if needed); without it the "
                        "folder is only written")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="write the release folder and list it; upload nothing")
    parser.add_argument("--private", action="store_true",
                        help="create the repository private (an existing one keeps its setting)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help=f"release folder (default STUDY/{RELEASE_DIR})")
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Carry out parsed ``l2l release`` arguments; 0 on success, 2 with ``error: ...`` on stderr."""
    from huggingface_hub.errors import HfHubHTTPError

    from l2l.release.build import build_release, describe_release
    from l2l.release.push import check_repo_id, push_release

    try:
        if args.repo_id is not None:
            check_repo_id(args.repo_id)
        if args.dry_run or args.repo_id is None:
            folder = build_release(args.study, args.out, repo_id=args.repo_id, progress=True)
            print(describe_release(folder))
            if args.repo_id is None:
                print("(not pushed: give --repo-id ORG/NAME to upload it)")
            return 0
        summary = push_release(args.study, args.repo_id, private=args.private, out=args.out)
    except (ValueError, OSError, RuntimeError, HfHubHTTPError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to upload the rest", file=sys.stderr)
        return 130
    print(f"{summary['url']} ({summary['revision']}): uploaded {len(summary['uploaded'])} "
          f"runs, skipped {len(summary['skipped'])} already there; top-level files "
          f"{summary['top_level']}")  # fmt: skip
    for run, why in summary["left_out"].items():
        print(f"  left out {run}: {why}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser().parse_args(argv))
