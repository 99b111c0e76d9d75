"""Training of the loss-to-loss paper's sweeps (and OLMo-ladder and over-training grids) with
accelerate, from a laptop CPU to multi-node GPU clusters under slurm.

- ``training.config``: ``TrainingConfig``, the typed config (YAML, dotted overrides, presets).
- ``training.sweep`` / ``training.study``: plan a study as a table of runs; the study folder.
- ``training.corpora`` / ``training.data``: corpus registry, tokenised shards, held-out splits
  (``load_validation_split`` for evaluation); unreadable sources raise ``CorpusError``.
- ``training.trainer``: the loop (``train(cfg)``); ``python -m training`` runs it.
- ``training.launch``: accelerate configs, the slurm template, ``python -m training.launch``.

Heavy modules (torch, transformers, datasets) are imported by the submodules that need them,
and the names below on first use, so that ``import training.config`` stays cheap (the ``l2l``
command's help reads the study presets, which hold training configs).
"""

from analysis.lazy import lazy_names

_NAMES = {
    "PRESETS": "training.config",
    "ConfigError": "training.config",
    "TrainingConfig": "training.config",
    "CORPORA": "training.corpora",
    "PAPER_CORPORA": "training.corpora",
    "CorpusError": "training.corpora",
}


__getattr__, __dir__ = lazy_names(__name__, _NAMES)


__all__ = ["CORPORA", "PAPER_CORPORA", "PRESETS", "ConfigError", "CorpusError", "TrainingConfig"]
