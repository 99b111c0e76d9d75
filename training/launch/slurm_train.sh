#!/bin/bash
# Train one run on one or more nodes under slurm: `srun` starts one `accelerate launch` per node,
# which joins the others through the c10d rendezvous on the first node.
#
#   sbatch --nodes=2 training/launch/slurm_train.sh run.yaml [dotted overrides...]
#   sbatch --array=0-9%4 training/launch/slurm_train.sh @study/slurm/array-LIST.txt
#   sbatch --gpus-per-node=0 --cpus-per-task=1 training/launch/slurm_train.sh run.yaml   # CPU nodes
#
# An argument "@FILE" takes the config from line SLURM_ARRAY_TASK_ID + 1 of FILE (a job array
# with one run per index; `python -m training.launch STUDY --slurm` and `l2l train --launcher
# slurm` write FILE and submit). Runs always pass --resume: a requeued or restarted task continues
# from its last checkpoint.
#
# GPU nodes (the #SBATCH default below, 8 per node): one process per GPU, accelerate config
# fsdp2.yaml. CPU nodes (--gpus-per-node=0): PROCESSES_PER_NODE processes (default 1) over gloo
# (ACCELERATE_USE_CPU=1), config cpu.yaml for a single process and cpu_ddp.yaml for more, each with
# SLURM_CPUS_PER_TASK / PROCESSES_PER_NODE threads.
#
# The rendezvous is where slurm says: MASTER_ADDR is slurm's address (NodeAddr) of the job's first
# node, which need not be a name that resolves; MASTER_PORT is 20000 + job id mod 20000, so that
# array tasks sharing a node do not take the same port. Both are set here, whatever the submitting
# shell had.
#
# The first node hosts the rendezvous and the others start once it listens: where two of the
# job's nodes share a host (several slurmd on one machine, containers), the second would otherwise
# take the port first, and accelerate on the first node refuses to start on a port in use.
#
# Environment: ACCELERATE_CONFIG (a path; default above), GPUS_PER_NODE (default: slurm's count
# for the job), PROCESSES_PER_NODE (CPU nodes), L2L_PYTHON (the Python that has l2l installed;
# default python3 on the PATH, which slurm passes on from the submitting shell),
# RENDEZVOUS_WAIT_S (default 600: how long the other nodes wait for the first one's port before
# starting anyway).
#SBATCH --job-name=l2l-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=slurm-%x-%A_%a.out

set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: sbatch $0 CONFIG.yaml|@LIST [overrides...]" >&2
    exit 2
fi
config="$1"
shift
if [[ "$config" == @* ]]; then
    list="${config#@}"
    index="${SLURM_ARRAY_TASK_ID:?an @LIST argument needs a job array (sbatch --array=...)}"
    config="$(sed -n "$((index + 1))p" "$list")"
    if [[ -z "$config" ]]; then
        echo "no config on line $((index + 1)) of $list" >&2
        exit 2
    fi
fi

export L2L_PYTHON="${L2L_PYTHON:-python3}"
# sbatch runs a copy of this file from slurm's spool: the shipped configs are found through the
# package, not next to $0.
launch_dir() { "$L2L_PYTHON" -c 'import training.launch as launch; print(launch.LAUNCH_DIR)'; }
export NUM_NODES="${SLURM_NNODES:-1}"
gpus="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-8}}}"
gpus="${gpus##*:}"  # "h100:8" -> "8"
if [[ "$gpus" == 0 ]]; then
    export ACCELERATE_USE_CPU=1
    export PROCESSES_PER_NODE="${PROCESSES_PER_NODE:-1}"
    if [[ -z "${ACCELERATE_CONFIG:-}" ]]; then
        single=$(( NUM_NODES * PROCESSES_PER_NODE == 1 ))
        ACCELERATE_CONFIG="$(launch_dir)/$( (( single )) && echo cpu.yaml || echo cpu_ddp.yaml)"
    fi
    threads=$(( ${SLURM_CPUS_PER_TASK:-1} / PROCESSES_PER_NODE ))
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}"
    devices="CPU process(es)"
else
    export PROCESSES_PER_NODE="$gpus"
    export ACCELERATE_CONFIG="${ACCELERATE_CONFIG:-$(launch_dir)/fsdp2.yaml}"
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
    devices="GPU(s)"
fi
export ACCELERATE_CONFIG
# sed, not head: head exits after one line and, under pipefail, scontrol's SIGPIPE on a long node
# list (or a slow pipe) would fail the task with status 141.
first_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"
MASTER_ADDR="$(scontrol show node "$first_node" -o 2>/dev/null \
               | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')"
export MASTER_ADDR="${MASTER_ADDR:-$first_node}"
export MASTER_PORT="$((20000 + ${SLURM_JOB_ID:-9500} % 20000))"
export L2L_CONFIG="$config"
export RENDEZVOUS_WAIT_S="${RENDEZVOUS_WAIT_S:-600}"

echo "l2l: $config on $NUM_NODES node(s) x $PROCESSES_PER_NODE $devices, rendezvous" \
     "$MASTER_ADDR:$MASTER_PORT ($first_node), accelerate config $ACCELERATE_CONFIG"

# SLURM_NODEID differs per node: expand it inside each task, not here. The step is given the
# job's CPUs per task explicitly (srun stopped inheriting them in slurm 22.11). --quiet: a failed
# run's own error ends the log, not accelerate's traceback of its child process.
srun --kill-on-bad-exit=1 --ntasks-per-node=1 ${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} \
    bash -c '
    if [[ "$SLURM_NODEID" != 0 ]]; then
        for (( waited = 0; waited < RENDEZVOUS_WAIT_S; waited++ )); do
            (exec 3<>"/dev/tcp/$MASTER_ADDR/$MASTER_PORT") 2>/dev/null && break
            sleep 1
        done
    fi
    exec "$L2L_PYTHON" -m accelerate.commands.accelerate_cli launch --quiet \
        --config_file "$ACCELERATE_CONFIG" \
        --num_machines "$NUM_NODES" \
        --num_processes "$((NUM_NODES * PROCESSES_PER_NODE))" \
        --machine_rank "$SLURM_NODEID" \
        --main_process_ip "$MASTER_ADDR" \
        --main_process_port "$MASTER_PORT" \
        --rdzv_backend c10d \
        -m training --config "$L2L_CONFIG" --resume "$@"
' bash "$@"
