"""``python -m training`` and ``accelerate launch -m training``: train one run.

    python -m training --preset tiny-cpu
    python -m training --config run.yaml optim.lr=3e-4 batch.micro_batch_size=8
    accelerate launch --config_file training/launch/ddp.yaml -m training --config run.yaml --resume
"""

from __future__ import annotations

import argparse
import sys

from training.config import PRESETS, ConfigError, TrainingConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="training config YAML")
    source.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run folder's latest complete checkpoint")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4")
    return parser


def load_config(args: argparse.Namespace) -> TrainingConfig:
    if args.config:
        cfg = TrainingConfig.from_yaml(args.config)
    elif args.preset:
        cfg = PRESETS[args.preset]()
    else:
        raise ConfigError("give a config file (--config FILE) or a preset (--preset NAME)")
    cfg = cfg.with_overrides(args.overrides)
    if args.resume:
        cfg.checkpoint.resume = True
    return cfg.validate()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    try:
        cfg = load_config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    from training.checkpoint import CheckpointError
    from training.corpora import CorpusError
    from training.run_lock import RunLockedError
    from training.trainer import NonFiniteLossError, OutOfMemoryError, train

    try:
        train(cfg)
    except (ConfigError, CorpusError, FileExistsError, CheckpointError, RunLockedError,
            OutOfMemoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
