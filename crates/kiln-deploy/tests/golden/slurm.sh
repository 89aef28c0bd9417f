#!/usr/bin/env bash
#SBATCH -J kiln-worker
#SBATCH -o /shared/logs/%x-%j.out
#SBATCH -p normal
#SBATCH -A proj42
#SBATCH -n 1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32768M
#SBATCH -t 01:30:00
#SBATCH --exclusive
# a comment line is kept as it is

module load kiln
exec /opt/kiln/bin/kiln worker tcp://10.0.0.5:8786 --nthreads 8 --memory-limit 34359738368 --name kiln-worker-3 --death-timeout 60 --auth-token /shared/kiln/auth-token --local-directory /scratch/kiln
