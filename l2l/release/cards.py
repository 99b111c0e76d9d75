"""The model cards of a release: the repository's (every released run, the runs left out and
why, the results table, the laws) and each run's (what it is, how to load it, and its results as
the model-index the Hub shows)."""

from __future__ import annotations

import math
import os
import re

from huggingface_hub import EvalResult, ModelCardData

from l2l.layout import FIGURES_DIR, LAWS_DIR, PREDICTIONS, REPORT, RESULTS
from l2l.release.survey import Run, Survey

CARD_NAME = "README.md"
TAGS = ("l2l", "scaling-laws")
REPO_PLACEHOLDER = "ORG/NAME"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _front_matter(data) -> str:
    return f"---\n{data.to_yaml()}\n---\n"


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value, spec: str = ".3g") -> str:
    return "?" if value is None else (format(value, spec) if _finite(value) else str(value))


def _dataset_of(row: dict, run: Run) -> str:
    """What a result was measured on, for the model-index: the row's source when it is a Hub id
    or a plain name (never a local path), else the metric's group (``eval/c4_val/...``)."""
    source = str(row.get("source") or "")
    if source and not os.path.isabs(source) and not source.startswith((".", "~")):
        if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source) and not os.path.exists(source):
            return source
    parts = str(row["metric"]).split("/")
    # a bare metric (val_loss) is on the run's own corpus: evaluation's eval/{corpus}_val/...
    return parts[-2] if len(parts) >= 2 else f"{run.value('dataset')}_val"


def _eval_results(run: Run) -> list:
    """One EvalResult per results row with a finite value (the Hub's metadata check rejects NaN;
    such rows stay in results.jsonl)."""
    results = []
    for row in run.rows:
        if not _finite(row.get("value")):
            continue
        dataset = _dataset_of(row, run)
        results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type=str(row["metric"]),
                metric_name=str(row["metric"]),
                metric_value=float(row["value"]),
            )
        )
    return results


def run_card(run: Run, survey: Survey, repo: str) -> str:
    """The model card of one run: what it is, how to load it, its results (model-index)."""
    results = _eval_results(run)
    data = ModelCardData(
        library_name="transformers",
        tags=list(TAGS),
        pipeline_tag="text-generation",
        model_name=run.name if results else None,
        eval_results=results or None,
    )
    final, config = run.final, run.config
    loss = final.get("final_val_loss")
    role = (
        "a target run: trained like the grid but never fitted, the laws predict it"
        if run.name in survey.targets
        else "one run of the grid the study's laws are fitted on"
    )
    table = [
        ("training corpus", f"`{run.value('dataset')}`"),
        ("N (parameters, embeddings included)", _fmt(run.value("N"), ",")
         if isinstance(run.value("N"), int) else _fmt(run.value("N"))),
        ("D (training tokens)", _fmt(run.value("D"), ",")
         if isinstance(run.value("D"), int) else _fmt(run.value("D"))),
        ("C (FLOPs)", _fmt(run.value("C"), ".2e")),
        ("layers x width", f"{config.get('num_hidden_layers', '?')} x "
                           f"{config.get('hidden_size', '?')}"),
        ("steps", _fmt(final.get("steps"), "d") if isinstance(final.get("steps"), int) else "?"),
        ("final validation loss", _fmt(loss, ".4f")),
    ]  # fmt: skip
    lines = [
        _front_matter(data),
        f"# {run.name}\n",
        f"A decoder-only language model of the scaling study `{survey.study.name}`"
        + (f" (study `{survey.preset}`)" if survey.preset else "")
        + f", {role}. The folder name follows the loss-to-loss paper's runs: "
        "`L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}`.\n",
        "| | |\n|---|---|",
        *(f"| {key} | {value} |" for key, value in table),
        "",
        "## Load it\n",
        "```python",
        "from transformers import AutoModelForCausalLM",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo}", subfolder="{run.name}", '
        "trust_remote_code=True)",
    ]
    if any(name in run.files for name in TOKENIZER_FILES):
        lines[-3] = "from transformers import AutoModelForCausalLM, AutoTokenizer"
        lines.append(f'tokenizer = AutoTokenizer.from_pretrained("{repo}", subfolder="{run.name}")')
    lines += [
        "```\n",
        "`trust_remote_code=True` runs `modeling_l2l.py` of this repository; with the l2l "
        "package installed (`import modeling_l2l`) the installed code is used instead.\n",
    ]
    if run.rows:
        lines += ["## Evaluation\n", f"From the study's `{RESULTS}`:\n",
                  "| metric | value | n |", "|---|---|---|"]  # fmt: skip
        lines += [f"| `{r['metric']}` | {_fmt(r.get('value'), '.4g')} | {_fmt(r.get('n'))} |"
                  for r in sorted(run.rows, key=lambda r: str(r["metric"]))]  # fmt: skip
        lines.append("")
    lines += [
        "## Files\n",
        "`config.json`, `model.safetensors` and the model code (`configuration_l2l.py`, "
        "`modeling_l2l.py`); `training_config.yaml`, the full training config; `metrics.jsonl`, "
        "one line per logged step; `final.json`, the run's summary.\n",
    ]
    return "\n".join(lines)


