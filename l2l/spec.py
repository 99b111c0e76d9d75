"""A study as one typed record: what it trains, evaluates and predicts (``StudySpec``).

A study is a grid of small runs on each corpus, which the laws are fitted on, and a few larger
*target* runs, trained and evaluated like the others but never fitted: the laws predict them and
the report sets each prediction beside the measured value. ``StudySpec`` is the single source
of truth of a study, as ``TrainingConfig`` is of a run: the presets (``l2l.presets``) are
instances of it, a YAML file round-trips it (``l2l plan --preset NAME --print-config`` prints
one to copy and edit; ``l2l study --config STUDY.yaml`` runs it), and ``l2l plan`` records it
in the study folder, from which every later stage reads it. For example::

    name: my-corpora
    corpora:                       # label (in run names) -> source
      web: ~/data/web.jsonl.gz     # .txt, .jsonl, .jsonl.gz, .jsonl.zst, .parquet, or a folder
      papers: hf://datasets/ORG/NAME:CONFIG
    tokenizer: bpe:2048            # trained on a sample of every corpus (or a Hub id, a folder)
    grid:
      shapes: [{width: 64, layers: 1}, {width: 128, layers: 2}]
      budgets: [1.0e11, 3.0e11, 1.0e12]   # iso-FLOP: D = C / 6N (or tokens_per_param: ladder)
    targets: [{shape: {width: 192, layers: 2}, flop_budget: 3.0e12}]
    recipe: {optim: {lr: 0.005}}   # the TrainingConfig every run starts from (partial is fine)
    schedule: wsd                  # cosine (each run alone) or wsd (a trunk per shape, branches)

Bad specs are one ``ConfigError`` naming the field and the fix (``StudySpec.check``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from training.config import TrainingConfig
from training.typed_config import ConfigError, from_plain, to_plain

HEAD_DIM = 64  # the paper's heads: every width is a multiple of 64 and has width / 64 heads
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$")  # a corpus label, as run names need it
BPE_PREFIX = "bpe:"
SCALINGS = ("fixed", "inverse-sqrt-width", "olmo-ladder")


@dataclass
class Shape:
    """A model of ``width`` (a multiple of 64: heads of 64) and ``layers`` decoder blocks."""

    width: int
    layers: int

    @classmethod
    def paper(cls, n: int) -> Shape:
        """The paper's shape at depth ``n``: width 64 n, n layers."""
        return cls(HEAD_DIM * n, n)


@dataclass
class Grid:
    """The runs every corpus trains: each shape at each budget (iso-FLOP) or at each number of
    tokens per parameter (a ladder)."""

    shapes: list[Shape] = field(default_factory=list)
    budgets: list[float] = field(default_factory=list)
    """Iso-FLOP budgets C; a run trains D = C / (6 N) tokens (rounded down to whole steps)."""
    tokens_per_param: list[float] = field(default_factory=list)
    """Ladder: D = M N tokens for each multiplier M (and C = 6 N D); instead of budgets."""
    tokens_per_param_range: tuple[float, float] | None = None
    """Iso-FLOP points kept only where lo < D/N < hi (the paper's sweep: 2 to 200)."""
    round_steps: int = 1
    """Steps rounded down to a multiple of this (the paper's runs: 5)."""


@dataclass
class Target:
    """A run larger than the grid's, trained and evaluated like the others, never fitted. A
    target that is also a point of the grid (a ladder's deepest model at its most tokens) is
    held out of the grid."""

    shape: Shape
    flop_budget: float | None = None
    tokens_per_param: float | None = None
    """Instead of ``flop_budget``: D = M N."""


@dataclass
class Evaluation:
    tasks: list[str] = field(default_factory=lambda: ["arc_easy"])
    """Downstream tasks (``evaluation.tasks``), scored zero-shot: test loss and accuracy."""
    task_limit: int | None = 100
    """Questions per task (None: all of them)."""
    loss_tokens: int = 64 * 128
    """Held-out tokens per corpus and model."""


@dataclass
class Prediction:
    level: float = 0.9
    """Level of every interval."""
    bootstrap: int = 200
    """Bootstrap resamples of the paper method's fits."""
    mixed_schedules: bool = False
    """Fit grid runs of different learning-rate schedules together (cosine runs and WSD
    branches); otherwise a grid that mixes them is refused."""


@dataclass
class Launch:
    launcher: Literal["local", "slurm"] = "local"
    workers: int = 2
    """Runs trained at once by the local launcher, one single-thread process each."""
    sbatch_args: list[str] = field(default_factory=list)
    """Extra sbatch options of the slurm launcher, e.g. ``--partition=gpu``."""


