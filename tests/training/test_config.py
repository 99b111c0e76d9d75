"""The training config: paper defaults, YAML round trip, dotted overrides, errors naming fields."""

from __future__ import annotations

import pytest

from modeling_l2l import paper_param_count
from training.__main__ import main as cli_main
from training.config import PRESETS, ConfigError, TrainingConfig


def test_defaults_are_the_papers_recipe():
    cfg = TrainingConfig().validate()
    assert cfg.optim.lr == 1e-3
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.optim.eps == 1e-15
    assert cfg.optim.weight_decay == 0.0
    assert cfg.optim.grad_clip == 1.0
    assert cfg.optim.z_loss == 1e-4
    assert cfg.batch.global_batch_size == 1024 and cfg.data.seq_len == 512
    assert cfg.tokens_per_step == 524_288
    assert cfg.schedule.kind == "cosine"
    assert cfg.schedule.warmup_fraction == 0.2 and cfg.schedule.final_lr_fraction == 0.1
    assert cfg.schedule.warmup_start_fraction == 0.1  # OLMo's warmup_min_lr default, kept
    assert cfg.precision.mixed_precision == "bf16"
    assert cfg.model.vocab_size == 32000


def test_steps_are_floor_of_tokens_over_tokens_per_step():
    cfg = TrainingConfig.paper(8, flop_budget=2e17)
    n_params = paper_param_count(8)
    assert n_params == 57_950_720  # sweep.csv params at n_layers = 8
    tokens = int(2e17 / (6 * n_params))
    assert cfg.run.tokens == tokens
    assert cfg.total_steps == tokens // 524_288 == 1097
    cfg.run.steps = 1095  # the released runs rounded down to a multiple of 5
    assert cfg.total_steps == 1095


def test_yaml_round_trip(tmp_path):
    cfg = TrainingConfig.tiny_cpu().with_overrides(["optim.betas=[0.8, 0.99]", "model.extra={rope_theta: 500000.0}"])
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    again = TrainingConfig.from_yaml(path)
    assert again == cfg
    assert again.optim.betas == (0.8, 0.99)
    assert again.model.extra == {"rope_theta": 500000.0}
    assert TrainingConfig.from_yaml(cfg.to_yaml()) == cfg  # YAML text works too


def test_overrides_are_typed():
    cfg = TrainingConfig().with_overrides([
        "optim.lr=3e-4",  # YAML 1.1 reads this as a string; the field type makes it a float
        "run.tokens=2e9",  # an integral float is accepted for an int field
        "data.corpus=123",  # a string field keeps the raw text
        "optim.grad_clip=null",
        "logging.trackers=tensorboard",
        "precision.compile=true",
        "batch.micro_batch_size=8",
    ])
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.run.tokens == 2_000_000_000 and isinstance(cfg.run.tokens, int)
    assert cfg.data.corpus == "123"
    assert cfg.optim.grad_clip is None
    assert cfg.logging.trackers == ["tensorboard"]
    assert cfg.precision.compile is True
    assert cfg.batch.micro_batch_size == 8


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.lr=fast", "optim.lr"),
        ("optim.lrr=1", "optim.lrr"),
        ("optimizer.lr=1", "optimizer"),
        ("optim.betas=[0.9]", "optim.betas"),
        ("precision.mixed_precision=bf32", "precision.mixed_precision"),
        ("run.tokens=1.5", "run.tokens"),
        ("precision.compile=maybe", "precision.compile"),
        ("optim=3", "optim"),
        ("optim.lr", "optim.lr"),
        ("model.n_layers=__import__('os')", "model.n_layers"),
    ],
)
def test_bad_override_names_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        TrainingConfig().with_overrides([override])
    assert field in str(info.value)


