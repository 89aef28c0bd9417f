//! Futures: handles on remote results (Dask's `client.submit`, `map`, `scatter`, `gather`,
//! `wait`, `as_completed`, `cancel`, `publish_dataset`).
//!
//! A [`Future`] references one key on the cluster. References are counted in the client and,
//! across clients, by the scheduler: the cluster frees a result when the last future (in any
//! client, or a published dataset) that names it is dropped.

use std::any::Any;
use std::collections::HashSet;
use std::marker::PhantomData;

use kiln_delayed::{Delayed, Func1, IntoArg, NodeArgOf};
use kiln_graph::collection::{graph_of, optimize};
use kiln_graph::{ComputeError, Key, Persist, Tokenizer, Value};
use kiln_protocol::messages::{ClientToScheduler, SchedulerToClient};

use crate::client::{Client, KeyStatus};

/// A remote result of type `T`.
pub struct Future<T> {
    key: Key,
    client: Client,
    _t: PhantomData<fn() -> T>,
}

impl<T> Future<T> {
    /// Takes a new reference on `key` (the caller already announced it to the scheduler).
    fn adopt(client: &Client, key: Key) -> Self {
        Future { key, client: client.clone(), _t: PhantomData }
    }

    /// The client it belongs to.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The key of the result on the cluster.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Where the computation stands.
    pub fn status(&self) -> KeyStatus {
        self.client.status(&self.key)
    }

    /// Whether it finished, failed or was cancelled.
    pub fn done(&self) -> bool {
        self.status() != KeyStatus::Pending
    }

    /// Waits until the result is in cluster memory.
    ///
    /// # Errors
    /// The task (or one it depends on) failed, was cancelled, or the cluster went away.
    pub fn wait(&self) -> Result<(), ComputeError> {
        self.client.wait_keys(std::slice::from_ref(&self.key))
    }

    /// Stops computing this result (unless another future elsewhere still wants it).
    pub fn cancel(&self) {
        self.client.send(ClientToScheduler::Cancel { keys: vec![self.key.clone()] });
    }

    /// This future as a delayed value, to build further computations on the cluster's data.
    pub fn to_delayed(&self) -> Delayed<T>
    where
        T: Any + Send + Sync,
    {
        Delayed::remote(self.key.clone(), Value::new(self.adopt_clone()))
    }

    fn adopt_clone(&self) -> Future<T> {
        self.client.retain(std::slice::from_ref(&self.key));
        Future::adopt(&self.client, self.key.clone())
    }
}

impl<T: Any + Clone> Future<T> {
    /// Waits for the result and fetches it.
    ///
    /// # Errors
    /// As [`Future::wait`], plus a result of another type than `T`.
    pub fn result(&self) -> Result<T, ComputeError> {
        let value = self.client.fetch(std::slice::from_ref(&self.key))?.pop().expect("one value");
        downcast(&self.key, value)
    }
}

fn downcast<T: Any + Clone>(key: &Key, value: Value) -> Result<T, ComputeError> {
    value.downcast_ref::<T>().cloned().map_err(|m| ComputeError::ResultType {
        key: key.clone(),
        expected: m.expected,
        found: m.found,
    })
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Self {
        self.adopt_clone()
    }
}

impl<T> Drop for Future<T> {
    fn drop(&mut self) {
        self.client.release(std::slice::from_ref(&self.key));
    }
}

impl<T> std::fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Future({}, {:?})", self.key, self.status())
    }
}

/// A future is an argument of delayed calls: the task reads the remote value.
impl<T: Any + Send + Sync> IntoArg<T> for &Future<T> {
    fn into_node_arg(self, tokens: &mut Tokenizer) -> NodeArgOf {
        self.to_delayed().into_node_arg(tokens)
    }
}

