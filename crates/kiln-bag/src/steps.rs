//! The elementwise steps, built the same way by the bag methods and by the registrations that
//! let other processes rebuild them.

use std::sync::Arc;

use kiln_graph::TaskError;

use crate::Element;
use crate::pipeline::{self, Part, Step};

/// `f` of every element.
pub(crate) fn map<T: Element, U: Element>(f: impl Fn(&T) -> U + Send + Sync + 'static) -> Arc<dyn Step> {
    named_map("map", f)
}

/// `f` of every element, as a step called `name` (`starmap` is a map over tuples, registered
/// under its own name).
pub(crate) fn named_map<T: Element, U: Element>(
    name: &'static str,
    f: impl Fn(&T) -> U + Send + Sync + 'static,
) -> Arc<dyn Step> {
    pipeline::elementwise(name, move |part: Part<'_, T>| Ok(part.as_slice().iter().map(&f).collect::<Vec<U>>()))
}

/// `f` of every element; an `Err` fails the task with its message.
pub(crate) fn try_map<T: Element, U: Element, E: std::fmt::Display>(
    f: impl Fn(&T) -> Result<U, E> + Send + Sync + 'static,
) -> Arc<dyn Step> {
    pipeline::elementwise("try_map", move |part: Part<'_, T>| {
        part.as_slice().iter().map(|x| f(x).map_err(|e| TaskError::msg(e))).collect::<Result<Vec<U>, _>>()
    })
}

/// The elements `keep` holds for; `kind` names the step (`filter` or `remove`).
pub(crate) fn filter<T: Element>(
    kind: &'static str,
    keep: impl Fn(&T) -> bool + Send + Sync + 'static,
) -> Arc<dyn Step> {
    pipeline::elementwise(kind, move |part: Part<'_, T>| {
        Ok(match part {
            Part::Borrowed(items) => items.iter().filter(|x| keep(x)).cloned().collect(),
            Part::Owned(mut items) => {
                items.retain(|x| keep(x));
                items
            }
        })
    })
}

/// Every item of every `f(element)`.
pub(crate) fn flat_map<T: Element, U: Element, I: IntoIterator<Item = U>>(
    f: impl Fn(&T) -> I + Send + Sync + 'static,
) -> Arc<dyn Step> {
    pipeline::elementwise("flat_map", move |part: Part<'_, T>| {
        Ok(part.as_slice().iter().flat_map(&f).collect::<Vec<U>>())
    })
}

/// `f` of the whole partition.
pub(crate) fn map_partitions<T: Element, U: Element>(
    f: impl Fn(&[T]) -> Vec<U> + Send + Sync + 'static,
) -> Arc<dyn Step> {
    pipeline::step("map_partitions", move |part: Part<'_, T>| Ok(f(part.as_slice())))
}

/// The items of every list element; owned lists are moved, not cloned.
pub(crate) fn flatten<U: Element>() -> Arc<dyn Step> {
    pipeline::elementwise("flatten", |part: Part<'_, Vec<U>>| {
        Ok(match part {
            Part::Borrowed(lists) => lists.iter().flatten().cloned().collect::<Vec<U>>(),
            Part::Owned(lists) => lists.into_iter().flatten().collect(),
        })
    })
}

/// Each element kept with probability `fraction`, decided by a SplitMix64 hash of the seed, the
/// partition's first element's position-free stream and the element's index, so a partition
/// gives the same sample every time it is computed.
pub(crate) fn random_sample<T: Element>(fraction: f64, seed: u64) -> Arc<dyn Step> {
    let threshold = if fraction >= 1.0 { u64::MAX } else { (fraction.max(0.0) * (u64::MAX as f64)) as u64 };
    pipeline::step("random_sample", move |part: Part<'_, T>| {
        let keep = |i: usize| fraction >= 1.0 || splitmix64(seed ^ splitmix64(i as u64)) < threshold;
        Ok(match part {
            Part::Borrowed(items) => {
                items.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, x)| x.clone()).collect::<Vec<T>>()
            }
            Part::Owned(items) => items.into_iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, x)| x).collect(),
        })
    })
}

/// SplitMix64's output function: a well-mixed 64-bit hash of `x`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
