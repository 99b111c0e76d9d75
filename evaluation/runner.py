"""Evaluate one model, or every finished run of a study, into the results table.

Work is done metric group by metric group, and each group's rows are appended (and fsync'ed)
as soon as they are computed, so an interruption loses at most the group in progress; rerunning
the same command skips every (run, metric) already in the table. A run whose checkpoint cannot
be loaded, or a task whose data is missing, is reported and skipped, and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from analysis.locations import DATA_DIR

from .downstream import FAMILIES, evaluate_task
from .losses import (
    DEFAULT_LOSS_TOKENS,
    HeldOutDataError,
    corpus_key,
    held_out_loss,
    held_out_windows,
    loss_metric_names,
    token_byte_lengths,
)
from .model_io import (
    ModelLoadError,
    RunInfo,
    check_device,
    check_tokenizer_fits,
    count_parameters,
    load_model,
    parse_dtype,
    resolve_tokenizer,
    run_info,
)
from .results import ResultsTable
from .scorer import LoglikelihoodScorer, model_max_length
from .tasks import TaskDataError, metric_names, resolve_tasks

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """What to evaluate and how; the command line maps onto it one flag per field."""

    tasks: list[str] = field(default_factory=list)
    """Downstream tasks, aliases or groups (l2l, ladder, mmlu, all)."""
    families: tuple[str, ...] = FAMILIES
    """zero_shot: the loss-to-loss test loss, acc, len_norm; rc_5shot: the ladder's bpb (+acc)."""
    losses: list[str] = field(default_factory=list)
    """Held-out corpora: registered names (fineweb-100b, c4, ...; ``paper`` for the paper's six
    corpora and C4; ``own`` for each run's training corpus, which also gives ``val_loss``),
    local files, or .npy tokens, optionally as ``key=source`` to name the metric's key."""
    loss_tokens: int = DEFAULT_LOSS_TOKENS
    """Held-out tokens per corpus: the first loss_tokens // seq_len sequences of the split (the
    rows' ``n`` counts the tokens predicted, seq_len - 1 per sequence)."""
    data_dir: str | None = None
    """Folder of training's tokenized shards (default: the run's, else ~/.cache/l2l/data)."""
    val_sequences: int | None = None
    """Size of the held-out split (default: the run's ``data.val_sequences``, else 2048)."""
    task_data: str | None = None
    """Folder of local task files (see ``evaluation.task_data``)."""
    allow_hub: bool = True
    limit: int | None = None
    """First questions per task split only: a quick look, recorded in each row's ``limit``; a
    table holds either quick looks with one limit or full evaluations, never both."""
    tokenizer: str | None = None
    device: str | None = None
    dtype: str = "float32"
    max_batch_tokens: int = 8192
    pair_encoding: str = "separate"
    """How (context, answer) pairs are tokenized: ``separate`` as OLMo's in-loop evaluator (the
    papers), ``joint`` as lm-eval."""
    add_bos: bool = False
    trust_remote_code: bool = False
    lm_eval_tasks: list[str] = field(default_factory=list)
    """lm-eval task names (or our pack's ``l2l_*`` tasks) run through our scorer."""
    lm_eval_include: str | None = None
    """Extra lm-eval task folder; our pack (``evaluation/lm_eval_tasks``) is always included."""
    progress: bool = True

    def __post_init__(self):
        # Everything checkable is checked here, before any model is loaded: a bad value found
        # later would fail every run of a study, or worse, be taken silently (--limit 0 meant
        # every question, a negative one all but the last).
        self.specs = resolve_tasks(self.tasks) if self.tasks else []
        unknown = set(self.families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown metric families {sorted(unknown)}; known: {FAMILIES}")
        if self.specs and not self.families:
            raise ValueError(f"tasks but no metric family to compute; families: {FAMILIES}")
        if not (self.specs or self.losses or self.lm_eval_tasks):
            raise ValueError("nothing to evaluate: give tasks, held-out losses or lm-eval tasks")
        if self.loss_tokens < 2:
            raise ValueError(f"loss_tokens must be at least 2, got {self.loss_tokens}")
        for name, flag in (("limit", "--limit"), ("val_sequences", "--val-sequences"),
                           ("max_batch_tokens", "--batch-tokens")):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} ({flag}) must be at least 1, got {value}")
        for item in self.losses:
            key, eq, source = item.partition("=")
            if not key.strip() or (eq and not source.strip()):
                raise ValueError(f"held-out loss {item!r}: expected a corpus, a file or key=source")
        for name, flag in (("task_data", "--task-data"), ("lm_eval_include", "--lm-eval-include")):
            folder = getattr(self, name)
            if folder is not None and not Path(folder).is_dir():
                raise FileNotFoundError(f"{name} ({flag}) folder not found: {folder}")
        parse_dtype(self.dtype)
        if self.device is not None:
            check_device(self.device)


@dataclass
class Failure:
    run: str
    what: str
    error: str


