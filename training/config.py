"""The training configuration: one typed dataclass tree, the single source of truth for a run.

Defaults are the loss-to-loss recipe (Brandfonbrener et al. 2024, Table 8, and its released OLMo
configs): AdamW with lr 1e-3, betas (0.9, 0.95), eps 1e-15 and no weight decay; 1024 sequences of
512 tokens per step; warmup from 0.1 x the peak over the first 20% of the steps, cosine to
0.1 x the peak; clipping at 1.0; z-loss 1e-4; bf16 autocast over fp32 master weights.

A config round-trips through YAML (``to_yaml`` / ``from_yaml``) and takes dotted command-line
overrides (``optim.lr=3e-4 batch.micro_batch_size=8``) whose values are type-checked against the
field annotations; nothing is ever ``eval``-ed. Errors name the offending field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from analysis.locations import DATA_DIR, LLAMA2_TOKENIZER
from training.typed_config import (
    ConfigError,
    check_types,
    from_plain,
    get_dotted,
    set_dotted,
    to_plain,
)

# The paper's tokens per optimizer step: 1024 sequences of 512 tokens.
PAPER_TOKENS_PER_STEP = 1024 * 512


@dataclass
class ModelConfig:
    n_layers: int = 8
    """Depth n of the paper's family: width 64 n and n heads of 64 (``L2LConfig.from_depth``)."""
    d_model: int | None = None
    """Width; None means the paper's 64 n."""
    n_heads: int | None = None
    """Attention heads; None means n (heads of 64)."""
    vocab_size: int = 32000
    """Embedding rows (the Llama-2 tokenizer's 32000 in the paper); must cover the tokenizer."""
    gradient_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (saves memory, costs ~1/3 more)."""
    attn_implementation: str = "sdpa"
    """transformers attention backend: sdpa, eager or flash_attention_2."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other ``L2LConfig`` field, e.g. ``{rope_theta: 500000}``."""


@dataclass
class DataConfig:
    corpus: str = "fineweb-100b"
    """A registered corpus (``training.data.CORPORA``) or local text/JSONL/Parquet files (a path,
    folder or glob)."""
    tokenizer: str = LLAMA2_TOKENIZER
    """Hub id or local folder of the tokenizer; ``offline:V`` is the package's byte-level BPE of V
    tokens trained on the standard library (offline runs; losses not comparable with Llama-2's)."""
    data_dir: str = DATA_DIR
    """Where tokenised shards are written once and memory-mapped (one folder per corpus and
    tokenizer)."""
    seq_len: int = 512
    """Tokens per training sequence; also the model's context length."""
    val_sequences: int = 2048
    """Held-out sequences taken from the start of the corpus stream, never trained on."""
    train_tokens: int | None = None
    """Tokens to materialise for training; None means exactly what this run needs."""
    hub_mirror: str | None = None
    """A local copy of the Hub's dataset repositories (``<hub_mirror>/<owner>/<name>/...``) to
    read registered corpora from, e.g. on a cluster without internet."""
    text_field: str | None = None
    """Document field of the source; None means the registry's (``text``, ``content`` for code)."""
    seed: int = 0
    """Seed of the order in which training sequences are read (a permutation per epoch)."""


@dataclass
class OptimConfig:
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-15
    weight_decay: float = 0.0
    decay_embeddings: bool = False
    """Apply weight decay to the input embedding too (OLMo's ``decay_embeddings``). The untied
    output head is a linear layer and is decayed like the others, as in OLMo."""
    decay_norms: bool = False
    """Apply weight decay to the LayerNorm weights too (OLMo's ``decay_norm_and_bias``;
    OLMo-ladder: yes)."""
    grad_clip: float | None = 1.0
    """Maximum global gradient norm; None disables clipping."""
    z_loss: float = 1e-4
    """Coefficient of the z-loss ``mean(logsumexp(logits)^2)`` added to the cross-entropy."""
    fused: bool | None = None
    """Fused AdamW kernel; None means on when training on a GPU."""


