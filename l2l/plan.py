"""``l2l plan``: a preset becomes a study folder (``training.study``'s contract) plus
``l2l_study.json``, which records the preset and which runs are targets (never fitted).

Shapes decouple width and depth (the tiny presets need 1- and 2-layer models of several
widths); the paper presets use ``training.sweep``'s grids, where width is 64 x depth. Every run
gets its width, heads and learning rate (``peak_lr / sqrt(n)`` at width 64 n) in its own config,
written by ``run_training_config``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from l2l.layout import STUDY_RECORD
from l2l.presets import StudyPreset, get_preset


def _shape_runs(preset: StudyPreset) -> tuple[list, list[str]]:
    from analysis.sizes import param_count
    from modeling_l2l.run_names import format_run_name
    from training.corpora import corpus_label
    from training.study import PlannedRun

    tokens_per_step = preset.global_batch_size * preset.seq_len
    runs, targets = [], []
    points = [(shape, c, False) for shape in preset.shapes for c in preset.budgets]
    points += [(t.shape, t.flop_budget, True) for t in preset.targets]
    for corpus in preset.corpora:
        dataset = corpus_label(corpus)
        for shape, budget, is_target in points:
            n_params = param_count(shape.width, shape.layers, preset.vocab_size)
            steps = int(budget / (6 * n_params)) // tokens_per_step
            if steps < 1:
                raise ValueError(f"preset {preset.name}: width {shape.width} x {shape.layers} "
                                 f"layers at C = {budget:.1e} is less than one step")
            tokens = steps * tokens_per_step
            name = format_run_name(dataset, n_params, tokens, budget)
            runs.append(PlannedRun(
                run=name, dataset=dataset, N=n_params, D=tokens, C=float(budget),
                n_layers=shape.layers, d_model=shape.width, steps=steps,
                tokens_per_param=tokens / n_params, global_batch_size=preset.global_batch_size,
                seq_len=preset.seq_len, grid=f"l2l-{preset.name}"))
            if is_target:
                targets.append(name)
    return runs, targets


def _sweep_runs(preset: StudyPreset) -> tuple[list, list[str]]:
    from training import sweep

    common = dict(vocab_size=preset.vocab_size, global_batch_size=preset.global_batch_size,
                  seq_len=preset.seq_len)
    if preset.grid == "loss-to-loss":
        runs = sweep.loss_to_loss_grid(list(preset.corpora), **common)
        largest = max(run.C for run in runs)
        return runs, [run.run for run in runs if run.C == largest]
    if preset.grid == "ladder":
        from training.study import base_config

        # OLMo-ladder's batch grows with the model: the recipe's, at each depth.
        common["global_batch_size"] = lambda n: base_config(
            preset.training_preset, None, [], n).batch.global_batch_size
        runs = sweep.ladder_grid((4, 8, 12, 16), list(preset.corpora), **common)
        deepest = max(run.n_layers for run in runs)
        most = max(run.tokens_per_param for run in runs if run.n_layers == deepest)
        return runs, [r.run for r in runs
                      if r.n_layers == deepest and r.tokens_per_param == most]
    raise ValueError(f"preset {preset.name}: unknown grid {preset.grid!r}")


def shared_overrides(preset: StudyPreset) -> list[str]:
    """The dotted overrides that every run of the study shares."""
    shared = [
        f"data.tokenizer={preset.tokenizer}",
        f"model.vocab_size={preset.vocab_size}",
        f"data.seq_len={preset.seq_len}",
        f"data.val_sequences={preset.val_sequences}",
        f"batch.micro_batch_size={preset.micro_batch_size}",
        "logging.progress_bar=false",
    ]
    if preset.grid == "shapes":  # the paper recipes keep their own schedules and trackers
        # Runs of a minute or two: a checkpoint every 50 steps (the tiny-cpu recipe's) cost
        # more than the steps themselves; every 500 still bounds what a kill loses.
        shared += [f"schedule.warmup_fraction={preset.warmup_fraction}",
                   f"schedule.final_lr_fraction={preset.final_lr_fraction}",
                   "logging.trackers=[]", "logging.log_every=50", "checkpoint.every_steps=500"]
    return shared + list(preset.training_overrides)


def plan_study(preset: StudyPreset | str, study_dir: str | os.PathLike) -> list:
    """Write the study folder of ``preset`` (its runs table, base config and l2l_study.json);
    an existing study of the same preset is left as it is. Returns the planned runs."""
    from training.study import is_study, read_plan, write_plan

    preset = get_preset(preset) if isinstance(preset, str) else preset
    study = Path(study_dir)
    record = study / STUDY_RECORD
    if is_study(study) and record.is_file():
        existing = read_record(study)
        if existing["preset"] != preset.name:
            raise ValueError(f"{study} is a study of preset {existing['preset']!r}, not "
                             f"{preset.name!r}; choose another --out")
        return read_plan(study)
    runs, targets = _shape_runs(preset) if preset.grid == "shapes" else _sweep_runs(preset)
    write_plan(runs, study, preset=preset.training_preset, overrides=shared_overrides(preset),
               corpora=list(preset.corpora))
    from analysis.atomic import write_atomic

    write_atomic(record, json.dumps({"preset": preset.name, "targets": targets,
                                     "corpora": list(preset.corpora)}, indent=1))
    return runs


def read_record(study_dir: str | os.PathLike) -> dict:
    """``l2l_study.json`` of a study, checked; a ValueError names what is wrong."""
    path = Path(study_dir) / STUDY_RECORD
    if not path.is_file():
        raise ValueError(f"{study_dir} is not an l2l study (no {STUDY_RECORD}); create one with "
                         "`l2l plan --preset NAME --out DIR` or `l2l study --preset NAME`")
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or not {"preset", "targets", "corpora"} <= set(record):
        raise ValueError(f"{path}: expected an object with preset, targets and corpora")
    return record


def run_training_config(study_dir: str | os.PathLike, run, preset: StudyPreset):
    """The full training config of one planned run (``training.study.run_config``: the study's
    shared config, this run's width and depth), with the preset's learning-rate rule."""
    from training.study import run_config

    cfg = run_config(study_dir, run)
    if preset.grid != "shapes":  # the paper recipes set their own learning rates
        return cfg
    return cfg.with_overrides([f"optim.lr={preset.peak_lr / math.sqrt(run.d_model / 64):.6g}"])
