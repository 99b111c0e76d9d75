"""The names of what an l2l study folder holds, spelled once.

``training.study`` owns the planner's files (``runs.csv``, ``runs.json``, ``study.json``,
``base_config.yaml``), the run folders and their finished test (``final.json``); ``training.launch``
the ``configs/`` folder. The l2l command adds, stage by stage::

    STUDY/l2l_study.json    l2l plan: the spec, the corpora, the tokenizer and the target runs
    STUDY/spec.yaml         l2l plan: the study's spec as YAML (l2l study --config runs it)
    STUDY/tokenizer/        l2l plan: the study's tokenizer (bpe:V), trained on every corpus
    STUDY/logs/<run>.log    l2l train: each local training process' output
    STUDY/results.jsonl     l2l eval: the tidy results table (evaluation writes, analysis reads)
    STUDY/laws/<name>/      l2l fit: every fitted law (``analysis.load_law``)
    STUDY/predictions.csv   l2l fit: the target runs as the laws predict them
    STUDY/decisions.csv     l2l fit: which corpus wins each metric at the targets, with odds
    STUDY/report.md         l2l report, with its figures in STUDY/figures/*.png
    STUDY/release/          l2l release: the study laid out as a Hub repository
"""

STUDY_RECORD = "l2l_study.json"
SPEC_FILE = "spec.yaml"
TOKENIZER_DIR = "tokenizer"
LOGS_DIR = "logs"
RESULTS = "results.jsonl"
LAWS_DIR = "laws"
PREDICTIONS = "predictions.csv"
DECISIONS = "decisions.csv"
REPORT = "report.md"
FIGURES_DIR = "figures"
RELEASE_DIR = "release"