def _loss_sources(cfg: EvalConfig) -> list[tuple[str, str]]:
    """(metric key, source) pairs; ``paper`` stands for the loss-to-loss paper's evaluation
    corpora (its six training corpora and C4), ``own`` for the run's training corpus (kept as
    ``own`` here, resolved per run)."""
    out = []
    for item in cfg.losses:
        if item == "paper":
            from training.corpora import PAPER_CORPORA

            out += [(c, c) for c in (*PAPER_CORPORA, "c4")]
            continue
        key, _, source = item.partition("=") if "=" in item else (item, "", item)
        out.append((key, source))
    return out


def _pending(cfg: EvalConfig, info: RunInfo, table: ResultsTable) -> bool:
    """Whether any metric of this run is missing from the table (without loading the model)."""
    names = []
    for key, _ in _loss_sources(cfg):
        names += list(loss_metric_names(info.dataset or key if key == "own" else key).values())
    for spec in cfg.specs:
        all_names = metric_names(spec)
        if "zero_shot" in cfg.families:
            names += [all_names[k] for k in ("test_ce_loss", "test_acc", "test_len_norm")]
        if "rc_5shot" in cfg.families:
            names += [v for k, v in all_names.items() if "rc_5shot" in k]
    return bool(cfg.lm_eval_tasks) or any(not table.has(info.run, n) for n in names)


def check_limit(cfg: EvalConfig, table: ResultsTable) -> None:
    """Quick looks (``limit``) and full evaluations never share a table: resuming would otherwise
    keep a quick look's values as if they were complete (rows are skipped by (run, metric))."""
    found = {row.get("limit") for row in table.rows} - {cfg.limit}
    if found:
        held = ", ".join(_limit_text(limit) for limit in sorted(found, key=str))
        raise ValueError(
            f"{table.path} holds rows computed with {held}; this evaluation uses "
            f"{_limit_text(cfg.limit)}: give it another --out"
        )


def _limit_text(limit: int | None) -> str:
    return "every question" if limit is None else f"--limit {limit}"


def evaluate_model(model: str, cfg: EvalConfig, table: ResultsTable) -> list[Failure]:
    """Evaluate one model into ``table``; returns what failed (rows of what worked are written)."""
    check_limit(cfg, table)
    info = run_info(model)
    if not _pending(cfg, info, table):
        logger.info("%s: every requested metric is already in %s", info.run, table.path)
        return []
    lm = load_model(
        model, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
    )
    tokenizer, tokenizer_name = resolve_tokenizer(model, info, cfg.tokenizer)
    check_tokenizer_fits(tokenizer, lm)
    if info.N is None:
        info.N = float(count_parameters(lm))
    columns = {**info.columns(), "limit": cfg.limit}
    failures: list[Failure] = []

    def emit(metric: str, value: float, n: int, source: str, **extra) -> None:
        if not table.has(info.run, metric):  # a group recomputed for one lost metric
            row = {**columns, "metric": metric, "value": value, "n": n, "source": source}
            table.append([{**row, **extra}])

    data = info.data_config

    def data_setting(key: str, given: int | None, default) -> int:
        """``given`` (the command line), else the run's ``data.<key>``, else ``default()``."""
        value = given if given is not None else data.get(key)
        if value is None:
            return int(default())
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HeldOutDataError(
                f"{Path(info.model) / 'training_config.yaml'}: data.{key} is {value!r}, "
                "not a positive whole number"
            )
        return value

    byte_lengths = token_byte_lengths(tokenizer)
    for key, source in _loss_sources(cfg):
        if key == "own":
            if info.dataset is None:
                failures.append(
                    Failure(info.run, "held-out loss own", "the run's corpus is unknown")
                )
                continue
            key, source = info.dataset, str(data.get("corpus") or info.dataset)
        own_corpus = source == str(data.get("corpus") or info.dataset)
        names = loss_metric_names(key)
        if all(table.has(info.run, n) for n in names.values()):
            continue
        try:
            windows = held_out_windows(
                source,
                seq_len=data_setting("seq_len", None, lambda: model_max_length(lm, tokenizer)),
                n_tokens=cfg.loss_tokens,
                tokenizer=data.get("tokenizer") or tokenizer_name,
                data_dir=cfg.data_dir or data.get("data_dir") or DATA_DIR,
                val_sequences=data_setting("val_sequences", cfg.val_sequences, lambda: 2048),
                # The run's own corpus is read as training read it; other corpora by default.
                text_field=data.get("text_field") if own_corpus else None,
            )
            result = held_out_loss(
                lm,
                windows,
                byte_lengths=byte_lengths,
                max_batch_tokens=cfg.max_batch_tokens // 2,
                progress=cfg.progress,
                desc=f"{info.run} {key}",
            )
        except (HeldOutDataError, ValueError) as err:
            failures.append(Failure(info.run, f"held-out loss {key}", str(err)))
            logger.error("%s: held-out loss on %s failed: %s", info.run, key, err)
            continue
        rows = [(names["ce"], result.ce), (names["ppl"], math.exp(result.ce))]
        if result.bpb is not None:
            rows.append((names["bpb"], result.bpb))
        if info.dataset is not None and corpus_key(info.dataset) == corpus_key(key):
            rows.append(("val_loss", result.ce))
        # n: the predicted tokens the loss averages over (not the tokens read, one more per
        # sequence), the unit held_out_windows' warning also speaks in.
        table.append(
            [
                {**columns, "metric": m, "value": v, "n": result.n_scored, "source": str(source)}
                for m, v in rows
                if not table.has(info.run, m)
            ]
        )

    if cfg.specs or cfg.lm_eval_tasks:
        scorer = LoglikelihoodScorer(
            lm,
            tokenizer,
            max_batch_tokens=max(cfg.max_batch_tokens, model_max_length(lm, tokenizer)),
            pair_encoding=cfg.pair_encoding,
            add_bos=cfg.add_bos,
            progress=cfg.progress,
        )
    for spec in cfg.specs:
        done = {m for r, m in table.done if r == info.run}
        try:
            for group in evaluate_task(
                scorer, spec, cfg.families, cfg.task_data, cfg.allow_hub, cfg.limit, skip=done
            ):
                for m in group:
                    emit(m.metric, m.value, m.n, m.source, n_windowed=m.n_windowed)
        except (TaskDataError, ValueError) as err:
            failures.append(Failure(info.run, f"task {spec.name}", str(err)))
            logger.error("%s: task %s failed: %s", info.run, spec.name, err)
    if cfg.lm_eval_tasks:
        from .lm_eval_bridge import run_lm_eval_tasks

        try:
            for metric, value, n, source in run_lm_eval_tasks(
                scorer,
                cfg.lm_eval_tasks,
                include_path=cfg.lm_eval_include,
                limit=cfg.limit,
                task_data=cfg.task_data,
            ):
                emit(metric, value, n, source)
        except Exception as err:  # noqa: BLE001 - lm-eval raises many kinds; keep the sweep going
            failures.append(Failure(info.run, "lm-eval tasks", f"{type(err).__name__}: {err}"))
            logger.error("%s: lm-eval tasks failed:\n%s", info.run, traceback.format_exc())
    return failures


