#!/usr/bin/env bash
#PBS -N kiln-worker
#PBS -j oe
#PBS -o /shared/logs/
#PBS -q normal
#PBS -A proj42
#PBS -l select=1:ncpus=8:mem=32768mb
#PBS -l walltime=01:30:00
#PBS -l place=excl
# a comment line is kept as it is

module load kiln
trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' TERM INT
/opt/kiln/bin/kiln worker tcp://10.0.0.5:8786 --nthreads 4 --memory-limit 17179869184 --name kiln-worker-0-0 --death-timeout 60 --auth-token /shared/kiln/auth-token --local-directory /scratch/kiln &
/opt/kiln/bin/kiln worker tcp://10.0.0.5:8786 --nthreads 4 --memory-limit 17179869184 --name kiln-worker-0-1 --death-timeout 60 --auth-token /shared/kiln/auth-token --local-directory /scratch/kiln &
wait
