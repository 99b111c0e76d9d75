"""``l2l plan``: a ``StudySpec`` becomes a study folder (``training.study``'s contract: runs table,
base config, one config per run) plus ``l2l_study.json``, which records the spec, the target
runs (trained, never fitted), where each corpus comes from and the study's tokenizer.

Every run of a study reads the same tokenizer, so that losses compare across corpora: a
``bpe:V`` tokenizer is trained here on a sample of every corpus, taken after the text that the
held-out split will hold (the evaluation's text is never in the tokenizer's training text), and
saved in ``STUDY/tokenizer/``. Planning the same spec into its folder again changes nothing; a
different spec, a folder of something else or a study of ``python -m training.sweep`` is refused.

With ``schedule: wsd`` the same runs are planned as warmup-stable-decay trunks and decay branches
(``training.branches``); ``l2l_study.json`` records what the plan trains (``train_flops``: each
trunk once, each branch's decay) beside ``grid_flops`` (every run's C as if trained alone).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from l2l.layout import SPEC_FILE, STUDY_RECORD, TOKENIZER_DIR
from l2l.spec import StudySpec, Target
from training.typed_config import ConfigError

CHINCHILLA_PARAMS = 5  # the paper's single-corpus law: E, A, alpha, B, beta
HELD_OUT_CHARS_PER_TOKEN = 8  # generous: the text a held-out split takes, per token, skipped


def plan_runs(spec: StudySpec) -> tuple[list, list[str]]:
    """The study's runs (``training.study.PlannedRun``: the grid, then the targets, per corpus)
    and the names of the targets. D is the tokens each run trains (whole steps)."""
    from analysis.sizes import param_count
    from training.sweep import plan_runs as sweep_runs

    recipe = spec.recipe
    common = dict(vocab_size=spec.vocab_size, seq_len=recipe.data.seq_len, trained_tokens=True,
                  round_steps=spec.grid.round_steps, labels=list(spec.corpora),
                  global_batch_size=recipe.batch.global_batch_size, grid=f"l2l-{spec.name}")
    if spec.scaling == "olmo-ladder":  # the batch grows with N (paper shapes: width 64 n)
        def batch_of(layers: int) -> int:
            cfg = spec.recipe.with_overrides([])
            cfg.scale_like_olmo_ladder(param_count(64 * layers, layers, spec.vocab_size))
            return cfg.batch.global_batch_size
        common["global_batch_size"] = batch_of
    shapes = [(s.width, s.layers) for s in spec.grid.shapes]
    sources = list(spec.corpora.values())
    grid = spec.grid
    try:
        if grid.budgets:
            runs = sweep_runs(shapes, sources, budgets=grid.budgets,
                              ratio_range=grid.tokens_per_param_range, **common)
        else:
            runs = sweep_runs(shapes, sources, tokens_per_param=grid.tokens_per_param, **common)
        targets = []
        for target in spec.targets:
            shape = [(target.shape.width, target.shape.layers)]
            targets += (sweep_runs(shape, sources, budgets=[target.flop_budget], **common)
                        if target.flop_budget is not None else
                        sweep_runs(shape, sources, tokens_per_param=[target.tokens_per_param],
                                   **common))
    except ValueError as exc:
        raise ConfigError(f"grid: {exc}".replace("plan_runs: ", "")) from None
    # A target that is also a grid point (a ladder's largest: its deepest model at its most
    # tokens) is held out of the grid: planned once, as a target.
    held_out = {r.run for r in targets}
    runs = [r for r in runs if r.run not in held_out]
    _check_grid_size(spec, runs, targets)
    planned = runs + targets
    if spec.schedule == "wsd":
        from training.branches import plan_branches

        wsd = {r.run for r in runs}
        if (spec.target_schedule or spec.schedule) == "wsd":
            wsd |= held_out
        planned = plan_branches(planned, spec.recipe.schedule.decay_fraction, only=wsd)
    return planned, [r.run for r in targets]


def plan_cost(spec: StudySpec, runs: list) -> dict:
    """What the plan trains: ``train_flops`` (each trunk once, of each branch its decay) and
    ``grid_flops`` (every run's C as if trained alone), in the runs' C, with the schedule."""
    from training.branches import grid_flops, train_flops

    cost = {"schedule": spec.schedule, "train_flops": train_flops(runs),
            "grid_flops": grid_flops(runs)}
    if spec.schedule == "wsd":
        cost.update(decay_fraction=spec.recipe.schedule.decay_fraction,
                    decay_shape=spec.recipe.schedule.decay_shape,
                    target_schedule=spec.target_schedule or spec.schedule)
    return cost


def cost_line(cost: dict) -> str:
    """``plan_cost`` in one line: what the plan trains against its runs trained alone."""
    from training.branches import saving_line

    return saving_line(cost["train_flops"], cost["grid_flops"], cost["schedule"])


def run_role(run) -> str:
    """How a planned run is trained, in a few words: alone, a trunk, or a branch of one."""
    from training.branches import is_branch

    if run.schedule != "wsd":
        return ""
    if is_branch(run):
        return f"branch of {run.trunk} at step {run.branch_step}"
    return "wsd trunk"


def _check_grid_size(spec: StudySpec, runs: list, targets: list) -> None:
    """Enough grid runs per corpus for the paper's law (5 parameters), and every ladder target
    beyond the grid (a larger model, or more tokens per parameter than any grid run)."""
    for label in spec.corpora:
        mine = [r for r in runs if r.dataset == label]
        if len(mine) <= CHINCHILLA_PARAMS:
            raise ConfigError(
                f"grid: {len(mine)} run(s) per corpus (after the tokens_per_param_range); the "
                f"Chinchilla law has {CHINCHILLA_PARAMS} parameters: at least "
                f"{CHINCHILLA_PARAMS + 1} runs are needed, more budgets or shapes")
    largest_n = max(r.N for r in runs)
    most_tokens = max(r.tokens_per_param for r in runs)
    for target in targets:
        if target.N <= largest_n and target.tokens_per_param <= most_tokens and \
                target.C <= max(r.C for r in runs):
            raise ConfigError(f"targets: {target.run} (N {target.N:.3g}, D/N "
                              f"{target.tokens_per_param:.3g}) is inside the grid; a target lies "
                              "beyond it (more parameters, tokens or compute than any grid run)")


def sources_of(spec: StudySpec) -> dict[str, str]:
    """Each corpus label's source as the runs read it: a registered name or ``hf://`` id as
    given, a local path made absolute (the study may be trained from another folder). A local
    path that holds no readable text is a ConfigError naming it."""
    from training.corpora import CORPORA, CorpusError, resolve_corpus

    resolved = {}
    for label, source in spec.corpora.items():
        if source in CORPORA or source.startswith("hf://"):
            resolved[label] = source
            continue
        path = os.path.abspath(os.path.expanduser(source))
        if not os.path.exists(path):
            raise ConfigError(f"corpora.{label}: {source} does not exist; give a registered "
                              f"corpus ({', '.join(sorted(CORPORA))}), a file or folder of text, "
                              "or hf://datasets/ORG/NAME")
        try:
            resolve_corpus(path)
        except CorpusError as exc:
            raise ConfigError(f"corpora.{label}: {exc}") from None
        resolved[label] = path
    return resolved


def plan_study(spec: StudySpec | str, study_dir: str | os.PathLike, *, log=print) -> list:
    """Write the study folder of ``spec`` (runs table, base config, every run's config, the
    tokenizer, ``l2l_study.json``); the same spec planned again into its folder changes nothing.
    Returns the planned runs."""
    from training.study import check_study_destination, is_study, read_plan

    if isinstance(spec, str):
        from l2l.presets import get_preset

        spec = get_preset(spec)
    study = Path(study_dir)
    if (study / STUDY_RECORD).is_file():
        planned = read_spec(study)
        if planned.to_dict() != spec.to_dict():
            changed = [k for k, v in spec.to_dict().items() if planned.to_dict().get(k) != v]
            raise ConfigError(f"{study} is a study planned from another spec (it differs in "
                              f"{', '.join(changed)}); choose another --out, or run the study "
                              f"as planned with `l2l study --config {study / SPEC_FILE}`")
        return read_plan(study)
    # A plan of ours that stopped before its record: its runs are l2l grids (or its spec
    # is written); planned again from scratch if it is the same spec.
    interrupted = is_study(study) and all(r.grid.startswith("l2l-") for r in read_plan(study))
    if (study / SPEC_FILE).is_file() and (study / SPEC_FILE).read_text() != spec.to_yaml():
        raise ConfigError(f"{study} holds an unfinished plan of another spec ({SPEC_FILE}); "
                          "choose another --out")
    if is_study(study) and not interrupted:
        raise ConfigError(f"{study} holds a study of `python -m training.sweep` (runs.csv, "
                          "study.json), not an l2l study; planning here would replace its plan: "
                          "choose another --out")
    check_study_destination(study)  # a file, or a folder of something else: refused
    runs, targets = plan_runs(spec)
    sources = sources_of(spec)
    log(f"[plan] {study}: {len(runs)} runs ({len(runs) - len(targets)} grid, {len(targets)} "
        f"targets) on {len(sources)} corpora; {cost_line(plan_cost(spec, runs))}")
    _write_plan(spec, study, runs, targets, sources, log)
    return runs


def _write_plan(spec, study: Path, runs, targets, sources, log) -> None:
    from analysis.atomic import write_atomic
    from training.launch import write_run_configs
    from training.study import write_plan

    recipe = spec.recipe.with_overrides([])
    recipe.data.tokenizer = (str((study / TOKENIZER_DIR).resolve()) if spec.bpe_vocab is not None
                             else spec.tokenizer)
    write_plan(runs, study, base=recipe, corpora=sources)
    write_atomic(study / SPEC_FILE, spec.to_yaml())
    tokenizer = {"name": spec.tokenizer}
    if spec.bpe_vocab is not None:
        tokenizer = train_study_tokenizer(spec, sources, study, log=log)
    write_run_configs(study, build=lambda folder, run: run_training_config(folder, run, spec))
    # The record last: a folder without it is an interrupted plan, planned again from scratch.
    write_atomic(study / STUDY_RECORD, json.dumps({
        "spec": spec.to_dict(), "targets": targets, "corpora": sources,
        "tokenizer": tokenizer, **plan_cost(spec, runs)}, indent=1))


def train_study_tokenizer(spec: StudySpec, sources: dict[str, str], study: Path, *,
                          log=print) -> dict:
    """The study's ``bpe:V`` tokenizer, trained on an equal share of ``tokenizer_sample_bytes``
    characters from each corpus, saved to ``STUDY/tokenizer/``. Each sample starts after the
    text of the corpus' held-out split, so that no evaluation text trains the tokenizer."""
    from modeling_l2l.tokenizer import train_offline_tokenizer
    from training.corpora import iter_documents, resolve_corpus

    folder = study / TOKENIZER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    share = spec.tokenizer_sample_bytes // len(sources)
    skip = spec.recipe.data.val_sequences * spec.recipe.data.seq_len * HELD_OUT_CHARS_PER_TOKEN
    files, taken = [], {}
    log(f"[plan] training the study's tokenizer ({spec.tokenizer}) on {share:,} characters of "
        f"each corpus")
    for label, source in sources.items():
        seen, parts = 0, []
        for text in iter_documents(resolve_corpus(source)):
            if seen >= skip:
                parts.append(text)
            seen += len(text)
            if seen >= skip + share:
                break
        sample = "\n".join(parts)[:share]
        if not sample.strip():
            raise ConfigError(f"corpora.{label}: {source} holds only {seen:,} characters of text, "
                              f"all of them held out for evaluation; the tokenizer needs more "
                              "text from it")
        path = folder / f"sample-{label}.txt"
        path.write_text(sample, encoding="utf-8")
        files.append(path)
        taken[label] = len(sample)
    try:
        tokenizer = train_offline_tokenizer(spec.bpe_vocab, files=files,
                                            model_max_length=spec.recipe.data.seq_len)
    except ValueError as exc:  # a sample too small or too repetitive for V tokens
        raise ConfigError(f"tokenizer: {spec.tokenizer}: {exc}; lower V, or raise "
                          "tokenizer_sample_bytes") from None
    tokenizer.save_pretrained(str(folder))
    for path in files:
        path.unlink()  # the text is the corpora's; the record says what was taken
    return {"name": spec.tokenizer, "folder": TOKENIZER_DIR, "vocab_size": spec.bpe_vocab,
            "sample_chars": taken, "skipped_chars": skip}


def read_record(study_dir: str | os.PathLike) -> dict:
    """``l2l_study.json`` of a study, checked; a ValueError names what is wrong and the fix."""
    path = Path(study_dir) / STUDY_RECORD
    if not path.is_file():
        raise ValueError(f"{study_dir} is not an l2l study (no {STUDY_RECORD}); create one with "
                         "`l2l plan --preset NAME --out DIR` or `l2l plan --config STUDY.yaml`")
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); plan the study again into a new "
                         "folder") from None
    if not isinstance(record, dict) or not {"spec", "targets", "corpora"} <= set(record):
        raise ValueError(f"{path}: expected an object with spec, targets and corpora; plan the "
                         "study again into a new folder")
    targets = record["targets"]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"{path}: targets must be a list of run names, got {targets!r}")
    if not isinstance(record["corpora"], dict):
        raise ValueError(f"{path}: corpora must map each label to its source")
    return record


