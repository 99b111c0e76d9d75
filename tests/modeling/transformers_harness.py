"""transformers' own common model tests, taken from the source release of the installed version.

transformers publishes its test harness only with its sources: the wheel has no ``tests/``. The
sdist on PyPI has the common mixins (``tests/test_modeling_common.py``: ``ModelTesterMixin``;
``tests/test_configuration_common.py``: ``ConfigTester``; ``tests/test_pipeline_mixin.py``) but
not everything they import. What the 5.24/5.25 sdists lack, and what stands in for it here:

- ``tests/exporters/test_export.py`` (``ExportTesterMixin``, the base class of
  ``ModelTesterMixin``, with the ``torch.export`` tests): an empty mixin, so the export tests are
  not run.
- ``tests/generation/test_utils.py`` (``GenerationTesterMixin``): an empty mixin marked
  ``STAND_IN``, so transformers' generation tests are not run (the project's own
  ``tests/modeling/test_generation.py`` checks ``generate``); the one common test that asks
  whether the generation mixin is inherited is skipped for that reason.
- ``tests/utils/test_configuration_utils.py`` (``config_common_kwargs``: a non-default value for
  each of ``PreTrainedConfig``'s common fields, which ``ConfigTester`` sets and reads back):
  ``config_common_kwargs()`` below.
- ``tests/causal_lm_tester.py`` (``CausalLMModelTester``/``CausalLMModelTest``): the test module
  writes its model tester the way ``tests/models/llama`` declares one.
- ``tests/__init__.py``: an empty file, which ``test_configuration_common.py`` executes.

``PipelineTesterMixin`` is not used: it runs each pipeline on tiny checkpoints from the Hub and
needs ``tests/pipelines`` and ``tests/utils/tiny_model_summary.json``, neither in the sdist.

The sdist is fetched once per version with pip (``pip download --no-binary :all:``; PyPI is the
one network the project's machines reach), its ``tests/`` folder extracted into
``~/.cache/l2l/transformers-tests/<version>/`` (``$XDG_CACHE_HOME`` is honoured), and reused.
``L2L_TRANSFORMERS_TESTS=/path/to/transformers/tests`` uses a folder of the harness instead (a
checkout of the installed release's tag, for example, which also has the generation tester: then
it is used, not stood in for). When none can be had, the test module skips, saying why.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

import transformers

# The name under which the harness's folder is imported. The project has a `tests` package of its
# own, so the harness cannot be imported as `tests` (its modules import each other relatively).
PACKAGE = "transformers_release_tests"
# Seconds: pip's per-connection timeout, and the limit on the whole download (sdist ~11 MB plus
# the build backend pip installs to read the sdist's metadata).
PIP_SOCKET_TIMEOUT_S = 30
DOWNLOAD_TIMEOUT_S = 300
# The files this module imports from the harness: without any of them there is nothing to run.
REQUIRED = ("test_modeling_common.py", "test_configuration_common.py")


class HarnessUnavailable(RuntimeError):
    """The harness of the installed release cannot be had; the message says why."""


@dataclass
class Harness:
    """The imported harness: its mixins and what was stood in for."""

    version: str
    folder: Path
    modeling_common: types.ModuleType
    configuration_common: types.ModuleType
    stood_in: list[str] = field(default_factory=list)

    @property
    def generation_tester_is_real(self) -> bool:
        return "generation/test_utils.py" not in self.stood_in


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "l2l" / "transformers-tests"


def _download_sdist(version: str, into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-deps",
        "--no-binary", ":all:", "--dest", str(into), "--timeout", str(PIP_SOCKET_TIMEOUT_S),
        "--retries", "1", "--quiet", "--disable-pip-version-check",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise HarnessUnavailable(
            f"downloading the transformers {version} sdist from PyPI took over "
            f"{DOWNLOAD_TIMEOUT_S} s") from error
    except OSError as error:
        raise HarnessUnavailable(
            f"cannot run pip to fetch the transformers {version} sdist: {error}") from error
    archives = sorted(into.glob(f"transformers-{version}.tar.gz"))
    if done.returncode != 0 or not archives:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise HarnessUnavailable(
            f"pip could not download the transformers {version} sdist (offline?): {last}")
    return archives[0]


def _extract_tests(archive: Path, version: str, into: Path) -> None:
    """Extract ``transformers-<version>/tests/`` only: regular files, no path leaves the folder."""
    prefix = f"transformers-{version}/tests/"
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.name.startswith(prefix) or not member.isfile():
                continue
            relative = Path(member.name[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:
                continue
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    # test_configuration_common.py executes the folder's __init__.py; the sdist has none.
    (into / "__init__.py").touch()


def harness_folder(version: str) -> Path:
    """The folder holding the harness of ``version``: the override, the cache, or fetched now."""
    override = os.environ.get("L2L_TRANSFORMERS_TESTS")
    if override:
        folder = Path(override)
        if not (folder / REQUIRED[0]).is_file():
            raise HarnessUnavailable(
                f"L2L_TRANSFORMERS_TESTS={override} holds no {REQUIRED[0]}")
        return folder
    folder = cache_root() / version
    if (folder / REQUIRED[0]).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{version}-") as scratch:
        archive = _download_sdist(version, Path(scratch) / "sdist")
        staged = Path(scratch) / "tests"
        staged.mkdir()
        _extract_tests(archive, version, staged)
        try:  # atomic: a concurrent run either wins the rename or finds the folder complete
            staged.rename(folder)
        except OSError:
            if not (folder / REQUIRED[0]).is_file():
                raise
    return folder


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def config_common_kwargs() -> dict:
    """A value other than the default for common fields of every ``PreTrainedConfig``.

    Stands in for the dict of ``tests/utils/test_configuration_utils.py``: ``ConfigTester`` builds
    the model's config with these and checks that each is kept. Only fields that every config
    owns (none of them architectural); ``dtype`` is checked by the harness as float16.
    """
    return {
        "return_dict": False,
        "output_hidden_states": True,
        "output_attentions": True,
        "dtype": "float16",
        "chunk_size_feed_forward": 5,
        "architectures": ["L2LForCausalLM"],
        "id2label": {0: "label"},
        "label2id": {"label": "0"},
        "problem_type": "regression",
    }


def _stand_ins(folder: Path) -> dict[str, types.ModuleType]:
    """Modules the harness imports that the folder lacks, keyed by their path in the folder."""

    class ExportTesterMixin:  # the torch.export tests are not run
        pass

    class GenerationTesterMixin:  # transformers' generation tests are not run
        STAND_IN = True

    candidates = {
        "exporters/test_export.py": _module(
            f"{PACKAGE}.exporters.test_export", ExportTesterMixin=ExportTesterMixin),
        "generation/test_utils.py": _module(
            f"{PACKAGE}.generation.test_utils", GenerationTesterMixin=GenerationTesterMixin),
        "utils/test_configuration_utils.py": _module(
            f"{PACKAGE}.utils.test_configuration_utils",
            config_common_kwargs=config_common_kwargs()),
    }
    return {path: module for path, module in candidates.items() if not (folder / path).is_file()}


def load(version: str | None = None) -> Harness:
    """Import the harness of the installed (or the given) transformers release."""
    version = version or transformers.__version__
    folder = harness_folder(version)
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise HarnessUnavailable(f"the harness in {folder} lacks {', '.join(missing)}")
    if importlib.util.find_spec("parameterized") is None:
        raise HarnessUnavailable(
            "transformers' harness needs the `parameterized` package (pip install -e '.[dev]')")
    if PACKAGE not in sys.modules:
        package = _module(PACKAGE, __path__=[str(folder)], __file__=str(folder / "__init__.py"))
        sys.modules[PACKAGE] = package
        stand_ins = _stand_ins(folder)
        for module in stand_ins.values():
            parent = module.__name__.rsplit(".", 1)[0]
            if parent not in sys.modules:
                sys.modules[parent] = _module(parent, __path__=[])
            sys.modules[module.__name__] = module
        package.stood_in = sorted(stand_ins)
    package = sys.modules[PACKAGE]
    try:
        modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
        configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    except ImportError as error:  # a release whose harness imports a piece we cannot provide
        raise HarnessUnavailable(
            f"transformers {version}'s harness in {folder} does not import: {error}") from error
    return Harness(version, folder, modeling, configuration, list(package.stood_in))
