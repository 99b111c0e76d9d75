"""Reading a testbed from its GitHub repository: the real HTTP code path against a local server."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading

import pandas as pd
import pytest

from analysis.testbeds import GitHubFolder, TestbedUnavailableError, load_gadre, load_l2l
from tests.analysis.test_testbeds import write_gadre_run, write_sweep


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def github(tmp_path, monkeypatch):
    """A local stand-in for raw.githubusercontent.com and the contents API, serving ``site/``."""
    monkeypatch.setenv("L2L_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield site, base, server
    server.shutdown()
    server.server_close()


def publish(site, repo, ref, path, local):
    """Lay ``local``'s files out as GitHub serves them: raw files and a contents-API listing."""
    raw = site / repo / ref / path
    raw.mkdir(parents=True)
    entries = []
    for file in sorted(local.iterdir()):
        (raw / file.name).write_bytes(file.read_bytes())
        entries.append({"name": file.name, "type": "file"})
    listing = site / "repos" / repo / "contents" / path
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps(entries))


def test_l2l_from_github_then_from_cache_offline(tmp_path, github):
    site, base, server = github
    publish(site, "lab/notebooks", "main", "data", write_sweep(tmp_path / "local"))
    folder = GitHubFolder("lab/notebooks", "data", raw_base=base, api_base=base)
    table = load_l2l(folder)
    assert table.equals(load_l2l(tmp_path / "local"))
    server.shutdown()  # offline now: the cached copy serves the second load
    assert load_l2l(folder).equals(table)


def test_gadre_from_github_lists_folders(tmp_path, github):
    site, base, _ = github
    local = tmp_path / "local"
    write_gadre_run(local, "rpj", "d=96_l=8_h=4", 1.0, params=10_000_000)
    write_gadre_run(local, "rpj", "open_lm_1b", 1.0, params=1_400_000_000)
    for sub in ("models", "evals"):
        publish(site, "lab/scaling", "main", f"exp_data/{sub}", local / sub)
    folder = GitHubFolder("lab/scaling", "exp_data", raw_base=base, api_base=base)
    pd.testing.assert_frame_equal(load_gadre(folder), load_gadre(local))


def test_missing_remote_file_and_offline_errors(tmp_path, github, monkeypatch):
    _, base, _ = github
    with pytest.raises(FileNotFoundError, match="HTTP 404"):
        load_l2l(GitHubFolder("lab/absent", "data", raw_base=base, api_base=base))
    # a port nobody listens on: the error says what failed and how to work offline
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    offline = GitHubFolder("lab/notebooks", "data", raw_base=closed, api_base=closed)
    with pytest.raises(TestbedUnavailableError, match=r"could not download sweep.csv .*Offline\?"):
        load_l2l(offline)
    with pytest.raises(ValueError, match="pass a local path"):
        load_l2l("https://github.com/lab/notebooks")


@pytest.mark.parametrize("name", ["l2l", "gadre", "ladder", "chinchilla"])
def test_a_local_copy_without_the_file_names_where_it_comes_from(tmp_path, name):
    from analysis.testbeds import load_testbed

    with pytest.raises(FileNotFoundError) as info:
        load_testbed(name, tmp_path / "nothing-here")
    message = str(info.value)
    assert str(tmp_path / "nothing-here") in message and "GitHub repository" in message
    assert "or no path at all to download it" in message
