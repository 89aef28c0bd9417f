//! A cluster inside one batch allocation (`dask-mpi`'s role): every rank of the job runs
//! `kiln run-in-allocation`, and its rank decides what it becomes: rank 0 the scheduler, rank
//! 1 the client (the user's command), every other rank a worker. They meet through a scheduler
//! file on a shared path.

/// The variables that hold a process's rank, in the order they are read: SLURM's `srun`, MPICH
/// and Intel MPI (`PMI_RANK`), Open MPI, PMIx.
pub const RANK_VARIABLES: &[&str] = &["SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"];

/// What a rank of the allocation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Rank 0.
    Scheduler,
    /// Rank 1: the user's command, connected to the cluster.
    Client,
    /// Every other rank.
    Worker,
}

/// Why this process's rank is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RankError {
    /// No launcher set a rank variable.
    #[error(
        "no rank in the environment (none of {}): start `kiln run-in-allocation` with srun, mpirun or \
         mpiexec, or give --rank",
        RANK_VARIABLES.join(", ")
    )]
    Missing,
    /// A rank variable that is not a number.
    #[error("{variable}={value:?} is not a rank (a non-negative integer)")]
    Invalid {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
    },
}

impl Role {
    /// The role of rank `rank`.
    pub fn of_rank(rank: u64) -> Role {
        match rank {
            0 => Role::Scheduler,
            1 => Role::Client,
            _ => Role::Worker,
        }
    }

    /// The rank in the first of [`RANK_VARIABLES`] that `env` holds, and its role.
    ///
    /// # Errors
    /// [`RankError`] when none is set or the first set is not a number.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<(u64, Role), RankError> {
        for &variable in RANK_VARIABLES {
            if let Some(value) = env(variable) {
                let rank = value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| RankError::Invalid { variable: variable.to_string(), value: value.clone() })?;
                return Ok((rank, Role::of_rank(rank)));
            }
        }
        Err(RankError::Missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn ranks_come_from_the_launcher_in_order() {
        assert_eq!(Role::from_env(env(&[("SLURM_PROCID", "0")])), Ok((0, Role::Scheduler)));
        assert_eq!(Role::from_env(env(&[("PMI_RANK", "1")])), Ok((1, Role::Client)));
        assert_eq!(Role::from_env(env(&[("OMPI_COMM_WORLD_RANK", "7")])), Ok((7, Role::Worker)));
        // srun inside an MPI launcher: SLURM's rank is read first.
        assert_eq!(Role::from_env(env(&[("PMI_RANK", "5"), ("SLURM_PROCID", "1")])), Ok((1, Role::Client)));
    }

    #[test]
    fn a_missing_or_bad_rank_is_named() {
        assert_eq!(Role::from_env(env(&[])), Err(RankError::Missing));
        assert!(RankError::Missing.to_string().contains("SLURM_PROCID, PMI_RANK"));
        let err = Role::from_env(env(&[("SLURM_PROCID", "-1")])).unwrap_err();
        assert_eq!(err.to_string(), "SLURM_PROCID=\"-1\" is not a rank (a non-negative integer)");
    }
}
