"""Study presets: what a whole study trains, evaluates and predicts, as one typed record.

A study is a grid of small runs on each corpus, which the laws are fitted on, and a few larger
*target* runs, trained and evaluated like the others but never fitted: the laws predict them and
the report sets each prediction beside the measured loss. The two offline presets run on a
laptop CPU from files every Python installation has; the paper presets need GPUs, the Hub and
the gated Llama-2 tokenizer (see the README).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from analysis.locations import LLAMA2_TOKENIZER

HEAD_DIM = 64  # the paper's heads: width 64 n split into n heads


@dataclass(frozen=True)
class Shape:
    """A model of width ``64 n`` (``n`` heads of 64) and ``layers`` decoder blocks."""

    n: int
    layers: int

    @property
    def width(self) -> int:
        return HEAD_DIM * self.n


@dataclass(frozen=True)
class Target:
    """A larger run the fits never see, at a budget above the grid's."""

    shape: Shape
    flop_budget: float


@dataclass(frozen=True)
class StudyPreset:
    name: str
    description: str
    corpora: tuple[str, ...]
    """Training corpora (``training.corpora`` names or local paths); the first is the source
    of the loss-to-loss translations."""
    shapes: tuple[Shape, ...] = ()
    """Grid shapes, each trained at every budget; empty for the paper presets, whose grid is
    the planner's (``grid``)."""
    budgets: tuple[float, ...] = ()
    """FLOP budgets C of the grid; D = C / (6 N)."""
    targets: tuple[Target, ...] = ()
    grid: str = "shapes"
    """``shapes`` (the lists above) or a ``training.sweep`` grid: ``loss-to-loss``, ``ladder``."""
    training_preset: str = "tiny-cpu"
    """The recipe (``training.config.PRESETS``) every run starts from."""
    tokenizer: str = "offline:2048"
    vocab_size: int = 2048
    seq_len: int = 128
    global_batch_size: int = 4
    micro_batch_size: int = 4
    val_sequences: int = 64
    peak_lr: float = 5e-3
    """AdamW peak learning rate at n = 1; a run of width 64 n gets ``peak_lr / sqrt(n)``."""
    warmup_fraction: float = 0.1
    final_lr_fraction: float = 0.1
    training_overrides: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ("arc_easy",)
    """Downstream tasks (zero-shot test loss and accuracy)."""
    task_limit: int | None = 100
    loss_tokens: int = 64 * 128
    """Held-out tokens per corpus and model."""
    bootstrap: int = 200
    """Bootstrap resamples of every fit, for the 90% prediction intervals."""
    launcher: str = "local"
    workers: int = 2
    """Runs trained at once with the local launcher (one single-thread process each)."""
    needs: tuple[str, ...] = field(default=())
    """What the preset needs beyond this package, for the README and --dry-run."""


_TINY_SHAPES = (Shape(1, 1), Shape(1, 2), Shape(2, 1), Shape(2, 2))
# What the paper presets share: the paper's corpus, tokenizer and launcher, and full task splits.
_ON_GPUS = dict(
    corpora=("fineweb-edu-100b",),
    tokenizer=LLAMA2_TOKENIZER,
    vocab_size=32000,
    task_limit=None,
    launcher="slurm",
    needs=("GPUs under slurm", "the Hugging Face Hub (FineWeb-Edu)",
           "the gated Llama-2 tokenizer (accept its licence, then `hf auth login`)"),
)

PRESETS: dict[str, StudyPreset] = {
    preset.name: preset
    for preset in (
        StudyPreset(
            name="tiny",
            description="code (the standard library's sources) against English prose (its "
            "docstrings, comments and help topics): 4 shapes x 3 budgets per corpus, and a "
            "width-192 two-layer run at 6e12 FLOPs that the fits never see; about 10 minutes "
            "on 2 CPU cores, offline",
            corpora=("python-stdlib", "python-prose"),
            shapes=_TINY_SHAPES,
            budgets=(2e11, 6.3e11, 2e12),
            targets=(Target(Shape(3, 2), 6e12),),
        ),
        StudyPreset(
            name="smoke",
            description="the tiny study cut to its bones (3 shapes x 2 budgets per corpus, one "
            "target): every stage and artefact in about a minute; its fits are not meaningful",
            corpora=("python-stdlib", "python-prose"),
            shapes=(Shape(1, 1), Shape(1, 2), Shape(2, 1)),
            budgets=(5e10, 1e11),
            targets=(Target(Shape(2, 2), 2e11),),
            val_sequences=16,
            loss_tokens=16 * 128,
            tasks=("arc_easy",),
            task_limit=20,
            bootstrap=20,
        ),
        StudyPreset(
            name="paper-fineweb-edu",
            description="the loss-to-loss paper's sweep on FineWeb-Edu (depths 4-32 at 2e17 to "
            "4.84e19 FLOPs, 2 < D/N < 200) and its depth-40 run at 1e21 FLOPs as the target",
            grid="loss-to-loss",
            training_preset="paper",
            seq_len=512,
            global_batch_size=1024,
            micro_batch_size=16,
            val_sequences=2048,
            tasks=("l2l",),
            loss_tokens=2048 * 512,
            **_ON_GPUS,
        ),
        StudyPreset(
            name="olmo-ladder",
            description="an OLMo-ladder study on FineWeb-Edu: depths 4, 8, 12, 16 at 0.5 to 10 "
            "x Chinchilla tokens, the deepest at 10x as the target",
            grid="ladder",
            training_preset="olmo-ladder",
            seq_len=2048,
            global_batch_size=256,
            micro_batch_size=8,
            val_sequences=1024,
            tasks=("ladder",),
            loss_tokens=1024 * 2048,
            **_ON_GPUS,
        ),
    )
}


def get_preset(name: str) -> StudyPreset:
    """The preset of that name; an unknown name is a ``ValueError`` listing the known ones."""
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown study preset {name!r}{hint}; known: {', '.join(PRESETS)}")
