#!/usr/bin/env bash
# Submits a whole Deep Incubation pipeline to SLURM as dependent jobs:
#
#   1. meta pretraining                                   --phase meta
#   2. a job array of K module incubations, one task per module, all in parallel
#                                                         --phase incubate --module $SLURM_ARRAY_TASK_ID
#      (after the meta job succeeded)
#   3. assembly + fine-tuning, after every module succeeded   --phase assemble finetune
#   (4. with E2E=1: the end-to-end baseline, independent   --phase e2e)
#
#   tools/slurm_incubate.sh PARTITION JOB_NAME CONFIG [tools/train.py args]
#   META_GPUS=8 INCUBATE_GPUS=8 FINETUNE_GPUS=16 tools/slurm_incubate.sh gpu vitb configs/incubate_vit_b.py
#
# K is read from the config (and its --cfg-options), so the array always matches the layout. The
# train.py args go to every job; all jobs share the config's work dir (pass --work-dir to choose
# it), where finished phases are skipped and interrupted ones resume, so resubmitting is safe.
#
# Environment:
#   GPUS (8)                  default for the three below
#   META_GPUS, INCUBATE_GPUS, FINETUNE_GPUS, E2E_GPUS (= FINETUNE_GPUS)   GPUs (= tasks) per job
#   GPUS_PER_NODE (min(GPUS of the job, 8)), CPUS_PER_TASK (5)
#   MAX_PARALLEL              run at most this many module jobs at once (sbatch --array=0-3%N)
#   E2E=1                     also submit the E2E baseline
#   SBATCH_ARGS, SRUN_ARGS    extra options for every sbatch / srun (e.g. "--time=72:00:00 -A proj")
#   PYTHON (python)           interpreter, on the login node (to read K) and in the jobs
#   MASTER_PORT, RENDEZVOUS_TIMEOUT   as for tools/slurm_train.sh: leave MASTER_PORT unset, each job
#                             (each array task) then rendezvous on a port derived from its own job id
#   DRY_RUN=1                 print the sbatch commands and job scripts instead of submitting
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG [tools/train.py args]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
PY_ARGS=("$@")
for arg in "${PY_ARGS[@]}"; do
    case "$arg" in
        --phase|--phase=*|--module|--module=*)
            echo "$0 chooses --phase and --module for each job itself; remove $arg" >&2
            exit 2 ;;
    esac
done

GPUS=${GPUS:-8}
META_GPUS=${META_GPUS:-$GPUS}
INCUBATE_GPUS=${INCUBATE_GPUS:-$GPUS}
FINETUNE_GPUS=${FINETUNE_GPUS:-$GPUS}
E2E_GPUS=${E2E_GPUS:-$FINETUNE_GPUS}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SBATCH_ARGS=${SBATCH_ARGS:-""}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

# K, from the config as tools/train.py would see it (with the same --cfg-options).
NUM_MODULES=$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONWARNINGS=ignore "$PYTHON" -c '
import sys
from mmengine.config import Config
from mmincubation.engine.runner import build_layout
from tools.train import merge_args, parse_args
args = parse_args(sys.argv[1:])
cfg = merge_args(Config.fromfile(args.config), args)
if "incubation" not in cfg:
    sys.exit(f"{args.config} has no incubation section: use tools/slurm_train.sh for plain configs")
print(build_layout(cfg).num_modules)
' "$CONFIG" "${PY_ARGS[@]}" | tail -n 1)
if ! [[ $NUM_MODULES =~ ^[1-9][0-9]*$ ]]; then
    echo "could not read the number of modules from $CONFIG (got '$NUM_MODULES')" >&2
    exit 1
fi

TASK_ID='$SLURM_ARRAY_TASK_ID'  # stands for the array task's index, read when the job runs
exec 3>&1  # what the user sees; stdout of submit() is the job id

# The body of one job: srun starts one tools/train.py per task of the allocation. Every argument is
# quoted as given, except $TASK_ID, which the job's shell expands.
job_script() {
    local arg
    printf '#!/usr/bin/env bash\nset -euo pipefail\n'
    # shellcheck disable=SC2016
    printf 'export PYTHONPATH=%q${PYTHONPATH:+:$PYTHONPATH}\n' "$ROOT"
    printf 'srun --kill-on-bad-exit=1'
    [ -n "$SRUN_ARGS" ] && printf ' %s' "$SRUN_ARGS"
    for arg in "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --launcher slurm "${PY_ARGS[@]}" "$@"; do
        if [ "$arg" = "$TASK_ID" ]; then
            printf ' "%s"' "$TASK_ID"
        else
            printf ' %q' "$arg"
        fi
    done
    printf '\n'
}

# submit NAME GPUS DEPENDENCY ARRAY TRAIN_ARGS...: prints the job id (DRY_RUN_<NAME>_JOB_ID on a dry run).
submit() {
    local name=$1 gpus=$2 dependency=$3 array=$4
    shift 4
    local per_node=${GPUS_PER_NODE:-$((gpus < 8 ? gpus : 8))}
    local cmd=(sbatch --parsable -p "$PARTITION" --job-name="$JOB_NAME-$name"
               --gres=gpu:"$per_node" --ntasks="$gpus" --ntasks-per-node="$per_node"
               --cpus-per-task="$CPUS_PER_TASK")
    [ -n "$array" ] && cmd+=(--array="$array")
    [ -n "$dependency" ] && cmd+=(--dependency=afterok:"$dependency")
    # SBATCH_ARGS is split into words on purpose (several sbatch options in one variable).
    # shellcheck disable=SC2206
    cmd+=($SBATCH_ARGS)
    local script
    script=$(job_script "$@")
    if [ "$DRY_RUN" = 1 ]; then
        {
            printf '%q ' "${cmd[@]}"
            printf '<<'"'"'EOF'"'"'\n%s\nEOF\n\n' "$script"
        } >&3
        echo "DRY_RUN_${name^^}_JOB_ID"
        return
    fi
    local id
    id=$("${cmd[@]}" <<<"$script")
    id=${id%%;*}  # --parsable prints "id" or "id;cluster"
    if ! [[ $id =~ ^[0-9]+$ ]]; then
        echo "sbatch did not return a job id for $name (got '$id')" >&2
        exit 1
    fi
    echo "$id"
}

ARRAY="0-$((NUM_MODULES - 1))${MAX_PARALLEL:+%$MAX_PARALLEL}"
META_ID=$(submit meta "$META_GPUS" "" "" --phase meta)
INCUBATE_ID=$(submit incubate "$INCUBATE_GPUS" "$META_ID" "$ARRAY" --phase incubate --module "$TASK_ID")
FINETUNE_ID=$(submit finetune "$FINETUNE_GPUS" "$INCUBATE_ID" "" --phase assemble finetune)
echo "meta: $META_ID  incubate (array $ARRAY, K=$NUM_MODULES): $INCUBATE_ID  assemble+finetune: $FINETUNE_ID"
if [ "${E2E:-0}" = 1 ]; then
    E2E_ID=$(submit e2e "$E2E_GPUS" "" "" --phase e2e)
    echo "e2e baseline: $E2E_ID"
fi
