//! Operations that reshape partitions (`random_sample`, `zip`, `repartition`), tuple mapping
//! (`starmap`), `join` with an in-memory table, and `to_delayed`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use kiln_graph::kernel::{input, slice_kernel};
use kiln_graph::{Kernel, KernelSpec, Key, Tokenizer, Value};

use crate::node::{Node, NodeArg};
use crate::pipeline::{self, Part, PipelineKernel, Step};
use crate::portable::{SpecKernel, StepSpec, tag_of};
use crate::{Bag, BagError, Element, fresh_token, steps};

impl<T: Element> Bag<T> {
    /// The pending steps, oldest first.
    fn pending(&self) -> Vec<Arc<dyn Step>> {
        let mut all = Vec::new();
        let mut cursor = self.steps.as_ref();
        while let Some(s) = cursor {
            all.push(Arc::clone(&s.step));
            cursor = s.prev.as_ref();
        }
        all.reverse();
        all
    }

    /// A bag whose partition `i` is this one's after the pending steps and `last(i)`, one fused
    /// task per partition (for steps that depend on the partition's position).
    fn with_partition_step<U: Element>(
        &self,
        name: &str,
        token: &str,
        last: impl Fn(usize) -> Arc<dyn Step>,
    ) -> Bag<U> {
        if let Some(error) = &self.invalid {
            return Bag::invalid(error.clone());
        }
        let pending = self.pending();
        let base = self.steps.as_ref().map_or(self.base_token.as_ref(), |s| s.token.as_str());
        let token = Tokenizer::new().add(base).add(name).add(token).finish();
        let key_name: Arc<str> = format!("{name}-{token}").into();
        let nodes = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut steps = pending.clone();
                steps.push(last(i));
                let whole: Arc<dyn Kernel> = Arc::new(PipelineKernel::from_steps(steps.clone()));
                let key = Key::from_shared(&key_name, &[i as u32]);
                crate::stream::pipeline_node(key, p, &steps, &whole, self.chunk_size)
            })
            .collect();
        let mut bag = Bag::from_nodes(nodes, token);
        bag.split_every = self.split_every;
        bag.chunk_size = self.chunk_size;
        bag
    }

    /// Each element kept with probability `fraction` (Dask's `random_sample`), decided by a
    /// hash of `seed`, the partition's number and the element's position in it: the same seed
    /// gives the same sample on every run and scheduler. `fraction` must be in `[0, 1]`.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let bag = Bag::range(1000, 4);
    /// let sample = bag.random_sample(0.1, 42).compute_on(&LocalScheduler::new()).unwrap();
    /// assert!(sample.len() > 50 && sample.len() < 150);
    /// assert_eq!(sample, bag.random_sample(0.1, 42).compute_on(&LocalScheduler::new()).unwrap());
    /// ```
    pub fn random_sample(&self, fraction: f64, seed: u64) -> Bag<T> {
        if !(0.0..=1.0).contains(&fraction) {
            return Bag::invalid(BagError::BadFraction(fraction.to_string()));
        }
        let tag = tag_of::<T>();
        let token = Tokenizer::new().add(&fraction.to_bits()).add(&seed).finish();
        self.with_partition_step("random_sample", &token, |i| {
            let seed = steps::splitmix64(seed ^ steps::splitmix64(i as u64 ^ 0x5eed));
            let spec = tag.as_ref().and_then(|tag| {
                postcard::to_allocvec(&(fraction, seed))
                    .ok()
                    .map(|params| StepSpec { id: format!("kiln.bag.random_sample/{tag}"), params })
            });
            pipeline::with_spec(steps::random_sample::<T>(fraction, seed), spec)
        })
    }

    /// Pairs of this bag's and `other`'s elements, partition by partition (Dask's `zip`): the
    /// bags must have as many partitions, and partitions of equal lengths (a difference fails
    /// the partition's task, naming both lengths). On a cluster when the pairs are registered
    /// ([`crate::portable::register_zip`]; built in for `(T, u64)` of the built-in hashable
    /// types and for `(T, T)` of `u64`, `i64`, `f64` and `String`).
    pub fn zip<U: Element>(&self, other: &Bag<U>) -> Bag<(T, U)> {
        if let Some(error) = self.invalid.as_ref().or(other.invalid.as_ref()) {
            return Bag::invalid(error.clone());
        }
        if self.npartitions() != other.npartitions() {
            return Bag::invalid(BagError::ZipPartitions { left: self.npartitions(), right: other.npartitions() });
        }
        let (left, right) = (self.nodes(), other.nodes());
        let mut tokens = Tokenizer::new();
        tokens.feed("zip");
        for node in left.iter().chain(&right) {
            tokens.feed(&node.key);
        }
        let token = tokens.finish();
        let name: Arc<str> = format!("zip-{token}").into();
        let portable = crate::portable::zip_spec_id::<T, U>().is_some();
        let nodes = left
            .into_iter()
            .zip(right)
            .enumerate()
            .map(|(i, (l, r))| {
                let kernel = zip_kernel::<T, U>(i, portable);
                Node::new(Key::from_shared(&name, &[i as u32]), kernel, vec![NodeArg::Node(l), NodeArg::Node(r)])
            })
            .collect();
        Bag::from_nodes(nodes, token)
    }

    /// The same elements in the same order in `n` partitions (Dask's `repartition`): fewer
    /// partitions concatenate neighbours, more split each partition into nearly equal pieces.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let bag = Bag::range(10, 2).repartition(5);
    /// assert_eq!(bag.npartitions(), 5);
    /// assert_eq!(bag.compute_on(&LocalScheduler::new()).unwrap(), (0..10).collect::<Vec<u64>>());
    /// ```
    pub fn repartition(&self, n: usize) -> Bag<T> {
        if let Some(error) = &self.invalid {
            return Bag::invalid(error.clone());
        }
        if n == 0 {
            return Bag::invalid(BagError::ZeroPartitions { operation: "repartition" });
        }
        let from = self.npartitions();
        if n == from {
            return self.clone();
        }
        let inputs = self.nodes();
        let mut tokens = Tokenizer::new();
        tokens.feed("repartition").feed(&(n as u64));
        for node in &inputs {
            tokens.feed(&node.key);
        }
        let token = tokens.finish();
        let name: Arc<str> = format!("repartition-{token}").into();
        let tag = tag_of::<T>();
        let nodes: Vec<Arc<Node>> = if n < from {
            (0..n)
                .map(|j| {
                    let group = &inputs[j * from / n..(j + 1) * from / n];
                    let args = group.iter().map(|p| NodeArg::Node(Arc::clone(p))).collect();
                    Node::new(Key::from_shared(&name, &[j as u32]), concat_kernel::<T>(tag.as_deref()), args)
                })
                .collect()
        } else {
            let mut out = Vec::with_capacity(n);
            for (i, part) in inputs.iter().enumerate() {
                let pieces = n / from + usize::from(i < n % from);
                for piece in 0..pieces {
                    let kernel = piece_kernel::<T>(piece, pieces, tag.as_deref());
                    let key = Key::from_shared(&name, &[out.len() as u32]);
                    out.push(Node::new(key, kernel, vec![NodeArg::Node(Arc::clone(part))]));
                }
            }
            out
        };
        let mut bag = Bag::from_nodes(nodes, token);
        bag.split_every = self.split_every;
        bag.chunk_size = self.chunk_size;
        bag
    }

    /// `(other_item, element)` for every element and every item of the in-memory table
    /// `other` whose key matches (Dask's `join(other, on_self, on_other)`): an inner join,
    /// elements in bag order, matches in table order. The table is indexed once and shared by
    /// the partitions' tasks. For a cluster, register the key functions
    /// ([`crate::portable::register_join`]) and call [`Bag::portable`] right after: the table
    /// then travels with each partition's task.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let names = vec![(1u64, "one".to_string()), (2, "two".to_string())];
    /// let joined = Bag::range(4, 2).join(names, |x| *x, |(k, _)| *k).map(|((_, name), x)| format!("{x}:{name}"));
    /// assert_eq!(joined.compute_on(&LocalScheduler::new()).unwrap(), ["1:one", "2:two"]);
    /// ```
    pub fn join<O: Element, K: Eq + Hash + Send + Sync + 'static>(
        &self,
        other: impl IntoIterator<Item = O>,
        on_self: impl Fn(&T) -> K + Send + Sync + 'static,
        on_other: impl Fn(&O) -> K,
    ) -> Bag<(O, T)> {
        let table: Arc<Vec<O>> = Arc::new(other.into_iter().collect());
        let index = Arc::new(join_index(&table, &on_other));
        let on_self: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(on_self);
        let step = join_step(Arc::clone(&table), index, on_self);
        let token = fresh_token();
        let mut out = self.then(Arc::clone(&step), &token);
        let input = self.clone();
        out.rebuild = Some(Arc::new(move |id: &str| {
            // The table travels with every partition's task, through its codec.
            match crate::portable::encode_value(&*table) {
                Ok(params) => {
                    let spec = StepSpec { id: format!("kiln.bag.join/{id}"), params };
                    input.then(pipeline::with_spec(Arc::clone(&step), Some(spec)), &token)
                }
                Err(error) => Bag::invalid(error),
            }
        }));
        out
    }

    /// One delayed value per partition (Dask's `to_delayed`), with the pending steps applied.
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let parts = Bag::range(5, 2).map(|x| x * 10).to_delayed();
    /// assert_eq!(parts[1].compute_on(&LocalScheduler::new()).unwrap(), vec![30, 40]);
    /// ```
    pub fn to_delayed(&self) -> Vec<kiln_delayed::Delayed<Vec<T>>> {
        if let Some(error) = &self.invalid {
            // A delayed value cannot carry a construction error: each partition task fails
            // with it instead.
            let message = error.to_string();
            return vec![kiln_delayed::try_func0("invalid-bag", move || Err::<Vec<T>, _>(message.clone())).call()];
        }
        self.nodes()
            .into_iter()
            .map(|node| {
                let key = Tokenizer::new().add(&node.key).key("to_delayed");
                kiln_delayed::Delayed::from_external(
                    key,
                    Arc::new(move |builder| Ok(crate::node::lower(std::slice::from_ref(&node), builder)?[0])),
                )
            })
            .collect()
    }
}