impl Client {
    /// Starts computing a delayed value on the cluster (Dask's `client.compute` /
    /// `client.submit`): returns at once with a future.
    ///
    /// ```
    /// # use kiln_distributed::{LocalCluster, WorkerMode};
    /// use kiln_delayed::func2;
    /// let cluster = LocalCluster::builder().mode(WorkerMode::Threads).start().unwrap();
    /// let client = cluster.client().unwrap();
    /// let add = func2("add", |a: &i64, b: &i64| a + b).portable("myapp.add");
    /// kiln_graph::KernelRegistry::global().register_instance(add.kernel());
    /// let future = client.submit(add.call(1, 2)).unwrap();
    /// assert_eq!(future.result().unwrap(), 3);
    /// ```
    ///
    /// # Errors
    /// A task that cannot be sent (an unregistered closure), with how to register it.
    pub fn submit<T: Any + Send + Sync + Clone>(&self, value: Delayed<T>) -> Result<Future<T>, ComputeError> {
        let (graph, outputs) = graph_of(&value)?;
        let keys = self.submit_graph(&graph, &outputs)?;
        Ok(Future::adopt(self, keys.into_iter().next().expect("one output")))
    }

    /// Submits many delayed values in one message.
    ///
    /// # Errors
    /// As [`Client::submit`].
    pub fn submit_all<T: Any + Send + Sync + Clone>(
        &self,
        values: Vec<Delayed<T>>,
    ) -> Result<Vec<Future<T>>, ComputeError> {
        let (graph, outputs) = graph_of(&values)?;
        let keys = self.submit_graph(&graph, &outputs)?;
        Ok(keys.into_iter().map(|k| Future::adopt(self, k)).collect())
    }

    /// Starts computing a collection on the cluster and keeps its results there (Dask's
    /// `persist`): returns at once with the same collection standing for the remote results,
    /// so later computations start from cluster memory. The results are freed when the
    /// returned collection (and every graph built from it) is dropped.
    ///
    /// # Errors
    /// As [`Client::submit`].
    pub fn persist<C: Persist>(&self, collection: &C) -> Result<C, ComputeError> {
        let (graph, outputs) = graph_of(collection)?;
        let (graph, outputs) = optimize(graph, outputs)?;
        let keys = self.submit_graph(&graph, &outputs)?;
        let futures: Vec<Future<()>> = keys.into_iter().map(|k| Future::adopt(self, k)).collect();
        Ok(collection.with_remote_outputs(Value::new(PersistedKeys(futures))))
    }

    /// Applies a registered function to every item (Dask's `client.map`).
    ///
    /// # Errors
    /// As [`Client::submit`].
    pub fn map<A, R, I>(&self, f: &Func1<A, R>, items: I) -> Result<Vec<Future<R>>, ComputeError>
    where
        A: Any + Send + Sync,
        R: Any + Send + Sync + Clone,
        I: IntoIterator,
        I::Item: IntoArg<A>,
    {
        self.submit_all(items.into_iter().map(|item| f.call(item)).collect())
    }

    /// Places local data on the workers (round robin) and returns futures to it.
    ///
    /// # Errors
    /// No workers, a type without a codec, or a worker that refuses the data.
    pub fn scatter<T: Any + Send + Sync>(&self, items: Vec<T>) -> Result<Vec<Future<T>>, ComputeError> {
        let values = items.into_iter().map(Value::new).collect();
        let prefix = std::any::type_name::<T>().rsplit("::").next().unwrap_or("data").to_ascii_lowercase();
        let prefix: String = prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let keys = self.scatter_values(values, &prefix)?;
        Ok(keys.into_iter().map(|k| Future::adopt(self, k)).collect())
    }

    /// Waits for all futures and fetches their results (Dask's `client.gather`).
    ///
    /// # Errors
    /// The first failure, or a result of another type.
    pub fn gather<T: Any + Clone>(&self, futures: &[Future<T>]) -> Result<Vec<T>, ComputeError> {
        let keys: Vec<Key> = futures.iter().map(|f| f.key.clone()).collect();
        let values = self.fetch(&keys)?;
        keys.iter().zip(values).map(|(k, v)| downcast(k, v)).collect()
    }

