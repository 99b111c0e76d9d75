"""The loader of transformers' test harness: what it extracts, where it caches, and how it says
that the harness cannot be had."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.modeling import transformers_harness as harness


def _sdist(path, version, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"transformers-{version}/tests/link.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return path


def test_only_the_tests_folder_is_extracted_and_nothing_leaves_it(tmp_path):
    archive = _sdist(tmp_path / "t.tar.gz", "9.9.9", {
        "transformers-9.9.9/tests/test_modeling_common.py": b"x = 1\n",
        "transformers-9.9.9/tests/generation/helpers.py": b"y = 2\n",
        "transformers-9.9.9/tests/../../escape.py": b"no\n",
        "transformers-9.9.9/src/transformers/__init__.py": b"no\n",
    })
    out = tmp_path / "out"
    out.mkdir()
    harness._extract_tests(archive, "9.9.9", out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["__init__.py", "generation/helpers.py", "test_modeling_common.py"]
    assert not (tmp_path / "escape.py").exists()


def test_the_sdist_is_fetched_once_per_version(tmp_path, monkeypatch):
    calls = []

    def fake_pip(command, **kwargs):
        calls.append(command)
        assert kwargs["timeout"] == harness.DOWNLOAD_TIMEOUT_S and "--timeout" in command
        dest = command[command.index("--dest") + 1]
        Path(dest).mkdir()  # pip makes it
        _sdist(f"{dest}/transformers-9.9.9.tar.gz", "9.9.9", {
            "transformers-9.9.9/tests/test_modeling_common.py": b"",
            "transformers-9.9.9/tests/test_configuration_common.py": b""})
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("L2L_TRANSFORMERS_TESTS", raising=False)
    monkeypatch.setattr(harness.subprocess, "run", fake_pip)
    first = harness.harness_folder("9.9.9")
    assert first == tmp_path / "l2l" / "transformers-tests" / "9.9.9"
    assert (first / "test_configuration_common.py").is_file()
    assert harness.harness_folder("9.9.9") == first and len(calls) == 1
    assert [p.name for p in first.parent.iterdir()] == ["9.9.9"]  # no scratch folder left


def test_offline_is_a_clear_reason_and_caches_nothing(tmp_path, monkeypatch):
    def offline(command, **kwargs):
        return subprocess.CompletedProcess(
            command, 1, "", "ERROR: Could not find a version that satisfies the requirement\n")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("L2L_TRANSFORMERS_TESTS", raising=False)
    monkeypatch.setattr(harness.subprocess, "run", offline)
    with pytest.raises(harness.HarnessUnavailable,
                       match=r"pip could not download the transformers 9\.9\.9 sdist \(offline\?\)"
                             r": ERROR: Could not find a version"):
        harness.harness_folder("9.9.9")
    assert list((tmp_path / "l2l" / "transformers-tests").iterdir()) == []

    def hangs(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(harness.subprocess, "run", hangs)
    with pytest.raises(harness.HarnessUnavailable, match="took over 300 s"):
        harness.harness_folder("9.9.9")


def test_a_folder_given_by_the_environment_is_used_or_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("L2L_TRANSFORMERS_TESTS", str(tmp_path))
    with pytest.raises(harness.HarnessUnavailable, match="holds no test_modeling_common.py"):
        harness.harness_folder("9.9.9")
    (tmp_path / "test_modeling_common.py").write_text("")
    assert harness.harness_folder("9.9.9") == tmp_path


def test_stand_ins_only_for_what_the_folder_lacks(tmp_path):
    assert sorted(harness._stand_ins(tmp_path)) == [
        "exporters/test_export.py", "generation/test_utils.py",
        "utils/test_configuration_utils.py"]
    (tmp_path / "generation").mkdir()
    (tmp_path / "generation" / "test_utils.py").write_text("")
    assert "generation/test_utils.py" not in harness._stand_ins(tmp_path)


def test_common_config_kwargs_are_fields_of_every_config():
    """The stand-in for transformers' list: each key is a common attribute of PreTrainedConfig,
    and each value differs from its default (ConfigTester checks that the value is kept)."""
    from transformers import PreTrainedConfig

    default = PreTrainedConfig()
    for key, value in harness.config_common_kwargs().items():
        assert hasattr(default, key), key
        assert getattr(default, key) != value, key
