"""The studies that ship with l2l, as ``StudySpec`` instances (the same class a user's YAML
becomes): two that run on a laptop CPU, offline, from files every Python installation has, and
the two papers' studies, which need GPUs, the Hub and the gated Llama-2 tokenizer (README).

``l2l plan --preset NAME --print-config`` prints any of them as YAML, to copy and edit.
"""

from __future__ import annotations

import difflib

from analysis.locations import LLAMA2_TOKENIZER
from l2l.spec import Evaluation, Grid, Launch, Prediction, Shape, StudySpec, Target
from training.config import TrainingConfig
from training.sweep import LADDER_MULTIPLIERS, PAPER_BUDGETS, PAPER_RATIO_RANGE, PAPER_SWEEP_DEPTHS


def _offline_recipe(vocab_size: int, batch: int) -> TrainingConfig:
    """The recipe of the CPU studies: tiny-cpu's, with a 128-token context; peak learning rate
    5e-3 at width 64 (scaled by 1/sqrt(width / 64)), warmup 10%, cosine to 10%. Runs of a minute
    or two: a checkpoint every 500 steps (every 50 cost more than the steps themselves), no
    trackers, no progress bar (the launcher draws one)."""
    recipe = TrainingConfig.tiny_cpu()
    recipe.model.vocab_size = vocab_size
    recipe.data.seq_len = 128
    recipe.data.val_sequences = 64
    recipe.batch.global_batch_size = batch
    recipe.batch.micro_batch_size = batch
    recipe.optim.lr = 5e-3
    recipe.schedule.warmup_fraction = 0.1
    recipe.schedule.final_lr_fraction = 0.1
    recipe.logging.trackers = []
    recipe.logging.log_every = 50
    recipe.logging.progress_bar = False
    recipe.checkpoint.every_steps = 500
    return recipe.validate()


def _gpu_recipe(recipe: TrainingConfig, *, seq_len: int, micro_batch_size: int,
                val_sequences: int) -> TrainingConfig:
    recipe.model.vocab_size = 32000
    recipe.data.tokenizer = LLAMA2_TOKENIZER
    recipe.data.seq_len = seq_len
    recipe.data.val_sequences = val_sequences
    recipe.batch.micro_batch_size = micro_batch_size
    recipe.logging.progress_bar = False
    return recipe.validate()


# What the paper studies share: the paper's corpus, tokenizer and launcher, and full task splits.
_ON_GPUS = dict(
    corpora={"fineweb-edu-100b": "fineweb-edu-100b"},
    tokenizer=LLAMA2_TOKENIZER,
    launch=Launch(launcher="slurm"),
    needs=["GPUs under slurm", "the Hugging Face Hub (FineWeb-Edu)",
           "the gated Llama-2 tokenizer (accept its licence, then `hf auth login`)"],
)
_OFFLINE_CORPORA = {"python-stdlib": "python-stdlib", "python-prose": "python-prose"}


def _presets() -> dict[str, StudySpec]:
    presets = [
        StudySpec(
            name="tiny",
            description="code (the standard library's sources) against English prose (its "
            "docstrings, comments and help topics): 6 shapes at 6 budgets over a decade of "
            "compute, the iso-FLOP points with 2 < D/N < 200 as in the loss-to-loss paper's "
            "sweep (16 runs per corpus), and a two-layer width-128 run at 3x the largest budget "
            "that the fits never see; about 7 minutes on 2 CPU cores, offline",
            corpora=dict(_OFFLINE_CORPORA),
            # A small vocabulary: the embeddings are most of a tiny model's parameters, and with
            # fewer of them the runs reach the tokens per parameter the papers fit on a CPU's
            # budget; models deeper than wide at width 64 fill the small budgets.
            tokenizer="bpe:384",
            grid=Grid(shapes=[Shape(64, layers) for layers in (1, 2, 3, 4)]
                      + [Shape(128, 1), Shape(128, 2)],
                      budgets=[1.25e11, 2e11, 3.2e11, 5.12e11, 8.19e11, 1.31e12],
                      tokens_per_param_range=PAPER_RATIO_RANGE),
            targets=[Target(Shape(128, 2), flop_budget=3.9e12)],
            recipe=_offline_recipe(384, batch=16),
            scaling="inverse-sqrt-width",
        ),
        StudySpec(
            name="smoke",
            description="the tiny study cut to its bones (3 shapes x 2 budgets per corpus, one "
            "target): every stage and artefact in about a minute; its fits are not meaningful",
            corpora=dict(_OFFLINE_CORPORA),
            tokenizer="bpe:2048",
            tokenizer_sample_bytes=400_000,
            grid=Grid(shapes=[Shape(64, 1), Shape(64, 2), Shape(128, 1)], budgets=[5e10, 1e11]),
            targets=[Target(Shape(128, 2), flop_budget=2e11)],
            recipe=_offline_recipe(2048, batch=4),
            scaling="inverse-sqrt-width",
            evaluation=Evaluation(tasks=["arc_easy"], task_limit=20, loss_tokens=16 * 128),
            prediction=Prediction(bootstrap=20),
        ),
        StudySpec(
            name="paper-fineweb-edu",
            description="the loss-to-loss paper's sweep on FineWeb-Edu (depths 4-32 at 2e17 to "
            "4.84e19 FLOPs, 2 < D/N < 200) and its depth-40 run at 1e21 FLOPs as the target",
            grid=Grid(shapes=[Shape.paper(n) for n in PAPER_SWEEP_DEPTHS],
                      budgets=list(PAPER_BUDGETS), tokens_per_param_range=PAPER_RATIO_RANGE),
            targets=[Target(Shape.paper(40), flop_budget=1e21)],
            recipe=_gpu_recipe(TrainingConfig.paper(), seq_len=512, micro_batch_size=16,
                               val_sequences=2048),
            evaluation=Evaluation(tasks=["l2l"], task_limit=None, loss_tokens=2048 * 512),
            **_ON_GPUS,
        ),
        StudySpec(
            name="olmo-ladder",
            description="an OLMo-ladder study on FineWeb-Edu: depths 4, 8, 12, 16 at 0.5 to 10 "
            "x Chinchilla tokens, the deepest at 10x held out as the target",
            grid=Grid(shapes=[Shape.paper(n) for n in (4, 8, 12, 16)],
                      tokens_per_param=[20 * m for m in LADDER_MULTIPLIERS]),
            targets=[Target(Shape.paper(16), tokens_per_param=20 * LADDER_MULTIPLIERS[-1])],
            recipe=_gpu_recipe(TrainingConfig.olmo_ladder(4), seq_len=2048, micro_batch_size=8,
                               val_sequences=1024),
            scaling="olmo-ladder",
            evaluation=Evaluation(tasks=["ladder"], task_limit=None, loss_tokens=1024 * 2048),
            **_ON_GPUS,
        ),
    ]
    return {spec.name: spec.check() for spec in presets}


PRESETS: dict[str, StudySpec] = _presets()


def get_preset(name: str) -> StudySpec:
    """A fresh copy of the preset of that name; an unknown name is a ``ValueError`` listing the
    known ones."""
    if name in PRESETS:
        return StudySpec.from_dict(PRESETS[name].to_dict())
    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown study preset {name!r}{hint}; known: {', '.join(PRESETS)}")