    /// Waits until every future is done (finished, failed or cancelled).
    ///
    /// # Errors
    /// The first failure.
    pub fn wait<T>(&self, futures: &[Future<T>]) -> Result<(), ComputeError> {
        let keys: Vec<Key> = futures.iter().map(|f| f.key.clone()).collect();
        self.wait_keys(&keys)
    }

    /// Yields futures in the order they complete (Dask's `as_completed`).
    pub fn as_completed<T>(&self, futures: Vec<Future<T>>) -> AsCompleted<T> {
        AsCompleted { client: self.clone(), pending: futures }
    }

    /// Names futures so other clients can use them; the cluster keeps them while published
    /// (Dask's `publish_dataset`). A name already taken is refused: see
    /// [`Client::publish_dataset_replacing`] to replace it.
    ///
    /// # Errors
    /// [`ComputeError::Refused`] when the name is taken or the scheduler does not know a key.
    pub fn publish_dataset<T>(&self, name: &str, futures: &[Future<T>]) -> Result<(), ComputeError> {
        self.publish(name, futures, false)
    }

    /// Like [`Client::publish_dataset`], replacing a dataset already published under `name`
    /// (Dask's `override=True`).
    ///
    /// # Errors
    /// [`ComputeError::Refused`] when the scheduler does not know a key.
    pub fn publish_dataset_replacing<T>(&self, name: &str, futures: &[Future<T>]) -> Result<(), ComputeError> {
        self.publish(name, futures, true)
    }

    fn publish<T>(&self, name: &str, futures: &[Future<T>], overwrite: bool) -> Result<(), ComputeError> {
        let keys: Vec<Key> = futures.iter().map(|f| f.key.clone()).collect();
        self.send(ClientToScheduler::Publish { name: name.to_string(), keys, overwrite });
        // The scheduler answers refusals only; a round trip tells us none came.
        self.list_datasets()?;
        match self.take_refusals().pop() {
            Some(message) => Err(ComputeError::Refused(message)),
            None => Ok(()),
        }
    }

    /// Futures to a dataset another client published.
    ///
    /// # Errors
    /// No dataset of that name.
    pub fn get_dataset<T>(&self, name: &str) -> Result<Vec<Future<T>>, ComputeError> {
        let reply = self.ask(|request| ClientToScheduler::GetDataset { request, name: name.to_string() })?;
        match reply {
            SchedulerToClient::Dataset { keys: Some(keys), .. } => {
                self.retain(&keys);
                self.send(ClientToScheduler::Want { keys: keys.clone() });
                Ok(keys.into_iter().map(|k| Future::adopt(self, k)).collect())
            }
            _ => Err(ComputeError::NotFound(format!("dataset {name:?}"))),
        }
    }

    /// Removes a published name.
    pub fn unpublish_dataset(&self, name: &str) {
        self.send(ClientToScheduler::Unpublish { name: name.to_string() });
    }

    /// The names of published datasets.
    ///
    /// # Errors
    /// A lost connection.
    pub fn list_datasets(&self) -> Result<Vec<String>, ComputeError> {
        match self.ask(|request| ClientToScheduler::ListDatasets { request })? {
            SchedulerToClient::Datasets { names, .. } => Ok(names),
            other => Err(ComputeError::Internal(format!("unexpected answer {other:?}"))),
        }
    }
}

/// The references a persisted collection holds on its remote results.
struct PersistedKeys(#[allow(dead_code)] Vec<Future<()>>);

/// Futures in completion order; see [`Client::as_completed`].
pub struct AsCompleted<T> {
    client: Client,
    pending: Vec<Future<T>>,
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Future<T>;

    fn next(&mut self) -> Option<Future<T>> {
        if self.pending.is_empty() {
            return None;
        }
        let keys: HashSet<Key> = self.pending.iter().map(|f| f.key.clone()).collect();
        let done = self.client.wait_any(&keys).ok()?;
        let position = self.pending.iter().position(|f| done.contains(&f.key))?;
        Some(self.pending.swap_remove(position))
    }
}
