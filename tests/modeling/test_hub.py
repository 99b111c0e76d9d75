"""load_l2l_run against a local Hub-compatible server laid out like KempnerInstituteAI/loss-to-loss."""

from __future__ import annotations

import pytest
import torch

from modeling_l2l import L2L_HUB_REPO, L2LForCausalLM, load_l2l_run, prepare_l2l_run, resolve_run
from tests.local_hub import LocalHub
from tests.modeling.conftest import tiny_config
from tests.modeling.olmo_checkpoint import (
    olmo_model_config,
    random_olmo_tensors,
    reference_forward,
    write_olmo_checkpoint,
)

RUN = "L2L_starcoder_N1.1e08_D3.0e08_C2.0e17"
OTHER_RUN = "L2L_fineweb-edu-100b_N1.1e08_D3.0e08_C2.0e17"


@pytest.fixture
def hub_repo(tmp_path):
    """A repository folder with two runs in the OLMo-fork layout and a README."""
    repo = tmp_path / "repo"
    config = olmo_model_config()
    tensors = random_olmo_tensors(config, seed=3)
    write_olmo_checkpoint(repo / RUN, config, tensors)
    write_olmo_checkpoint(repo / OTHER_RUN, config, seed=4)
    (repo / "README.md").write_text("loss-to-loss checkpoints")
    return repo, config, tensors


def test_downloads_only_the_run_and_converts_once(tmp_path, hub_repo):
    repo, config, tensors = hub_repo
    paths = dict(cache_dir=tmp_path / "hf", converted_dir=tmp_path / "converted", token=False)
    with LocalHub() as hub:
        commit = hub.add_repo(L2L_HUB_REPO, repo)
        model = load_l2l_run(RUN, endpoint=hub.endpoint, **paths)
        downloaded = hub.downloaded(L2L_HUB_REPO)
        assert sorted(downloaded) == [f"{RUN}/config.json", f"{RUN}/model.safetensors"]
        converted = prepare_l2l_run(RUN, endpoint=hub.endpoint, **paths)
        assert (
            converted == tmp_path / "converted" / "KempnerInstituteAI--loss-to-loss" / commit / RUN
        )
        stamp = (converted / "model.safetensors").stat().st_mtime_ns
        again = load_l2l_run(RUN, endpoint=hub.endpoint, **paths)
        assert len(hub.downloaded(L2L_HUB_REPO)) == 2  # served from the Hugging Face cache
        assert (converted / "model.safetensors").stat().st_mtime_ns == stamp  # not reconverted
    assert isinstance(model, L2LForCausalLM) and not model.training
    ids = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits
        torch.testing.assert_close(again(ids).logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(
        logits.double(), reference_forward(tensors, config, ids), rtol=1e-5, atol=2e-5
    )

    # offline afterwards: the server is gone, the cache answers
    offline = load_l2l_run(RUN, local_files_only=True, **paths)
    torch.testing.assert_close(offline.lm_head.weight, model.lm_head.weight)


def test_repo_id_and_subfolder_forms(tmp_path, hub_repo):
    repo, _, _ = hub_repo
    with LocalHub() as hub:
        hub.add_repo("someone/ladder", repo)
        kwargs = dict(
            cache_dir=tmp_path / "hf",
            converted_dir=tmp_path / "c",
            endpoint=hub.endpoint,
            token=False,
        )
        by_subfolder = prepare_l2l_run("someone/ladder", subfolder=OTHER_RUN, **kwargs)
        by_path = prepare_l2l_run(f"someone/ladder/{OTHER_RUN}", **kwargs)
    assert by_subfolder == by_path and by_path.parts[-3] == "someone--ladder"


def test_transformers_folder_on_the_hub_is_loaded_as_is(tmp_path):
    torch.manual_seed(0)
    original = L2LForCausalLM(tiny_config())
    repo = tmp_path / "repo"
    original.save_pretrained(repo / "my-run")
    with LocalHub() as hub:
        hub.add_repo("someone/hf-runs", repo)
        model = load_l2l_run(
            "someone/hf-runs/my-run",
            cache_dir=tmp_path / "hf",
            converted_dir=tmp_path / "c",
            endpoint=hub.endpoint,
            token=False,
        )
    torch.testing.assert_close(model.lm_head.weight, original.lm_head.weight)
    assert not (tmp_path / "c").exists()


def test_unknown_run_and_bad_names(tmp_path, hub_repo):
    repo, _, _ = hub_repo
    missing = "L2L_starcoder_N9.9e09_D3.0e08_C2.0e17"
    with LocalHub() as hub:
        commit = hub.add_repo(L2L_HUB_REPO, repo)
        with pytest.raises(FileNotFoundError, match=f"run '{missing}' not found"):
            prepare_l2l_run(missing, cache_dir=tmp_path / "hf", endpoint=hub.endpoint, token=False)
        with pytest.raises(ValueError, match="not a loss-to-loss run name"):
            prepare_l2l_run("L2L_starcoder_N1.1e08", endpoint=hub.endpoint, token=False)
        assert hub.requests[-1].path.endswith("/tree/" + commit)  # the bad name made no request


def test_a_run_not_in_the_cache_offline_is_a_clear_error(tmp_path):
    """huggingface_hub's LocalEntryNotFoundError said nothing of the run or what to do."""
    with pytest.raises(ConnectionError, match=f"cannot get run '{RUN}'.*convert_olmo"):
        prepare_l2l_run(RUN, cache_dir=tmp_path / "hf", local_files_only=True)


def test_resolve_run():
    assert resolve_run(RUN) == (L2L_HUB_REPO, RUN)
    assert resolve_run(f"{L2L_HUB_REPO}/{RUN}") == (L2L_HUB_REPO, RUN)
    assert resolve_run("org/repo", subfolder="x/") == ("org/repo", "x")
    with pytest.raises(ValueError, match="run name or a Hub repo id"):
        resolve_run("")
