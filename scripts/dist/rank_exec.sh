#!/usr/bin/env bash
# rank_exec.sh: runs one rank's program under mpirun (or srun) after two optional per-rank settings,
# for scripts/dist/gpu_scaling.sh:
#   RANKS_PER_HOST=K  NCCL_HOSTID=<SIM_HOST_PREFIX><rank / K>: NCCL then takes every K consecutive ranks
#                     for one host (P2P/SHM inside, its network transport between): a simulated multi-node
#                     run on one machine. MPI (and mo's local rank, hence the GPU) still see one host.
#   PID_DIR=DIR       writes DIR/rank<R>.pid (the program's pid: exec keeps it), so a rank can be killed.
#   mpirun -np 8 bash scripts/dist/rank_exec.sh build/tools/mo_train recipes/tiny.yaml ...
set -euo pipefail
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${PMI_RANK:-${SLURM_PROCID:-}}}}
if [ -z "$rank" ]; then echo "rank_exec.sh: no rank in the environment (not started by mpirun or srun?)" >&2; exit 2; fi
if [ -n "${RANKS_PER_HOST:-}" ]; then export NCCL_HOSTID="${SIM_HOST_PREFIX:-simhost}$(( rank / RANKS_PER_HOST ))"; fi
if [ -n "${PID_DIR:-}" ]; then echo $$ >"$PID_DIR/rank$rank.pid"; fi
exec "$@"