@dataclass
class ScheduleConfig:
    kind: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    """cosine or linear decay after the warmup, constant, or warmup-stable-decay (``wsd``: the
    peak until the last ``decay_fraction`` of the steps; see ``training.schedule``)."""
    warmup_fraction: float = 0.2
    """Fraction of the steps spent warming up linearly."""
    warmup_tokens: int | None = None
    """Warm up over this many tokens instead (OLMo-ladder: N tokens); overrides the fraction."""
    final_lr_fraction: float = 0.1
    """The decay ends at this fraction of the peak (OLMo's alpha_f)."""
    warmup_start_fraction: float = 0.1
    """The warmup starts from this fraction of the peak (OLMo's default ``warmup_min_lr``, which
    the paper's sweep kept: see ``training.schedule``)."""
    decay_fraction: float = 0.2
    """WSD: fraction of the steps spent decaying, at the end (Hägele et al. 2024: 20% matches
    cosine's final loss)."""
    decay_shape: Literal["linear", "1-sqrt"] = "1-sqrt"
    """WSD: the decay's shape, ``linear`` or ``1-sqrt`` (``1 - sqrt(progress)``, the shape Hägele
    et al. found best)."""
    trunk: str | None = None
    """WSD decay branch: the run folder (in ``run.output_dir``) of the trunk this run branches
    off. The run starts from the trunk's checkpoint at its decay's first step (``decay_start``)
    instead of step 0, and refuses a trunk trained differently or a checkpoint missing or
    damaged (``training.branches``). None: trained from step 0."""
    trunk_steps: int | None = None
    """WSD: the steps of the trunk whose stable phase this run shares (the longest run of the
    trunk). Every run of one trunk reads the data order of that length, so that a branch continues
    its trunk's data exactly; None means this run's own steps."""


@dataclass
class BatchConfig:
    global_batch_size: int = 1024
    """Sequences per optimizer step, summed over processes and accumulation steps."""
    micro_batch_size: int = 16
    """Sequences per forward/backward on one process; accumulation = global / (micro x world)."""


@dataclass
class PrecisionConfig:
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    """Autocast dtype over fp32 master weights (accelerate's ``mixed_precision``)."""
    compile: bool = False
    """Compile the model and the loss with ``torch.compile``."""
    tf32: bool = True
    """Allow TF32 matmuls on Ampere and newer GPUs."""


@dataclass
class LoggingConfig:
    log_every: int = 10
    """Optimizer steps between lines of metrics.jsonl and tracker logs."""
    trackers: list[str] = field(default_factory=lambda: ["tensorboard", "wandb"])
    """accelerate trackers; a tracker whose package is not installed is skipped with a notice."""
    project: str = "l2l"
    """Tracker project name (the run name names the run)."""
    progress_bar: bool = True
    eval_every: int = 0
    """Steps between validation losses during training (0: only at the end)."""
    val_batches: int | None = None
    """Micro-batches (per process) of the held-out split per validation; None means all of it."""
    peak_flops: float | None = None
    """Peak FLOP/s of one device for MFU; None means the GPU's bf16 peak from the model's table
    (no MFU on a CPU unless set)."""


@dataclass
class CheckpointConfig:
    every_steps: int = 1000
    """Optimizer steps between checkpoints (0: none but the final model)."""
    keep_last: int = 2
    """Complete checkpoints kept; older ones are deleted after a new one is committed."""
    resume: bool = False
    """Continue from the latest complete checkpoint of the run folder when there is one."""
    keep_steps: list[int] = field(default_factory=list)
    """Steps that are also checkpointed and never deleted by ``keep_last``: a WSD trunk keeps
    the checkpoint each of its decay branches starts from."""


@dataclass
class RunConfig:
    name: str | None = None
    """Run folder name; None means ``format_run_name(corpus, N, D, C)``."""
    output_dir: str = "runs"
    """Study folder; the run writes ``<output_dir>/<name>/``."""
    tokens: int = 20 * PAPER_TOKENS_PER_STEP
    """D: training tokens. The schedule has floor(D / tokens per step) steps unless run.steps."""
    steps: int | None = None
    """Steps of the schedule when set (the released runs rounded floor(D / 524288) down to a
    multiple of 5); None means floor(D / tokens per step)."""
    max_steps: int | None = None
    """Stop after this many steps (the schedule still spans the full run)."""
    flop_budget: float | None = None
    """C used to name the run; None means 6 N D."""
    seed: int = 0
    """Seed of the weight initialisation."""


