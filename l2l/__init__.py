"""The ``l2l`` command: one study from grid to prediction to Hub release.

The only package that imports all four others (``modeling_l2l``, ``training``, ``evaluation``,
``analysis``), so that they keep their one-way dependencies:

- ``layout``: the names of what a study folder holds (``results.jsonl``, ``laws/``, ...);
- ``presets``: what a study trains, evaluates and predicts (``tiny``, ``smoke``, paper presets);
- ``plan``: a preset becomes a study folder (``training.study``'s contract + ``l2l_study.json``);
- ``stages``: training (local processes or a slurm array) and evaluation into ``results.jsonl``;
- ``fits``: single-corpus and loss-to-loss laws, the targets' predictions with 90% intervals;
- ``report``: ``report.md`` and the figures;
- ``release``: the study as a Hub repository laid out like the paper's;
- ``cli``: ``l2l study | plan | train | eval | fit | predict | report | release`` and the
  packages' other tools (``sweep``, ``launch``, ``reproduce``, ``backtest``, ``convert``).
"""
