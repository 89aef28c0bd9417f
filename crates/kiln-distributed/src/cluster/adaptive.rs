//! The adaptive-scaling decision (Dask's `adapt`), as a pure function of the load and the time,
//! shared by [`LocalCluster::adapt`](super::LocalCluster::adapt) and the job-queue clusters of
//! `kiln-deploy`: grow at once when the work exceeds what the workers can hold, shrink only
//! after the load has stayed low for a while, so the cluster does not flap.

use std::time::{Duration, Instant};

use crate::client::ClusterLoad;

/// Adaptive scaling between `min` and `max` workers.
#[derive(Debug, Clone)]
pub struct AdaptivePolicy {
    /// Fewest workers.
    pub min: usize,
    /// Most workers.
    pub max: usize,
    /// Threads of each worker (the unit the load is divided by).
    pub threads_per_worker: usize,
    /// Pending tasks per thread that justify one more worker (Dask's is about 2: a worker
    /// should have one task running and one queued per thread).
    pub tasks_per_thread: f64,
    /// How long the target must stay below the current size before the cluster shrinks.
    pub scale_down_after: Duration,
    low_since: Option<Instant>,
}

impl AdaptivePolicy {
    /// A policy between `min` and `max` (raised to `min` if lower) workers of
    /// `threads_per_worker` threads, with Dask's defaults otherwise.
    pub fn new(min: usize, max: usize, threads_per_worker: usize) -> AdaptivePolicy {
        AdaptivePolicy {
            min,
            max: max.max(min),
            threads_per_worker: threads_per_worker.max(1),
            tasks_per_thread: 2.0,
            scale_down_after: Duration::from_secs(2),
            low_since: None,
        }
    }

    /// The number of workers the load calls for, within `min..=max`.
    pub fn target(&self, load: &ClusterLoad) -> usize {
        let demand = (load.queued + load.processing + load.waiting) as f64;
        let per_worker = self.tasks_per_thread * self.threads_per_worker as f64;
        ((demand / per_worker).ceil() as usize).clamp(self.min, self.max)
    }

    /// The size to scale to now, given the load, the current size (workers asked for, started
    /// or not) and the time; `None`: stay.
    pub fn decide(&mut self, load: &ClusterLoad, current: usize, now: Instant) -> Option<usize> {
        let desired = self.target(load);
        if desired > current {
            self.low_since = None;
            return Some(desired);
        }
        if desired == current {
            self.low_since = None;
            return None;
        }
        let since = *self.low_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.scale_down_after {
            self.low_since = None;
            return Some(desired);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pending: u64) -> ClusterLoad {
        ClusterLoad { queued: pending, processing: 0, waiting: 0, workers: 0, threads: 0 }
    }

    #[test]
    fn grows_at_once_within_the_bounds() {
        let mut policy = AdaptivePolicy::new(1, 4, 2);
        let t = Instant::now();
        assert_eq!(policy.target(&load(0)), 1);
        assert_eq!(policy.target(&load(5)), 2);
        assert_eq!(policy.decide(&load(9), 1, t), Some(3));
        assert_eq!(policy.decide(&load(1000), 3, t), Some(4));
        assert_eq!(policy.decide(&load(1000), 4, t), None);
    }

    #[test]
    fn shrinks_only_after_the_load_stays_low() {
        let mut policy = AdaptivePolicy::new(0, 4, 1);
        let t = Instant::now();
        assert_eq!(policy.decide(&load(0), 3, t), None);
        assert_eq!(policy.decide(&load(0), 3, t + Duration::from_secs(1)), None);
        // A burst of work resets the clock.
        assert_eq!(policy.decide(&load(6), 3, t + Duration::from_millis(1500)), None);
        assert_eq!(policy.decide(&load(0), 3, t + Duration::from_secs(3)), None);
        assert_eq!(policy.decide(&load(0), 3, t + Duration::from_secs(5)), Some(0));
    }

    #[test]
    fn max_below_min_is_min() {
        let policy = AdaptivePolicy::new(3, 1, 1);
        assert_eq!((policy.min, policy.max), (3, 3));
        assert_eq!(policy.target(&load(100)), 3);
    }
}