/// `join`'s index of its table: the positions of the items under each key, in table order.
pub(crate) fn join_index<O, K: Eq + Hash>(table: &[O], on_other: &dyn Fn(&O) -> K) -> HashMap<K, Vec<usize>> {
    let mut index: HashMap<K, Vec<usize>> = HashMap::new();
    for (at, item) in table.iter().enumerate() {
        index.entry(on_other(item)).or_default().push(at);
    }
    index
}

/// `join`'s step: each element paired with every table item under its key.
pub(crate) fn join_step<T: Element, O: Element, K: Eq + Hash + Send + Sync + 'static>(
    table: Arc<Vec<O>>,
    index: Arc<HashMap<K, Vec<usize>>>,
    on_self: Arc<dyn Fn(&T) -> K + Send + Sync>,
) -> Arc<dyn Step> {
    pipeline::elementwise("join", move |part: Part<'_, T>| {
        let mut out = Vec::new();
        for x in part.as_slice() {
            if let Some(matches) = index.get(&on_self(x)) {
                out.extend(matches.iter().map(|&at| (table[at].clone(), x.clone())));
            }
        }
        Ok(out)
    })
}

/// The kernel pairing partition `partition` of two bags; `portable` when the pairs of `T` and
/// `U` are registered for zip ([`crate::portable::register_zip`]).
pub(crate) fn zip_kernel<T: Element, U: Element>(partition: usize, portable: bool) -> Arc<dyn Kernel> {
    let inner: Arc<dyn Kernel> = Arc::new(slice_kernel("zip", move |inputs: &[Value]| {
        let (a, b) = (input::<Vec<T>>(inputs, 0)?, input::<Vec<U>>(inputs, 1)?);
        if a.len() != b.len() {
            return Err(BagError::ZipLengths { partition, left: a.len(), right: b.len() }.into());
        }
        Ok(Value::new(a.iter().cloned().zip(b.iter().cloned()).collect::<Vec<(T, U)>>()))
    }));
    let spec = portable
        .then(crate::portable::zip_spec_id::<T, U>)
        .flatten()
        .and_then(|id| postcard::to_allocvec(&(partition as u64)).ok().map(|params| KernelSpec { id, params }));
    Arc::new(SpecKernel { inner, spec, element: std::any::type_name::<(T, U)>() })
}

