"""Imported at start-up by every Python whose PYTHONPATH holds this folder: with
``L2L_FSDP_ON_CPU=1``, the trainer runs FSDP2 on CPU processes (``tests/training/fsdp_on_cpu.py``).
This reaches the processes that slurm, srun, accelerate and torchrun start for
``python -m training`` in test_slurm_nodes.py, none of which the test could patch otherwise."""

import os

if os.environ.get("L2L_FSDP_ON_CPU") == "1":
    from tests.training.fsdp_on_cpu import patch_trainer

    patch_trainer()