def study_card(survey: Survey, repo: str) -> str:
    """The repository's model card: every released run, what was left out and why, the data."""
    data = ModelCardData(library_name="transformers", tags=list(TAGS),
                         pipeline_tag="text-generation")  # fmt: skip
    example = survey.runs[0].name
    lines = [
        _front_matter(data),
        f"# Scaling study `{survey.study.name}`\n",
        f"{len(survey.runs)} language models of a scaling study"
        + (f" (l2l study `{survey.preset}`)" if survey.preset else "")
        + ", trained with the l2l project, laid out like the loss-to-loss paper's "
        "`KempnerInstituteAI/loss-to-loss`: one folder per run, named "
        "`L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}` (training corpus, parameters, training "
        "tokens, FLOPs).\n",
        "## Load a run\n",
        "```python",
        "from transformers import AutoModelForCausalLM",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo}", subfolder="{example}", '
        "trust_remote_code=True)",
        "```\n",
        "The model code is in every run folder and, for loading with `subfolder=`, at the root "
        "of the repository too (transformers reads remote code from the root).\n",
    ]
    if survey.code_note:
        lines.append(survey.code_note + "\n")
    lines += ["## Runs\n", "| run | dataset | N | D | C | val loss |", "|---|---|---|---|---|---|"]
    for run in survey.runs:
        name = f"`{run.name}`" + (" (target)" if run.name in survey.targets else "")
        lines.append(
            f"| {name} | {run.value('dataset')} | {_fmt(run.value('N'))} | "
            f"{_fmt(run.value('D'))} | {_fmt(run.value('C'), '.2e')} | "
            f"{_fmt(run.final.get('final_val_loss'), '.4f')} |"
        )
    lines.append("")
    if survey.targets & {run.name for run in survey.runs}:
        lines.append("Target runs were trained like the others but never fitted: the study's "
                     "laws predict them.\n")  # fmt: skip
    if survey.left_out:
        lines += [f"## Left out ({len(survey.left_out)})\n",
                  "Runs of the study that are not in this release:\n",
                  "| run | why |", "|---|---|"]  # fmt: skip
        lines += [f"| `{run}` | {why} |" for run, why in survey.left_out.items()]
        lines.append("")
    else:
        lines.append("Every planned run of the study is released.\n")
    lines.append("## Data\n")
    if survey.results is not None:
        lines += [
            f"`{RESULTS}`: the study's results table, {survey.n_rows} tidy rows (one per "
            "run and metric: run, dataset, N, D, C, metric, value, n, source, ...):\n",
            "```python",
            "from datasets import load_dataset",
            "from huggingface_hub import hf_hub_download",
            "",
            f'path = hf_hub_download("{repo}", "{RESULTS}")',
            'results = load_dataset("json", data_files=path, split="train")',
            "```\n",
        ]
    else:
        lines.append(f"The study has no results table (`{RESULTS}`) yet.\n")
    if PREDICTIONS in survey.top_files:
        lines.append(f"`{PREDICTIONS}`: what the fitted laws predict.\n")
    if REPORT in survey.top_files:
        lines.append(f"`{REPORT}`: the study's report, with its figures in "
                     f"`{FIGURES_DIR}/`.\n")  # fmt: skip
    if survey.laws:
        lines += [
            f"## Laws ({len(survey.laws)})\n",
            f"`{LAWS_DIR}/<name>/`, each a law fitted with l2l's `analysis` "
            "(`Law.save_pretrained`):\n",
            "| law | form |",
            "|---|---|",
            *(f"| `{name}` | `{form}` |" for name, form in survey.laws.items()),
            "",
            "```python",
            "from huggingface_hub import snapshot_download",
            "from analysis import load_law",
            "",
            f'root = snapshot_download("{repo}", allow_patterns=["{LAWS_DIR}/*"])',
            f'law = load_law(f"{{root}}/{LAWS_DIR}/{next(iter(survey.laws))}")',
            "```\n",
        ]
    if survey.bad_laws:
        lines += ["Law folders of the study that do not load, not released:\n"]
        lines += [f"- `{name}`: {why}" for name, why in survey.bad_laws.items()]
        lines.append("")
    return "\n".join(lines)
