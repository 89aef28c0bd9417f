//! Starting kiln clusters on other machines: HPC job queues (Dask's `dask-jobqueue`: SLURM, PBS,
//! SGE, LSF), a batch allocation whose ranks become the scheduler, the client and the workers
//! (`dask-mpi`'s role), and hosts reached over SSH (Dask's `SSHCluster`).
//!
//! The decisions are pure functions, unit-tested without processes: job scripts and the batch
//! systems' commands and outputs ([`jobqueue::JobSystem`]), the adaptive target
//! ([`kiln_distributed::adaptive::AdaptivePolicy`]), a rank's role
//! ([`allocation::Role::from_env`]), the remote command lines of SSH ([`ssh::remote_command`]).
//! The I/O is at the edge: [`JobQueueCluster`] runs the batch system's commands and a scheduler
//! in this process; [`ssh::SshCluster`] runs the system `ssh`.

#![deny(missing_docs)]

pub mod allocation;
pub mod jobqueue;
mod process;
pub mod shell;
pub mod ssh;

pub use jobqueue::{JobQueueCluster, JobQueueClusterBuilder, JobQueueError};
pub use process::CommandRunner;

/// The address other machines most likely reach this one at: the source address of the route
/// to a public address (no packet is sent); loopback when there is no route.
pub fn outward_ip() -> std::net::IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}
