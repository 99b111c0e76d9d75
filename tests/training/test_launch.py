"""The study launcher (local sequence, slurm job array), the slurm template, the accelerate configs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.training.conftest import REPO, run_subprocess
from training.launch import ACCELERATE_CONFIGS, SLURM_TEMPLATE, main, write_run_configs
from training.launch.slurm import slurm_submission
from training.study import read_plan
from training.sweep import main as plan


def plan_tiny_study(study, tokenizer_dir, data_dir):
    return plan(["--grid", "custom", "--depths", "1", "--multipliers", "0.05", "0.1",
                 "--corpora", "python-stdlib", "model.vocab_size=384",
                 f"data.tokenizer={tokenizer_dir}", f"data.data_dir={data_dir}",
                 "data.seq_len=32", "data.val_sequences=16", "batch.global_batch_size=8",
                 "batch.micro_batch_size=4", "logging.trackers=[]", "logging.progress_bar=false",
                 "--out", str(study)])


@pytest.mark.slow
def test_local_launch_trains_every_run_in_sequence_then_skips_them(tmp_path, tokenizer_dir,
                                                                   data_dir):
    study = tmp_path / "study"
    runs = plan_tiny_study(study, tokenizer_dir, data_dir)
    assert len(runs) == 2
    proc = run_subprocess([sys.executable, "-m", "training.launch", str(study), "--local"])
    assert "[2/2]" in proc.stdout
    for run in runs:
        final = json.loads((study / run.run / "final.json").read_text())
        assert final["run"] == run.run and final["steps"] == run.steps
        assert final["N"] == run.N  # the planner's N is the trained model's parameter count
    again = run_subprocess([sys.executable, "-m", "training.launch", str(study), "--local"])
    assert "2 finished, 0 to run" in again.stdout


@pytest.mark.slow
def test_local_pool_logs_each_run_and_names_a_failure_by_its_last_words(tmp_path, tokenizer_dir,
                                                                        data_dir):
    """--workers: the pool that `l2l train` uses (single-thread processes, STUDY/logs/<run>.log,
    a failure's why its log's last words); one run fails, the other trains."""
    from training.run_lock import RunLock
    from training.study import is_finished

    study = tmp_path / "study"
    runs = plan_tiny_study(study, tokenizer_dir, data_dir)
    (study / runs[0].run).mkdir()
    with RunLock(study / runs[0].run):  # another trainer holds the first run
        proc = run_subprocess([sys.executable, "-m", "training.launch", str(study), "--local",
                               "--workers", "2"], check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (f"{runs[0].run} failed: error: {study / runs[0].run} is being trained by another "
            "process") in proc.stderr
    assert is_finished(study, runs[1].run) and not is_finished(study, runs[0].run)
    assert "finished" in (study / "logs" / f"{runs[1].run}.log").read_text()


def test_slurm_array_submission_is_written(tmp_path, tokenizer_dir, data_dir, capsys):
    study = tmp_path / "study"
    runs = plan_tiny_study(study, tokenizer_dir, data_dir)
    assert main([str(study), "--slurm", "--dry-run", "--max-parallel", "1",
                 "--accelerate-config", "ddp", "--sbatch-args=--partition=gpu --nodes=2",
                 "optim.lr=5e-4"]) == 0
    command = capsys.readouterr().out.strip().splitlines()[-1]
    listing = study.resolve() / "slurm" / command.split("@")[-1].split("/")[-1]
    assert listing.name.startswith("array-") and listing.suffix == ".txt"
    configs = listing.read_text().splitlines()
    assert [os.path.basename(c) for c in configs] == [f"{r.run}.yaml" for r in runs]
    assert "--array=0-1%1" in command and "--partition=gpu --nodes=2" in command
    # the tasks run this Python with the chosen config, whatever the submitting shell has
    assert (f"--export=ALL,L2L_PYTHON={sys.executable},"
            f"ACCELERATE_CONFIG={ACCELERATE_CONFIGS['ddp']}") in command
    assert "--gpus-per-node=0" not in command  # a GPU config keeps the template's GPUs
    assert command.endswith(f"{SLURM_TEMPLATE} @{listing}")
    assert not (study / "slurm" / "jobs.jsonl").exists()  # a dry run submitted nothing
    from training.config import TrainingConfig

    cfg = TrainingConfig.from_yaml(configs[1])
    assert cfg.optim.lr == 5e-4 and cfg.run.name == runs[1].run
    assert cfg.run.output_dir == str(study)


def test_slurm_without_sbatch_is_a_clear_error_before_writing_configs(tmp_path, tokenizer_dir,
                                                                       data_dir, monkeypatch,
                                                                       capsys):
    """It wrote every run's config, then died in a FileNotFoundError traceback for 'sbatch'."""
    study = tmp_path / "study"
    plan_tiny_study(study, tokenizer_dir, data_dir)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SystemExit) as exit_info:
        main([str(study), "--slurm"])
    assert exit_info.value.code == 2
    assert "sbatch is not on PATH" in capsys.readouterr().err
    assert not (study / "configs").exists() and not (study / "slurm").exists()
    assert main([str(study), "--slurm", "--dry-run"]) == 0  # the way to go without slurm