def test_unknown_field_suggests_the_close_one():
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        TrainingConfig().with_overrides(["optim.lrr=1"])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("optim.betas=[0.9, 1.5]", "optim.betas"),
        ("optim.eps=0", "optim.eps"),
        ("optim.grad_clip=0", "optim.grad_clip"),
        ("schedule.warmup_fraction=1.5", "schedule.warmup_fraction"),
        ("batch.micro_batch_size=3", "batch.global_batch_size"),
        ("batch.global_batch_size=0", "batch.global_batch_size"),
        ("data.seq_len=1", "data.seq_len"),
        ("run.tokens=100", "run.tokens"),
        ("run.steps=21", "run.steps"),  # the default D is 20 steps of 1024 x 512 tokens
        ("run.name=a/b", "run.name"),
        ("checkpoint.keep_last=0", "checkpoint.keep_last"),
        ("logging.trackers=[mlflow]", "logging.trackers"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        TrainingConfig().with_overrides([override]).validate()
    assert str(info.value).startswith(field)


def test_yaml_with_unknown_or_mistyped_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match="optim.momentum"):
        TrainingConfig.from_yaml(path)
    path.write_text("batch:\n  micro_batch_size: eight\n")
    with pytest.raises(ConfigError, match="batch.micro_batch_size"):
        TrainingConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        TrainingConfig.from_yaml(tmp_path / "missing.yaml")


def test_grad_accumulation_from_global_micro_and_world():
    cfg = TrainingConfig()  # 1024 sequences, micro-batch 16
    assert cfg.grad_accumulation_steps(1) == 64
    assert cfg.grad_accumulation_steps(8) == 8
    assert cfg.grad_accumulation_steps(64) == 1
    with pytest.raises(ConfigError, match="batch.global_batch_size"):
        cfg.grad_accumulation_steps(3)


def test_presets_are_valid_and_derived_from_depth():
    for name, preset in PRESETS.items():
        assert preset().validate(), name
    ladder = TrainingConfig.olmo_ladder(12, chinchilla_multiple=2.0)
    n_params = paper_param_count(12)
    assert ladder.run.tokens == int(2.0 * 20 * n_params)
    assert ladder.optim.lr == pytest.approx(0.0047 * (n_params / 108e6) ** (-1 / 3))
    assert ladder.batch.global_batch_size % 32 == 0
    assert ladder.schedule.warmup_tokens == n_params
    tiny = TrainingConfig.tiny_cpu()
    assert tiny.precision.mixed_precision == "no" and tiny.data.corpus == "python-stdlib"


def test_cli_prints_resolved_config_and_rejects_bad_values(capsys):
    assert cli_main(["--preset", "paper", "optim.lr=2e-3", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert TrainingConfig.from_yaml(out).optim.lr == 2e-3
    assert cli_main(["--preset", "paper", "optim.lr=-2"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert cli_main([]) == 2


def test_string_choices_that_yaml_reads_as_booleans(tmp_path):
    # YAML 1.1 reads a bare `no` as False: the override and a hand-written YAML both failed.
    cfg = TrainingConfig().with_overrides(["precision.mixed_precision=no"])
    assert cfg.precision.mixed_precision == "no"
    path = tmp_path / "fp32.yaml"
    path.write_text("precision:\n  mixed_precision: no\n")
    assert TrainingConfig.from_yaml(path).precision.mixed_precision == "no"
    with pytest.raises(ConfigError, match="precision.mixed_precision"):
        TrainingConfig().with_overrides(["precision.mixed_precision=yes"])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.eps=inf", "optim.eps"),
        ("optim.z_loss=nan", "optim.z_loss"),
        ("optim.grad_clip=.inf", "optim.grad_clip"),
        ("logging.peak_flops=inf", "logging.peak_flops"),
        ("model.n_heads=3", "model.n_heads"),  # 3 heads do not divide 64 x 8
        ("model.d_model=100", "model.n_heads"),  # 8 heads do not divide 100
        ("data.data_dir=", "data.data_dir"),
        ("run.output_dir= ", "run.output_dir"),
    ],
)
def test_non_finite_numbers_and_inconsistent_sizes_are_rejected(override, field):
    with pytest.raises(ConfigError) as info:
        TrainingConfig().with_overrides([override]).validate()
    assert str(info.value).startswith(field)


def test_width_and_heads_that_divide_are_accepted():
    cfg = TrainingConfig().with_overrides(["model.d_model=96", "model.n_heads=3"]).validate()
    assert (cfg.model.d_model, cfg.model.n_heads) == (96, 3)


def test_a_run_name_longer_than_a_folder_name_can_be_is_refused():
    cfg = TrainingConfig.tiny_cpu()
    cfg.run.name = "r" * 300
    with pytest.raises(ConfigError, match=r"run.name: is 300 bytes long; a folder name can be at most 255"):
        cfg.validate()
    cfg.run.name = "r" * 255
    cfg.validate()
