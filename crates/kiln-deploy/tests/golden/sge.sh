#!/usr/bin/env bash
#$ -N kiln-worker
#$ -S /bin/bash
#$ -cwd
#$ -j y
#$ -o /shared/logs
#$ -q normal
#$ -P proj42
#$ -pe smp 8
#$ -l h_vmem=4096M
#$ -l h_rt=01:30:00
#$ -l exclusive=true
# a comment line is kept as it is

module load kiln
exec /opt/kiln/bin/kiln worker tls://10.0.0.5:8786 --nthreads 8 --memory-limit 34359738368 --name kiln-worker-1 --death-timeout 60 --tls-ca-file '/shared/kiln dir/tls/ca.pem' --tls-cert '/shared/kiln dir/tls/worker.pem' --tls-key '/shared/kiln dir/tls/worker-key.pem' --auth-token /shared/kiln/auth-token --local-directory /scratch/kiln
