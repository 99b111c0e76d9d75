"""``l2l release``: a finished study as a Hub repository laid out like the paper's.

The paper's runs live in one repository, ``KempnerInstituteAI/loss-to-loss``, one folder per run
named ``L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}``. ``build_release(study)`` writes a study in
that layout to ``STUDY/release/``::

    release/
        README.md                  model card: the released runs, the runs left out and why
        results.jsonl              the study's results table (evaluation's tidy rows)
        predictions.csv            the laws' predictions (when the study has them)
        report.md, figures/*.png   the study's report (when written)
        laws/<name>/               every fitted law analysis can load (analysis.load_law)
        configuration_l2l.py       the model code, also at the root: transformers looks for
        modeling_l2l.py            remote code at the root of a repository even when loading
                                   a subfolder (from_pretrained(repo, subfolder=run, ...))
        <run>/                     one per finished run (its folder holds final.json):
            config.json (with auto_map), configuration_l2l.py, modeling_l2l.py,
            model.safetensors, generation_config.json, tokenizer files, training_config.yaml,
            metrics.jsonl, final.json, README.md (model card, model-index of its results)
        .l2l-release.json          manifest: every file's size and hashes (never uploaded)

Nothing else of a run folder is copied: not its checkpoints/, logs/, .lock or corpus.json (local
paths). The folder is built in a hidden sibling and renamed into place, so an interrupted build
leaves the previous release (or none), never a half-written one.

``push_release(study, "org/name")`` uploads it with huggingface_hub: one commit per run, then one
for the top-level files. Runs whose files are on the Hub already (same size and hash) are
skipped, so a rerun after an interruption uploads only what is missing. From the shell::

    l2l release STUDY --dry-run                 # write STUDY/release/ and list it
    l2l release STUDY --repo-id org/my-study    # ... and push it (HF_TOKEN or `hf auth login`)

The package, one module per concept: ``survey`` (what a study's release holds, read from the
study folder), ``cards`` (the model cards), ``build`` (the folder and its manifest), ``push``
(the upload) and ``cli`` (the command line). Its names load on first use, so that
``l2l release --help`` answers at once without importing torch, the Hub client or analysis'
fitting code (``analysis.lazy``, the packages' shared lazy-name mechanism, is stdlib only).
"""

from __future__ import annotations

from analysis.lazy import lazy_names

# name -> the module of this package that defines it, imported on first use (PEP 562)
_EXPORTS = {
    "build_parser": ".cli",
    "main": ".cli",
    "run_cli": ".cli",
    "build_release": ".build",
    "describe_release": ".build",
    "read_manifest": ".build",
    "release_is_current": ".build",
    "MANIFEST_NAME": ".build",
    "_Writer": ".build",
    "check_repo_id": ".push",
    "push_release": ".push",
    "resolve_token": ".push",
    "check_study": ".survey",
}


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)


__all__ = sorted(name for name in _EXPORTS if not name.startswith("_"))
