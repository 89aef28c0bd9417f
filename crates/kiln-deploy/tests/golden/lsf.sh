#!/usr/bin/env bash
#BSUB -J kiln-worker
#BSUB -o /shared/logs/kiln-worker-%J.out
#BSUB -q normal
#BSUB -P proj42
#BSUB -n 8
#BSUB -R "span[hosts=1]"
#BSUB -M 32768MB
#BSUB -W 01:30
#BSUB -x
# a comment line is kept as it is

module load kiln
trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' TERM INT
/opt/kiln/bin/kiln worker tcp://10.0.0.5:8786 --nthreads 2 --memory-limit 8589934592 --name kiln-worker-2-0 --death-timeout 60 --auth-token /shared/kiln/auth-token --local-directory /scratch/kiln &
/opt/kiln/bin/kiln worker tcp://10.0.0.5:8786 --nthreads 2 --memory-limit 8589934592 --name kiln-worker-2-1 --death-timeout 60 --auth-token /shared/kiln/auth-token --local-directory /scratch/kiln &
/opt/kiln/bin/kiln worker tcp://10.0.0.5:8786 --nthreads 2 --memory-limit 8589934592 --name kiln-worker-2-2 --death-timeout 60 --auth-token /shared/kiln/auth-token --local-directory /scratch/kiln &
/opt/kiln/bin/kiln worker tcp://10.0.0.5:8786 --nthreads 2 --memory-limit 8589934592 --name kiln-worker-2-3 --death-timeout 60 --auth-token /shared/kiln/auth-token --local-directory /scratch/kiln &
wait