def template_stubs(tmp_path, log):
    """Stand-ins for slurm's scontrol and srun (two nodes: SLURM_NODEID 0 and 1, srun's own
    options dropped) and for the Python that runs accelerate (its arguments logged)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stubs = {
        "scontrol": 'if [ "$2" = hostnames ]; then printf "node-a\\nnode-b\\n"; '
                    'else echo "NodeName=$3 Arch=x86_64 NodeAddr=10.1.2.3 NodeHostName=$3"; fi',
        "srun": f'echo "$@" >> {log}.srun; while [ "$1" != bash ]; do shift; done\n'
                'for node in 0 1; do SLURM_NODEID=$node "$@"; done',
        "python": f'if [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\n'
                  f'echo "$@ OMP=$OMP_NUM_THREADS CPU=${{ACCELERATE_USE_CPU:-}}" >> {log}',
    }
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "L2L_PYTHON": str(bin_dir / "python"), "PYTHONPATH": str(REPO),
            "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4123456",
            "RENDEZVOUS_WAIT_S": "0"}  # node 1 would wait for node 0's port


def test_slurm_template_starts_one_accelerate_per_node_with_c10d(tmp_path):
    """Run the template with stand-ins for scontrol, srun (two nodes) and accelerate's Python."""
    log = tmp_path / "calls.log"
    listing = tmp_path / "array.txt"
    listing.write_text("/study/configs/a.yaml\n/study/configs/b.yaml\n")
    env = {**template_stubs(tmp_path, log), "SLURM_ARRAY_TASK_ID": "1",
           "SLURM_GPUS_ON_NODE": "4", "MASTER_ADDR": "stale-host", "MASTER_PORT": "1"}
    subprocess.run(["bash", str(SLURM_TEMPLATE), f"@{listing}", "optim.lr=1e-3"], env=env,
                   check=True, capture_output=True, text=True)
    calls = log.read_text().splitlines()
    assert len(calls) == 2
    for rank, call in enumerate(calls):
        args = call.split()
        assert args[:4] == ["-m", "accelerate.commands.accelerate_cli", "launch", "--quiet"]
        assert args[args.index("--config_file") + 1] == str(ACCELERATE_CONFIGS["fsdp2"])
        assert args[args.index("--machine_rank") + 1] == str(rank)
        assert args[args.index("--num_machines") + 1] == "2"
        assert args[args.index("--num_processes") + 1] == "8"
        # slurm's address of the first node (node names need not resolve), not the shell's
        assert args[args.index("--main_process_ip") + 1] == "10.1.2.3"
        # a port of the job's own, so that array tasks sharing a node do not collide
        assert args[args.index("--main_process_port") + 1] == str(20000 + 4123456 % 20000)
        assert args[args.index("--rdzv_backend") + 1] == "c10d"
        assert args[args.index("--config") + 1] == "/study/configs/b.yaml"
        assert args[-4:-2] == ["--resume", "optim.lr=1e-3"]
        assert args[-2:] == ["OMP=8", "CPU="]  # GPU nodes
    bad = subprocess.run(["bash", str(SLURM_TEMPLATE), f"@{listing}"],
                         env={**env, "SLURM_ARRAY_TASK_ID": "5"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "no config on line 6" in bad.stderr


@pytest.mark.parametrize("nodes, config", [("1", "cpu"), ("2", "cpu_ddp")])
def test_slurm_template_on_cpu_nodes(tmp_path, nodes, config):
    """--gpus-per-node=0 (what CPU configs submit): one gloo process per node, the CPU configs,
    the job's CPUs as threads, and srun given the CPUs per task (it stopped inheriting them)."""
    log = tmp_path / "calls.log"
    env = {**template_stubs(tmp_path, log), "SLURM_NNODES": nodes, "SLURM_GPUS_PER_NODE": "0",
           "SLURM_CPUS_PER_TASK": "3"}
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run(["bash", str(SLURM_TEMPLATE), "/study/configs/a.yaml"], env=env,
                          check=True, capture_output=True, text=True)
    assert f"on {nodes} node(s) x 1 CPU process(es)" in done.stdout
    assert "--cpus-per-task=3" in (tmp_path / "calls.log.srun").read_text()
    args = log.read_text().splitlines()[0].split()
    assert args[args.index("--config_file") + 1] == str(ACCELERATE_CONFIGS[config])
    assert args[args.index("--num_processes") + 1] == nodes
    assert args[-2:] == ["OMP=3", "CPU=1"]


def test_a_long_node_list_does_not_fail_the_task(tmp_path):
    """The first node was read with ``head -n 1`` under pipefail: scontrol, still writing when
    head exited, died of SIGPIPE and the task with status 141 (seen once in the suite with two
    nodes; certain with a long list)."""
    log = tmp_path / "calls.log"
    env = {**template_stubs(tmp_path, log), "SLURM_GPUS_PER_NODE": "0", "SLURM_NNODES": "1"}
    (tmp_path / "bin" / "scontrol").write_text(
        '#!/bin/bash\nif [ "$2" = hostnames ]; then seq -f "node-%g" 1 200000; '
        'else echo "NodeName=$3 NodeAddr=10.1.2.3"; fi\n')
    done = subprocess.run(["bash", str(SLURM_TEMPLATE), "/study/configs/a.yaml"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_shipped_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    assert {"cpu", "cpu_ddp", "gpu", "ddp", "fsdp2"} <= set(ACCELERATE_CONFIGS)
    for name, path in ACCELERATE_CONFIGS.items():
        config = load_config_from_file(str(path))
        assert config.compute_environment.value == "LOCAL_MACHINE", name
    fsdp = load_config_from_file(str(ACCELERATE_CONFIGS["fsdp2"]))
    assert fsdp.fsdp_config["fsdp_version"] == 2
    assert fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "L2LDecoderLayer"
    from modeling_l2l import L2LForCausalLM

    assert "L2LDecoderLayer" in L2LForCausalLM._no_split_modules


def test_finished_runs_get_no_config(tmp_path, tokenizer_dir, data_dir):
    study = tmp_path / "study"
    runs = plan_tiny_study(study, tokenizer_dir, data_dir)
    (study / runs[0].run).mkdir()
    (study / runs[0].run / "final.json").write_text("{}")
    todo = write_run_configs(study)
    assert [run.run for run, _ in todo] == [runs[1].run]
    assert read_plan(study) == runs
    cmd = slurm_submission(study, todo, [], None)
    assert "--array=0" in cmd


@pytest.mark.parametrize("name", ["ddp", "fsdp2"])
def test_multi_node_command_reaches_torchrun_as_a_c10d_rendezvous(name, monkeypatch):
    """What the slurm template's `accelerate launch` on node 1 of 2 hands to torchrun, resolved by
    accelerate's own launcher code: a c10d rendezvous at the first node's address, 2 nodes of 8
    processes (torchrun's c10d ignores --machine_rank and assigns ranks itself); for FSDP2, the
    plugin that the trainer builds from the launcher's environment."""
    import torch.distributed.run as torchrun
    from accelerate.commands.launch import (
        _filter_args,
        _validate_launch_command,
        launch_command_parser,
    )
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args([
        "--config_file", str(ACCELERATE_CONFIGS[name]), "--num_machines", "2",
        "--num_processes", "16", "--machine_rank", "1", "--main_process_ip", "node-a",
        "--main_process_port", "29517", "--rdzv_backend", "c10d",
        "-m", "training", "--config", "run.yaml", "--resume"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    filtered = _filter_args(args, torchrun.get_args_parser(),
                            ["--training_script", args.training_script,
                             "--training_script_args", args.training_script_args])
    launch, _, script_args = torchrun.config_from_args(filtered)
    assert (launch.rdzv_backend, launch.rdzv_endpoint) == ("c10d", "node-a:29517")
    assert (launch.min_nodes, launch.max_nodes, launch.nproc_per_node) == (2, 2, 8)
    assert script_args[-3:] == ["--config", "run.yaml", "--resume"]
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    if name == "ddp":
        assert "ACCELERATE_USE_FSDP" not in env
        return

    import torch
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from training.config import TrainingConfig
    from training.trainer import build_model, fsdp_plugin

    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(key, value)
    plugin = fsdp_plugin(TrainingConfig())
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    assert plugin.mixed_precision_policy == MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32, output_dtype=torch.bfloat16)
    model = build_model(TrainingConfig().with_overrides(["model.n_layers=2",
                                                         "model.vocab_size=64"]))
    wrap = fsdp2_prepare_auto_wrap_policy(plugin, model)
    units = [type(m).__name__ for m in model.modules() if wrap(m)]
    assert units == ["L2LDecoderLayer", "L2LDecoderLayer"]  # one FSDP unit per block


def refused(capsys, argv, start="error: "):
    """The error of a refused command (exit status 2, no traceback): its last line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.splitlines()[-1].startswith(start) and "Traceback" not in err, err
    return err.splitlines()[-1]


@pytest.mark.parametrize("mode", [["--local"], ["--local", "--dry-run"], ["--slurm"],
                                  ["--slurm", "--dry-run"]])
def test_a_folder_that_is_not_a_study_is_a_one_line_error(tmp_path, mode, monkeypatch, capsys):
    """A missing study was a FileNotFoundError traceback for STUDY/configs; a file, a
    NotADirectoryError; a folder without a plan got a configs/ folder before the error."""
    bin_dir = tmp_path / "bin"  # an sbatch, so that --slurm reaches the study
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    missing = tmp_path / "missing_study"
    err = refused(capsys, [str(missing), *mode])
    assert f"study folder {missing} does not exist" in err
    assert f"python -m training.sweep --grid ... --out {missing}" in err
    assert not missing.exists()
    (tmp_path / "notes.txt").write_text("mine\n")
    assert "notes.txt is a file, not a study folder" in refused(
        capsys, [str(tmp_path / "notes.txt"), *mode])
    other = tmp_path / "other"
    other.mkdir()
    assert "no runs.csv or runs.json in" in refused(capsys, [str(other), *mode])
    assert list(other.iterdir()) == []


def test_unknown_runs_in_only_are_refused(tmp_path, tokenizer_dir, data_dir, capsys):
    """--only with a misspelt run launched nothing and said "0 to run"."""
    study = tmp_path / "study"
    runs = plan_tiny_study(study, tokenizer_dir, data_dir)
    typo = runs[0].run.replace("L2L_", "L2L-")
    err = refused(capsys, [str(study), "--local", "--dry-run", "--only", typo])
    assert f"1 run(s) not planned in {study}: {typo} (did you mean {runs[0].run}?)" in err
    assert not (study / "configs").exists()


@pytest.mark.parametrize("argv, message", [
    # flags the mode would have ignored
    (["--local", "--max-parallel", "4"], "--max-parallel is not used with --local"),
    (["--local", "--sbatch-args=--partition=gpu"], "--sbatch-args is not used with --local"),
    (["--slurm", "--dry-run", "--num-processes", "4"], "--num-processes is not used with --slurm"),
    (["--local", "--num-processes", "4"], "--num-processes needs --accelerate-config"),
    # "%0" went to sbatch as no limit at all
    (["--slurm", "--dry-run", "--max-parallel", "0"], "--max-parallel must be at least 1, got 0"),
    (["--slurm", "--dry-run", "--sbatch-args=--comment='a"], "No closing quotation"),
])
def test_flags_the_mode_ignores_or_cannot_use_are_refused(tmp_path, argv, message, capsys):
    # checked before the study is read: the folder does not have to exist
    err = refused(capsys, [str(tmp_path / "study"), *argv], start="python -m training.launch")
    assert message in err


def test_bad_overrides_and_files_are_one_line_errors(tmp_path, tokenizer_dir, data_dir, capsys):
    """Each was a traceback (ConfigError, FileNotFoundError, JSONDecodeError) or, for a bad value
    in runs.csv, went unnoticed until the run's config."""
    study = tmp_path / "study"
    runs = plan_tiny_study(study, tokenizer_dir, data_dir)
    assert "optim.nope: unknown field" in refused(
        capsys, [str(study), "--local", "--dry-run", "optim.nope=1"])
    assert not (study / "configs").exists()  # no config is written for a bad override
    assert "no accelerate config 'nope'" in refused(
        capsys, [str(study), "--local", "--dry-run", "--accelerate-config", "nope"])
    plan_json = (study / "study.json").read_text()
    (study / "study.json").write_text("{")
    assert f"{study / 'study.json'} is not valid JSON" in refused(
        capsys, [str(study), "--local", "--dry-run"])
    (study / "study.json").write_text(plan_json)
    table = (study / "runs.csv").read_text()
    (study / "runs.csv").write_text(table.replace(f",{runs[1].steps},", ",many,"))
    assert f"run 2 ({runs[1].run}): column steps: 'many' is not a valid int" in refused(
        capsys, [str(study), "--local", "--dry-run"])


def test_a_worker_trains_runs_in_turn_as_their_own_processes_would(tmp_path, tokenizer_dir,
                                                                    data_dir):
    """The pool's workers (training.worker: one interpreter, one run after another) train the
    same weights as a process per run; a run that raises is that run's failure only, and a
    worker killed mid-run is replaced for the runs after it."""
    from safetensors.torch import load_file

    from training.launch import run_local, write_run_configs

    apart, together = tmp_path / "apart", tmp_path / "together"
    runs = plan_tiny_study(apart, tokenizer_dir, data_dir)
    plan_tiny_study(together, tokenizer_dir, data_dir)
    for _, config in write_run_configs(apart):
        run_subprocess([sys.executable, "-m", "training", "--config", str(config), "--resume"])
    failed = run_local(write_run_configs(together), workers=1, log_dir=together / "logs")
    assert failed == {}
    for run in runs:
        a = load_file(str(apart / run.run / "model.safetensors"))
        b = load_file(str(together / run.run / "model.safetensors"))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), run.run

    # a run whose config cannot be read fails alone; the worker trains the next one
    again = tmp_path / "again"
    runs = plan_tiny_study(again, tokenizer_dir, data_dir)
    todo = write_run_configs(again)
    todo[0][1].write_text("model: [not, a, mapping]\n")
    failed = run_local(todo, workers=1, log_dir=again / "logs")
    assert list(failed) == [todo[0][0].run] and "model" in failed[todo[0][0].run]
    assert (again / todo[1][0].run / "final.json").is_file()


def test_a_worker_that_dies_with_its_run_is_replaced(tmp_path, monkeypatch):
    """A run that kills its worker (a segfault, the OOM killer) is reported from its log, with
    the worker's exit status; the next run gets a new worker."""
    import training.launch as launch

    class Run:  # what the pool reads of a planned run
        trunk = ""  # none is a WSD branch

        def __init__(self, name, C):
            self.run, self.C = name, C

    script = tmp_path / "fake_worker.py"
    script.write_text(
        "import os, sys\n"
        "for line in sys.stdin:\n"
        "    config, _, log = line.rstrip('\\n').partition('\\t')\n"
        "    open(log, 'a').write('training ' + config + '\\n')\n"
        "    if config.endswith('crash.yaml'):\n"
        "        os._exit(137)\n"
        "    print('done\\t0', flush=True)\n")
    real = launch.subprocess.Popen

    def popen(cmd, **kwargs):
        return real([sys.executable, str(script)], **kwargs)

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    monkeypatch.setattr("training.data.prepare_corpora", lambda configs: None)  # no corpora
    todo = [(Run("first", 3.0), tmp_path / "crash.yaml"), (Run("second", 2.0), tmp_path / "ok.yaml"),
            (Run("third", 1.0), tmp_path / "ok2.yaml")]
    failed = launch._run_pool(todo, None, None, 1, tmp_path / "logs")
    assert list(failed) == ["first"], failed
    assert "its process ended with exit status 137" in failed["first"]
    assert "training" in (tmp_path / "logs" / "third.log").read_text()