def finished_runs(study_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Run folders of a study holding a finished run (sorted; ``training.study`` says which), and
    the planned runs not finished."""
    from training.study import FINAL_NAME, finished_folders, read_plan, run_finished

    study = Path(study_dir)
    if not study.is_dir():
        what = "is not a folder" if study.exists() else "not found"
        raise FileNotFoundError(f"study folder {what}: {study}")
    if run_finished(study):
        raise ValueError(f"{study} is a run folder (it holds {FINAL_NAME}), not a study: use --model")
    finished = finished_folders(study)
    planned: list[str] = []
    try:
        planned = [r.run for r in read_plan(study)]
    except (OSError, ValueError, TypeError, KeyError, csv.Error) as err:
        # The plan only names the unfinished runs: a broken one must not stop the evaluation.
        logger.info("%s: no readable plan (%s); evaluating the finished run folders", study, err)
    names = {p.name for p in finished}
    return finished, [r for r in planned if r not in names]


def evaluate_study(study_dir: str | Path, cfg: EvalConfig, table: ResultsTable) -> list[Failure]:
    """Evaluate every finished run of a study (``finished_runs``)."""
    check_limit(cfg, table)
    runs, unfinished = finished_runs(study_dir)
    if unfinished:
        logger.warning("%d planned runs are not finished and are skipped: %s", len(unfinished),
                       ", ".join(unfinished[:5]) + (" ..." if len(unfinished) > 5 else ""))  # fmt: skip
    failures: list[Failure] = []
    folders: dict[str, Path] = {}  # run name -> the folder that has it
    # One bar for the study: a bar per metric of every run, and transformers' own bar for
    # every model it loads, would scroll the study's progress away.
    quiet = dataclasses.replace(cfg, progress=False)
    with _without_loading_bars():
        for run_dir in tqdm(runs, desc="runs", disable=not cfg.progress):
            failures += _evaluate_run(run_dir, quiet, table, folders)
    return failures


@contextlib.contextmanager
def _without_loading_bars():
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


def _evaluate_run(run_dir: Path, cfg: EvalConfig, table: ResultsTable,
                  folders: dict[str, Path]) -> list[Failure]:
    """One finished run of a study, its failures returned (a broken run never stops the rest)."""
    failures: list[Failure] = []
    try:
        # Rows are keyed by run name: a second folder with the same name (a copied
        # final.json) would have its metrics taken as done and never be evaluated.
        name = run_info(str(run_dir)).run
        if name in folders:
            raise ModelLoadError(
                f"its run name {name!r} is also that of {folders[name]}; rows are keyed by "
                f"run name (final.json's 'run'), so it is not evaluated"
            )
        folders[name] = run_dir
        failures += evaluate_model(str(run_dir), cfg, table)
    except ModelLoadError as err:
        failures.append(Failure(run_dir.name, "load", str(err)))
        logger.error("%s: %s", run_dir.name, err)
    return failures
