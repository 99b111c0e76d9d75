"""FSDP2 on CPU processes, for the tests: accelerate picks FSDP only for GPU backends (with
``ACCELERATE_USE_CPU=1`` it quietly runs data parallelism), while torch's ``fully_shard`` itself
runs on a gloo CPU mesh. ``patch_trainer`` makes the trainer set accelerate's distributed type
to FSDP once its ``Accelerator`` exists, which is what accelerate does on GPUs; everything else is
the shipped ``training/launch/fsdp2.yaml`` and the unchanged trainer.

Used by the script of test_fsdp2_cpu.py and, through ``fsdp_site/sitecustomize.py``, by the
processes that slurm starts in test_slurm_nodes.py."""

from __future__ import annotations


def patch_trainer() -> None:
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    import training.trainer as trainer

    build = trainer._make_accelerator

    def fsdp_on_cpu(cfg, run_dir):
        accelerator, missing = build(cfg, run_dir)
        # AcceleratorState() copies PartialState's fields on every call: set the type in both.
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = trainer.fsdp_plugin(cfg)
        return accelerator, missing

    trainer._make_accelerator = fsdp_on_cpu