/// The kernel concatenating its inputs' partitions.
pub(crate) fn concat_kernel<T: Element>(tag: Option<&str>) -> Arc<dyn Kernel> {
    let inner: Arc<dyn Kernel> = Arc::new(slice_kernel("concat", |inputs: &[Value]| {
        let mut out: Vec<T> = Vec::new();
        for i in 0..inputs.len() {
            out.extend_from_slice(input::<Vec<T>>(inputs, i)?);
        }
        Ok(Value::new(out))
    }));
    let spec = tag.map(|tag| KernelSpec { id: format!("kiln.bag.concat/{tag}"), params: Vec::new() });
    Arc::new(SpecKernel { inner, spec, element: std::any::type_name::<T>() })
}

/// The kernel taking piece `piece` of `pieces` nearly equal pieces of its input partition.
pub(crate) fn piece_kernel<T: Element>(piece: usize, pieces: usize, tag: Option<&str>) -> Arc<dyn Kernel> {
    let inner: Arc<dyn Kernel> = Arc::new(slice_kernel("split", move |inputs: &[Value]| {
        let part = input::<Vec<T>>(inputs, 0)?;
        let (start, end) = (part.len() * piece / pieces, part.len() * (piece + 1) / pieces);
        Ok(Value::new(part[start..end].to_vec()))
    }));
    let spec = tag.and_then(|tag| {
        postcard::to_allocvec(&(piece as u64, pieces as u64))
            .ok()
            .map(|params| KernelSpec { id: format!("kiln.bag.split/{tag}"), params })
    });
    Arc::new(SpecKernel { inner, spec, element: std::any::type_name::<T>() })
}