def read_spec(study_dir: str | os.PathLike) -> StudySpec:
    """The spec a study was planned from (its ``l2l_study.json``)."""
    record = read_record(study_dir)
    try:
        return StudySpec.from_dict(record["spec"])
    except ConfigError as exc:
        raise ValueError(f"{Path(study_dir) / STUDY_RECORD}: spec: {exc}") from None


def run_training_config(study_dir: str | os.PathLike, run, spec: StudySpec):
    """The full training config of one planned run: the study's recipe at the run's shape,
    corpus and tokens (``training.study.run_config``), with the spec's scaling rule."""
    from training.study import run_config

    cfg = run_config(study_dir, run)
    if spec.scaling == "inverse-sqrt-width":
        cfg.optim.lr = spec.recipe.optim.lr / math.sqrt(run.d_model / 64)
    elif spec.scaling == "olmo-ladder":
        cfg.scale_like_olmo_ladder(run.N)
        cfg.batch.global_batch_size = run.global_batch_size  # as planned, by the same rule
    return cfg.validate()


def target_spec(spec: StudySpec, run) -> Target | None:
    """The spec's target of that planned run (by shape), or None for a grid run."""
    for target in spec.targets:
        if (target.shape.width, target.shape.layers) == (run.d_model, run.n_layers):
            return target
    return None