@dataclass
class StudySpec:
    name: str
    """The study's name (its default folder: ``studies/NAME``)."""
    corpora: dict[str, str]
    """Label -> source: a registered corpus (``training.corpora``), a file or folder of .txt,
    .jsonl, .jsonl.gz, .jsonl.zst or .parquet files (a .txt file in a folder is one document), or
    ``hf://datasets/ORG/NAME[:CONFIG]``. Labels name the runs; the first corpus is the source of
    the loss-to-loss translations drawn in the report."""
    grid: Grid
    targets: list[Target]
    description: str = ""
    tokenizer: str = "bpe:2048"
    """One tokenizer for the whole study, so that losses compare across corpora: ``bpe:V`` is a
    byte-level BPE of V tokens trained at planning time on a sample of every corpus (recorded in
    the study), else a Hub id or a local folder."""
    tokenizer_sample_bytes: int = 4_000_000
    """Characters of text the ``bpe:V`` tokenizer is trained on, split evenly over the corpora."""
    recipe: TrainingConfig = field(default_factory=TrainingConfig.tiny_cpu)
    """The training config every run starts from; the planner sets each run's shape, corpus,
    tokenizer, tokens and name."""
    schedule: Literal["cosine", "wsd"] = "cosine"
    """How the grid is trained. ``cosine``: every run alone, with the recipe's schedule (the
    papers'). ``wsd``: the same runs as warmup-stable-decay trunks and decay branches: the
    longest run of each corpus and shape is trained in full, every other run of that shape is a
    decay branched off it (``recipe.schedule.decay_fraction`` and ``decay_shape``;
    ``training.branches``), so a ladder of several token counts per size costs about its
    longest runs."""
    target_schedule: Literal["cosine", "wsd"] | None = None
    """The targets' schedule; None: the study's (with wsd, a target of a grid shape joins that
    shape's trunk, as a ladder's largest run does). ``cosine``: every target trained alone with
    the recipe's cosine, e.g. to compare a wsd grid's predictions with a cosine grid's on the
    same targets."""
    scaling: Literal["fixed", "inverse-sqrt-width", "olmo-ladder"] = "fixed"
    """How the recipe changes with the model: ``fixed``; ``inverse-sqrt-width``: the learning
    rate is ``recipe.optim.lr`` at width 64, divided by sqrt(width / 64); ``olmo-ladder``:
    OLMo-ladder's learning rate, batch and warmup as functions of N."""
    evaluation: Evaluation = field(default_factory=Evaluation)
    prediction: Prediction = field(default_factory=Prediction)
    launch: Launch = field(default_factory=Launch)
    needs: list[str] = field(default_factory=list)
    """What the study needs beyond this package (printed by --dry-run and in the README)."""

    # ------------------------------------------------------------------------- (de)serialising
    def to_dict(self) -> dict:
        return to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, width=100)

    @classmethod
    def from_dict(cls, data: dict) -> StudySpec:
        """A spec from plain data. A partial ``recipe`` overrides the default recipe's fields
        (a field left out keeps its default, as everywhere else), and with a ``bpe:V``
        tokenizer the model's vocabulary is V unless the recipe says otherwise."""
        data = dict(data)
        recipe = data.get("recipe")
        if isinstance(recipe, dict):
            merged = _overlay(to_plain(TrainingConfig.tiny_cpu()), recipe)
            tokenizer = str(data.get("tokenizer", ""))
            if tokenizer.startswith(BPE_PREFIX) and "vocab_size" not in recipe.get("model", {}):
                try:
                    merged["model"]["vocab_size"] = int(tokenizer[len(BPE_PREFIX):])
                except ValueError:
                    pass  # check() names the bad tokenizer
            data["recipe"] = merged
        return from_plain(cls, data).check()

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudySpec:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"study config {path} not found")
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the YAML document must be a mapping of the study's fields")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    # ------------------------------------------------------------------------------ checking
    @property
    def vocab_size(self) -> int:
        return self.recipe.model.vocab_size

    @property
    def bpe_vocab(self) -> int | None:
        """V of a ``bpe:V`` tokenizer, else None."""
        if not self.tokenizer.startswith(BPE_PREFIX):
            return None
        return int(self.tokenizer[len(BPE_PREFIX):])

    def check(self) -> StudySpec:
        """Raise ``ConfigError`` naming the first bad field and how to fix it; return self."""
        if not self.name or not LABEL.match(self.name):
            raise ConfigError(f"name: {self.name!r} must be letters, digits, '.' or '-' (it names "
                              "the study's folder)")
        if not self.corpora:
            raise ConfigError("corpora: no corpus; give at least one label: source")
        for label, source in self.corpora.items():
            if not LABEL.match(label) or label.startswith("."):
                raise ConfigError(f"corpora.{label}: a label is 1 to 64 letters, digits, '.' or "
                                  "'-' (it names the runs: L2L_<label>_N..._D..._C...)")
            if not str(source).strip():
                raise ConfigError(f"corpora.{label}: the source is empty")
        if self.tokenizer.startswith(BPE_PREFIX):
            try:
                vocab = int(self.tokenizer[len(BPE_PREFIX):])
            except ValueError:
                raise ConfigError(f"tokenizer: {self.tokenizer!r}: expected bpe:V with V a whole "
                                  "number, e.g. bpe:2048") from None
            if vocab < 260:
                raise ConfigError(f"tokenizer: {self.tokenizer!r}: a byte-level BPE needs at "
                                  "least 260 tokens (256 bytes and the special tokens)")
            if vocab != self.vocab_size:
                raise ConfigError(f"recipe.model.vocab_size: {self.vocab_size} does not match the "
                                  f"tokenizer {self.tokenizer} ({vocab} tokens): set them equal")
        elif self.tokenizer.startswith("offline:"):
            raise ConfigError(f"tokenizer: {self.tokenizer!r} trains on the standard library "
                              f"only; a study trains its BPE on its own corpora: bpe:"
                              f"{self.tokenizer.split(':', 1)[1]}")
        if self.tokenizer_sample_bytes < 10_000:
            raise ConfigError("tokenizer_sample_bytes: at least 10000 characters are needed to "
                              "train a tokenizer")
        self._check_grid()
        self._check_targets()
        if not 0 < self.prediction.level < 1:
            raise ConfigError(f"prediction.level: {self.prediction.level} must lie in (0, 1)")
        if self.prediction.bootstrap < 10:
            raise ConfigError(f"prediction.bootstrap: {self.prediction.bootstrap} resamples; at "
                              "least 10 are needed for an interval")
        if self.launch.workers < 1:
            raise ConfigError(f"launch.workers: {self.launch.workers} must be at least 1")
        if self.evaluation.loss_tokens < self.recipe.data.seq_len:
            raise ConfigError(f"evaluation.loss_tokens: {self.evaluation.loss_tokens} is less "
                              f"than one sequence of {self.recipe.data.seq_len} tokens")
        if self.evaluation.task_limit is not None and self.evaluation.task_limit < 1:
            raise ConfigError("evaluation.task_limit: must be at least 1 (or null: every question)")
        try:
            self.recipe.validate()
        except ConfigError as exc:
            raise ConfigError(f"recipe.{exc}") from None
        if self.recipe.schedule.kind == "wsd" or self.recipe.schedule.trunk is not None:
            raise ConfigError("recipe.schedule.kind: wsd is planned by the study, not the recipe: "
                              "keep the recipe's cosine (the targets' schedule) and set schedule: "
                              "wsd (decay_fraction and decay_shape stay in recipe.schedule)")
        return self

    def _check_grid(self) -> None:
        grid = self.grid
        if not grid.shapes:
            raise ConfigError("grid.shapes: no shape; give at least two (width, layers) pairs")
        for i, shape in enumerate(grid.shapes):
            _check_shape(shape, f"grid.shapes[{i}]")
        if bool(grid.budgets) == bool(grid.tokens_per_param):
            raise ConfigError("grid: give either budgets (an iso-FLOP grid) or tokens_per_param "
                              "(a ladder), not both or neither")
        levels = grid.budgets or grid.tokens_per_param
        what = "grid.budgets" if grid.budgets else "grid.tokens_per_param"
        if any(v <= 0 for v in levels):
            raise ConfigError(f"{what}: every value must be positive, got {levels}")
        if list(levels) != sorted(set(levels)):
            raise ConfigError(f"{what}: {levels} must be in increasing order, each once")
        if grid.tokens_per_param_range is not None:
            lo, hi = grid.tokens_per_param_range
            if not 0 <= lo < hi:
                raise ConfigError(f"grid.tokens_per_param_range: [{lo}, {hi}] must have 0 <= lo < hi")
        if grid.round_steps < 1:
            raise ConfigError("grid.round_steps: must be at least 1")

    def _check_targets(self) -> None:
        if not self.targets:
            raise ConfigError("targets: no target run; give at least one larger run for the laws "
                              "to predict (shape and flop_budget)")
        top = max(self.grid.budgets) if self.grid.budgets else None
        for i, target in enumerate(self.targets):
            where = f"targets[{i}]"
            _check_shape(target.shape, f"{where}.shape")
            if (target.flop_budget is None) == (target.tokens_per_param is None):
                raise ConfigError(f"{where}: give either flop_budget or tokens_per_param")
            if target.flop_budget is not None and target.flop_budget <= 0:
                raise ConfigError(f"{where}.flop_budget: must be positive")
            if target.tokens_per_param is not None and target.tokens_per_param <= 0:
                raise ConfigError(f"{where}.tokens_per_param: must be positive")
            if top is not None and target.flop_budget is not None and target.flop_budget <= top:
                raise ConfigError(f"{where}.flop_budget: {target.flop_budget:g} is inside the grid "
                                  f"(its largest budget is {top:g}); a target lies beyond the "
                                  "grid, or there is nothing to predict")


def _overlay(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied section by section (a key unknown to ``base`` is kept,
    for the typed check to name)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _overlay(out[key], value)
        else:
            out[key] = value
    return out


def _check_shape(shape: Shape, where: str) -> None:
    if shape.layers < 1:
        raise ConfigError(f"{where}.layers: {shape.layers} must be at least 1")
    if shape.width < HEAD_DIM or shape.width % HEAD_DIM:
        raise ConfigError(f"{where}.width: {shape.width} must be a positive multiple of "
                          f"{HEAD_DIM} (heads of {HEAD_DIM})")