impl<A: Element, B: Element> Bag<(A, B)> {
    /// `f(a, b)` of every pair (Dask's `starmap`).
    ///
    /// ```
    /// # use kiln_bag::Bag; use kiln_graph::Collection; use kiln_local::LocalScheduler;
    /// let pairs = Bag::from_sequence([(1, 2), (3, 4)], 2);
    /// assert_eq!(pairs.starmap(|a, b| a * b).compute_on(&LocalScheduler::new()).unwrap(), vec![2, 12]);
    /// ```
    ///
    /// For a cluster, register `f` ([`crate::portable::register_starmap`]) and call
    /// [`Bag::portable`] right after.
    pub fn starmap<U: Element>(&self, f: impl Fn(&A, &B) -> U + Send + Sync + 'static) -> Bag<U> {
        self.then(steps::named_map("starmap", move |(a, b): &(A, B)| f(a, b)), &fresh_token())
    }
}

impl<A: Element, B: Element, C: Element> Bag<(A, B, C)> {
    /// `f(a, b, c)` of every triple (Dask's `starmap`); for a cluster, register `f` with
    /// [`crate::portable::register_starmap3`] and call [`Bag::portable`] right after.
    pub fn starmap<U: Element>(&self, f: impl Fn(&A, &B, &C) -> U + Send + Sync + 'static) -> Bag<U> {
        self.then(steps::named_map("starmap", move |(a, b, c): &(A, B, C)| f(a, b, c)), &fresh_token())
    }
}
