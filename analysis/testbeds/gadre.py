"""The over-training testbed (Gadre et al. 2024, "Language models scale reliably with over-training
and on downstream tasks").

Source: mlfoundations/scaling, ``exp_data/``. ``models/<run>.json`` holds a run's hyperparameters
and its validation losses, ``evals/evaluation_<run>_heavy.json`` its 46 downstream accuracies.
Conventions, as ``scaling/shared.py`` reads them: N = ``hyperparameters.params`` (with
embeddings), D = ``hyperparameters.tokens``, C = 6 N D, M = 20 x ``chinchilla_multiplier`` (the
paper's token multiplier), the validation loss on ``<set>`` is metric ``loss_<set>`` where ``<set>``
is the second-to-last part of the result's ``val_data`` path (``loss_c4_val`` is the paper's
default, C4-eval), and a task's top-1 accuracy is metric ``acc_<task>``.
"""

from __future__ import annotations

import json
import os

import pandas as pd

from analysis.testbeds.sources import Folder, GitHubFolder, resolve
from analysis.testbeds.table import positive_finite, tidy_from_wide

SOURCE = GitHubFolder("mlfoundations/scaling", "exp_data")
MODELS_DIR = "models"
EVALS_DIR = "evals"

DATASETS = ("c4_original", "rpj", "rw_original")
# open_lm configurations, smallest first, with the paper's names for them.
MODEL_SIZES = {
    "d=96_l=8_h=4": "0.011B",
    "d=512_l=8_h=4": "0.079B",
    "d=576_l=24_h=8": "0.154B",
    "d=1024_l=24_h=8": "0.411B",
    "open_lm_1b": "1.4B",
    "open_lm_7b": "6.9B",
}
# The paper's 17-task subset ("17-task split"; scaling/constants.py SUBSET): tasks on which the
# 0.154B model beats chance, over which the downstream error law is fitted.
SUBSET_17 = (
    "arc_easy",
    "bigbench_cs_algorithms",
    "bigbench_dyck_languages",
    "bigbench_novel_concepts",
    "bigbench_operators",
    "bigbench_qa_wikidata",
    "boolq",
    "commonsense_qa",
    "copa",
    "coqa",
    "hellaswag",
    "hellaswag_zeroshot",
    "lambada_openai",
    "piqa",
    "pubmed_qa_labeled",
    "squad",
    "winograd",
)


def model_name(run: str) -> str:
    """The open_lm configuration of a run named ``<dataset>-<model>-<chinchilla multiplier>``."""
    head, _, _ = run.rpartition("-")
    _, _, model = head.partition("-")
    if not model:
        raise ValueError(f"run name {run!r} is not <dataset>-<model>-<multiplier>")
    return model


def _parse_model(raw: bytes, origin: str) -> dict:
    try:
        record = json.loads(raw)
        hyper = record["hyperparameters"]
        row = {
            "run": str(record["name"]),
            "dataset": str(record["dataset_name"]),
            "N": positive_finite(hyper["params"], what="hyperparameters.params", origin=origin),
            "D": positive_finite(hyper["tokens"], what="hyperparameters.tokens", origin=origin),
            "M": 20.0
            * positive_finite(
                hyper["chinchilla_multiplier"],
                what="hyperparameters.chinchilla_multiplier",
                origin=origin,
            ),
        }
        if "params_no_embed" in hyper:
            row["params_no_embed"] = float(hyper["params_no_embed"])
        for result in record["results"]:
            path = result["val_data"][0]
            # scaling/shared.py: the validation set is named by the folder of its first shard,
            # except the German set, named by its file.
            suffix = path.split("/")[-2]
            if "de-en" in suffix:
                suffix = path.split("/")[-1].split(".")[0]
            row[f"loss_{suffix}"] = float(result["loss"])
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{origin}: not a Gadre et al. model record ({error!r})") from error
    row["C"] = 6.0 * row["N"] * row["D"]
    return row


def _parse_eval(raw: bytes, origin: str) -> dict:
    try:
        icl = json.loads(raw)["eval_metrics"]["icl"]
        return {f"acc_{task}": (float("nan") if v is None else float(v)) for task, v in icl.items()}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{origin}: not a Gadre et al. evaluation record ({error!r})") from error


def read_models(
    source: str | os.PathLike | Folder | None = None, *, evals: bool = True
) -> pd.DataFrame:
    """One row per run: coordinates, ``params_no_embed``, ``loss_<set>`` and ``acc_<task>`` columns."""
    root = resolve(source, SOURCE)
    models = root.child(MODELS_DIR)
    if not models.exists():
        raise FileNotFoundError(f"no {MODELS_DIR}/ folder in {root.describe()}{root.provenance()}")
    names = [n for n in models.names() if n.endswith(".json")]
    if not names:
        raise FileNotFoundError(f"no model .json files in {models.describe()}")
    eval_folder = root.child(EVALS_DIR)
    if evals and not eval_folder.exists():
        raise FileNotFoundError(
            f"no {EVALS_DIR}/ folder in {root.describe()} (pass evals=False for losses only)"
        )
    rows = []
    for name in _progress(names, root):
        row = _parse_model(models.read_bytes(name), models.describe(name))
        if evals:
            eval_name = f"evaluation_{name.removesuffix('.json')}_heavy.json"
            if not eval_folder.exists(eval_name):
                raise FileNotFoundError(
                    f"{models.describe(name)} has no evaluation file {eval_folder.describe(eval_name)}"
                )
            row.update(
                _parse_eval(eval_folder.read_bytes(eval_name), eval_folder.describe(eval_name))
            )
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame["run"].duplicated().any():
        raise ValueError(
            f"{models.describe()}: run names repeat: {frame['run'][frame['run'].duplicated()]}"
        )
    return frame.sort_values(["dataset", "C", "run"], kind="stable").reset_index(drop=True)


def load_gadre(
    source: str | os.PathLike | Folder | None = None, *, evals: bool = True, dropna: bool = False
) -> pd.DataFrame:
    """The runs as the tidy testbed table (one row per run and loss or accuracy)."""
    frame = read_models(source, evals=evals)
    metrics = [
        c for c in frame.columns if c.startswith(("loss_", "acc_")) or c == "params_no_embed"
    ]
    return tidy_from_wide(frame, metrics, origin=resolve(source, SOURCE).describe(), dropna=dropna)


def _progress(names: list[str], root: Folder):
    # Local JSON parses in milliseconds; only downloads are slow enough to deserve a bar.
    if isinstance(root, GitHubFolder):
        from tqdm.auto import tqdm

        return tqdm(names, desc=f"reading {root.describe()}", unit="run")
    return names