@dataclass
class TrainingConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # ----------------------------------------------------------------- derived quantities
    @property
    def tokens_per_step(self) -> int:
        return self.batch.global_batch_size * self.data.seq_len

    @property
    def total_steps(self) -> int:
        """Steps of the schedule: floor(D / tokens per step), as in the paper, or run.steps."""
        if self.run.steps is not None:
            return self.run.steps
        return self.run.tokens // self.tokens_per_step

    @property
    def train_steps(self) -> int:
        """Steps actually taken (``run.max_steps`` may stop the run early)."""
        if self.run.max_steps is None:
            return self.total_steps
        return min(self.total_steps, self.run.max_steps)

    def grad_accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per process per step: global batch / (micro-batch x world size)."""
        per_step = self.batch.micro_batch_size * world_size
        if self.batch.global_batch_size % per_step:
            raise ConfigError(
                f"batch.global_batch_size: {self.batch.global_batch_size} is not a multiple of "
                f"batch.micro_batch_size ({self.batch.micro_batch_size}) x world size "
                f"({world_size}) = {per_step}"
            )
        return self.batch.global_batch_size // per_step

    # ------------------------------------------------------------------------ validation
    def validate(self) -> TrainingConfig:
        """Check every field's type and range; raise ``ConfigError`` naming the first bad one."""
        check_types(self)
        m, d, o, s, b = self.model, self.data, self.optim, self.schedule, self.batch
        width = m.d_model if m.d_model is not None else 64 * m.n_layers
        heads = m.n_heads if m.n_heads is not None else m.n_layers
        rules: list[tuple[str, bool, str]] = [
            ("model.n_layers", m.n_layers >= 1, "must be >= 1"),
            ("model.d_model", m.d_model is None or m.d_model >= 1, "must be >= 1"),
            ("model.n_heads", m.n_heads is None or m.n_heads >= 1, "must be >= 1"),
            ("model.vocab_size", m.vocab_size >= 2, "must be >= 2"),
            ("model.n_heads", heads < 1 or width % heads == 0,
             f"{heads} heads do not divide the width {width} (model.d_model, default 64 x "
             "model.n_layers)"),
            ("model.attn_implementation",
             m.attn_implementation in ("sdpa", "eager", "flash_attention_2", "flash_attention_3"),
             "must be sdpa, eager, flash_attention_2 or flash_attention_3"),
            ("data.corpus", bool(d.corpus.strip()), "must not be empty"),
            ("data.tokenizer", bool(d.tokenizer.strip()), "must not be empty"),
            ("data.data_dir", bool(d.data_dir.strip()), "must not be empty"),
            ("data.seq_len", d.seq_len >= 2, "must be >= 2"),
            ("data.val_sequences", d.val_sequences >= 1, "must be >= 1"),
            ("data.train_tokens", d.train_tokens is None or d.train_tokens > 0, "must be > 0"),
            ("optim.lr", math.isfinite(o.lr) and o.lr > 0, "must be a finite number > 0"),
            ("optim.betas", all(0.0 <= x < 1.0 for x in o.betas), "must lie in [0, 1)"),
            ("optim.eps", o.eps > 0, "must be > 0"),
            ("optim.weight_decay", o.weight_decay >= 0, "must be >= 0"),
            ("optim.grad_clip", o.grad_clip is None or o.grad_clip > 0, "must be > 0 (or null)"),
            ("optim.z_loss", o.z_loss >= 0, "must be >= 0"),
            ("schedule.warmup_fraction", 0.0 <= s.warmup_fraction <= 1.0, "must lie in [0, 1]"),
            ("schedule.warmup_tokens", s.warmup_tokens is None or s.warmup_tokens >= 0,
             "must be >= 0"),
            ("schedule.final_lr_fraction", 0.0 <= s.final_lr_fraction <= 1.0,
             "must lie in [0, 1]"),
            ("schedule.warmup_start_fraction", 0.0 <= s.warmup_start_fraction <= 1.0,
             "must lie in [0, 1]"),
            ("schedule.decay_fraction", 0.0 < s.decay_fraction < 1.0, "must lie in (0, 1)"),
            ("schedule.trunk", s.trunk is None or _is_folder_name(s.trunk),
             "must be a run folder name in run.output_dir (no '/', not '.' or '..')"),
            ("schedule.trunk", s.trunk is None or s.kind == "wsd",
             "a decay branch needs schedule.kind=wsd"),
            ("schedule.trunk", s.trunk is None or s.trunk != self.run.name,
             "a run cannot branch off itself"),
            ("schedule.trunk_steps", s.trunk_steps is None or s.kind == "wsd",
             "only WSD runs share a trunk's data order: needs schedule.kind=wsd"),
            ("batch.global_batch_size", b.global_batch_size >= 1, "must be >= 1"),
            ("batch.micro_batch_size", b.micro_batch_size >= 1, "must be >= 1"),
            ("batch.global_batch_size", b.global_batch_size % max(b.micro_batch_size, 1) == 0,
             f"{b.global_batch_size} is not a multiple of batch.micro_batch_size "
             f"({b.micro_batch_size})"),
            ("logging.log_every", self.logging.log_every >= 1, "must be >= 1"),
            ("logging.eval_every", self.logging.eval_every >= 0, "must be >= 0"),
            ("logging.val_batches", self.logging.val_batches is None or self.logging.val_batches
             >= 1, "must be >= 1 (or null)"),
            ("logging.trackers", set(self.logging.trackers) <= {"tensorboard", "wandb"},
             "only tensorboard and wandb are supported"),
            ("logging.peak_flops", self.logging.peak_flops is None or self.logging.peak_flops > 0,
             "must be > 0 (or null)"),
            ("checkpoint.every_steps", self.checkpoint.every_steps >= 0, "must be >= 0"),
            ("checkpoint.keep_last", self.checkpoint.keep_last >= 1, "must be >= 1"),
            ("checkpoint.keep_steps", all(k >= 1 for k in self.checkpoint.keep_steps),
             "every step must be >= 1"),
            ("run.output_dir", bool(self.run.output_dir.strip()), "must not be empty"),
            ("run.name", self.run.name is None or _is_folder_name(self.run.name),
             "must be a plain folder name (no '/', not '.' or '..')"),
            # file systems refuse longer names (ENAMETOOLONG) when the run folder is made
            ("run.name", self.run.name is None or len(self.run.name.encode()) <= 255,
             f"is {len((self.run.name or '').encode())} bytes long; a folder name can be at "
             "most 255: choose a shorter name"),
            ("run.tokens", self.run.tokens >= 1, "must be >= 1"),
            ("run.steps", self.run.steps is None or self.run.steps >= 1, "must be >= 1 (or null)"),
            ("run.max_steps", self.run.max_steps is None or self.run.max_steps >= 1,
             "must be >= 1 (or null)"),
            ("run.flop_budget", self.run.flop_budget is None or self.run.flop_budget > 0,
             "must be > 0 (or null)"),
        ]
        for name, ok, message in rules:
            if not ok:
                raise ConfigError(f"{name}: {message} (got {get_dotted(self, name)!r})")
        if self.total_steps < 1:
            raise ConfigError(
                f"run.tokens: {self.run.tokens} tokens is less than one optimizer step of "
                f"{self.tokens_per_step} tokens (batch.global_batch_size x data.seq_len)"
            )
        if s.trunk_steps is not None and s.trunk_steps < self.total_steps:
            raise ConfigError(
                f"schedule.trunk_steps: must be at least this run's {self.total_steps} steps (a "
                f"trunk is the longest run of its branches) (got {s.trunk_steps})")
        if s.kind == "wsd":
            from training.schedule import decay_start, warmup_steps_for

            warmup = warmup_steps_for(self.total_steps, s.warmup_fraction, s.warmup_tokens,
                                      self.tokens_per_step)
            start = decay_start(self.total_steps, s.decay_fraction)
            if warmup > start:
                raise ConfigError(
                    f"schedule.decay_fraction: the decay of this {self.total_steps}-step run "
                    f"would start at step {start}, before its {warmup}-step warmup ends; lower "
                    "the decay fraction or the warmup (schedule.warmup_fraction, "
                    "schedule.warmup_tokens)")
        if self.run.steps is not None and self.run.steps * self.tokens_per_step > self.run.tokens:
            raise ConfigError(
                f"run.steps: {self.run.steps} steps of {self.tokens_per_step} tokens would train "
                f"on more than run.tokens (D = {self.run.tokens}, i.e. at most "
                f"{self.run.tokens // self.tokens_per_step} steps)"
            )
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        return from_plain(cls, data)

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> TrainingConfig:
        """Load from a YAML file path (or YAML text when given a string with a newline)."""
        if isinstance(path_or_text, Path) or "\n" not in str(path_or_text):
            path = Path(path_or_text)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"config file {path} cannot be read: {exc}") from None
            where = str(path)
        else:
            text, where = str(path_or_text), "config text"
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            # e.g. "while parsing a block mapping ... line 3, column 1": one line, file named.
            detail = " ".join(str(exc).split())
            raise ConfigError(f"{where} is not valid YAML: {detail}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: the YAML document must be a mapping of sections")
        return cls.from_dict(data)

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> TrainingConfig:
        """A copy with dotted ``section.field=value`` overrides applied and type-checked."""
        cfg = TrainingConfig.from_dict(self.to_dict())
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected section.field=value")
            key, raw = item.split("=", 1)
            set_dotted(cfg, key.strip(), raw)
        return cfg

    # --------------------------------------------------------------------------- presets
    @classmethod
    def paper(cls, n_layers: int = 8, corpus: str = "fineweb-100b", *,
              flop_budget: float | None = None, tokens: int | None = None) -> TrainingConfig:
        """The loss-to-loss recipe at depth ``n_layers``; D from ``tokens`` or ``C / (6 N)``."""
        from analysis.sizes import paper_param_count

        cfg = cls()
        cfg.model.n_layers = n_layers
        cfg.data.corpus = corpus
        if flop_budget is not None:
            tokens = int(flop_budget / (6 * paper_param_count(n_layers)))
            cfg.run.flop_budget = float(flop_budget)
        if tokens is not None:
            cfg.run.tokens = int(tokens)
        return cfg.validate()

    @classmethod
    def olmo_ladder(cls, n_layers: int = 8, corpus: str = "fineweb-100b", *,
                    chinchilla_multiple: float = 1.0, seq_len: int = 2048) -> TrainingConfig:
        """OLMo-ladder's recipe (Bhagia et al. 2024; OLMo ``scaling/ladder.py``) on our model
        family: D = multiple x 20 N tokens; lr = 0.0047 (N / 108M)^(-1/3); batch =
        160 (N / 108M)^(2/3) sequences of 2048 (rounded to a multiple of 32); AdamW eps 1e-8,
        weight decay 0.1 on everything but the input embedding (norms included:
        ``decay_norm_and_bias=True``); warmup from 0 over N tokens; cosine to 0.1 x the peak;
        z-loss 1e-5 (``auxiliary_loss_multiplier``); clipping at 1.0."""
        from analysis.sizes import paper_param_count

        n_params = paper_param_count(n_layers)
        cfg = cls()
        cfg.model.n_layers = n_layers
        cfg.data.corpus = corpus
        cfg.data.seq_len = seq_len
        cfg.optim.eps = 1e-8
        cfg.optim.weight_decay = 0.1
        cfg.optim.decay_norms = True
        cfg.optim.z_loss = 1e-5
        cfg.batch.micro_batch_size = 4
        cfg.schedule.warmup_start_fraction = 0.0  # ladder.py: warmup_min_lr=0.0
        cfg.scale_like_olmo_ladder(n_params)
        cfg.run.tokens = int(chinchilla_multiple * 20 * n_params)
        return cfg.validate()

    def scale_like_olmo_ladder(self, n_params: int) -> None:
        """OLMo-ladder's size rules, in place: lr = 0.0047 (N / 108M)^(-1/3); batch = 160
        (N / 108M)^(2/3) sequences (rounded to a multiple of 32, at least 32); warmup over N
        tokens."""
        self.optim.lr = 0.0047 * (n_params / 108e6) ** (-1 / 3)
        self.batch.global_batch_size = max(32, round(160 * (n_params / 108e6) ** (2 / 3) / 32) * 32)
        self.schedule.warmup_tokens = n_params

    @classmethod
    def tiny_cpu(cls) -> TrainingConfig:
        """A model that trains on a laptop CPU in a minute or two, fully offline: depth 2
        (d = 128), the package's offline BPE (4096 tokens), the Python standard library as
        corpus, sequences of 128, 16 per step, fp32. On cores shared with other jobs, run it
        with ``OMP_NUM_THREADS=1`` (benchmarks/RESULTS.md: spinning OpenMP threads made a
        two-thread run 3x slower)."""
        cfg = cls()
        cfg.model.n_layers = 2
        cfg.model.vocab_size = 4096
        cfg.data.corpus = "python-stdlib"
        cfg.data.tokenizer = "offline:4096"
        cfg.data.seq_len = 128
        cfg.data.val_sequences = 64
        cfg.batch.global_batch_size = 16
        cfg.batch.micro_batch_size = 8
        cfg.precision.mixed_precision = "no"
        cfg.logging.log_every = 10
        cfg.logging.trackers = ["tensorboard"]
        cfg.checkpoint.every_steps = 50
        cfg.run.tokens = 200 * 16 * 128
        cfg.run.output_dir = "runs/tiny"
        return cfg.validate()


PRESETS = {
    "paper": TrainingConfig.paper,
    "olmo-ladder": TrainingConfig.olmo_ladder,
    "tiny-cpu": TrainingConfig.tiny_cpu,
}


# ------------------------------------------------------------------------------- helpers
def _is_folder_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")

