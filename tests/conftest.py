"""Shared test fixtures: the papers' released data (by path, never copied) and device markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The released data of the papers lives beside the project (../shared/data), never inside it.
# A fresh clone has no ../shared: tests that need it skip with this reason.
SHARED_DATA = Path(
    os.environ.get("L2L_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


def shared_path(*parts: str) -> Path:
    """Path under the shared data folder, or skip the test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"papers' released data not found at {path} (set L2L_SHARED_DATA to the folder "
            "holding l2l/, gadre/, ladder/, chinchilla/); it is not part of the repository"
        )
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A two-node slurm cluster on this host for the whole session (``tests/slurm_cluster.py``),
    its daemons stopped by pid at the end. Skipped with the reason where slurm is not installed
    or does not come up; a failure instead where ``L2L_REQUIRE_SLURM=1`` (CI installs it)."""
    from tests.slurm_cluster import SlurmCluster, SlurmUnavailable

    # Short: munge's socket path must fit in a unix socket address (108 bytes).
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), nodes=2, cpus=1)
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        if os.environ.get("L2L_REQUIRE_SLURM") == "1":
            pytest.fail(f"L2L_REQUIRE_SLURM=1 but no slurm cluster: {exc}")
        pytest.skip(f"no slurm cluster: {exc}")
    yield cluster
    cluster.stop()
