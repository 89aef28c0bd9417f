//! `map_partitions`: a user function applied to every partition (Dask's `map_partitions`).
//!
//! The graph names the function by an id, not by code, so a partition can be mapped on any
//! process that registered the same function under the same id: the client program when it
//! builds the frame, and every worker program before it serves (as `delayed`'s and bags'
//! portable functions do).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::error::{DataFrameError, Result};
use crate::frame::DataFrame;
use crate::lower::SerdeSchema;
use crate::plan::Step;

/// A function from one partition to another; its error message is reported with the
/// partition's task.
pub type PartitionFn = Arc<dyn Fn(&RecordBatch) -> std::result::Result<RecordBatch, String> + Send + Sync>;

fn registry() -> &'static RwLock<HashMap<String, PartitionFn>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, PartitionFn>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Registers `f` under `id` in this process, so frames mapped with `id` run here. A worker
/// program calls it (before serving) for every function its clients map; registering an id
/// again replaces the function.
pub fn register_map_partitions<F>(id: &str, f: F)
where
    F: Fn(&RecordBatch) -> std::result::Result<RecordBatch, String> + Send + Sync + 'static,
{
    registry().write().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), Arc::new(f));
}

/// Maps one partition with the function registered under `id`, checking that the result has
/// the declared columns and types.
pub(crate) fn apply(id: &str, meta: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let f = registry().read().unwrap_or_else(|p| p.into_inner()).get(id).cloned().ok_or_else(|| {
        DataFrameError::InvalidArgument(format!(
            "map_partitions: no function is registered under id {id:?} in this process; register it with \
             kiln_dataframe::register_map_partitions in every worker program before it serves"
        ))
    })?;
    let out =
        f(batch).map_err(|message| DataFrameError::InvalidArgument(format!("map_partitions {id:?}: {message}")))?;
    let got: Vec<_> = out.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    let want: Vec<_> = meta.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    if got != want {
        return Err(DataFrameError::InvalidArgument(format!(
            "map_partitions {id:?} returned columns {got:?}, not the declared {want:?}"
        )));
    }
    // Same names and types; the declared nullability is what the frame promises.
    RecordBatch::try_new(meta.clone(), out.columns().to_vec())
        .map_err(|e| DataFrameError::InvalidArgument(format!("map_partitions {id:?}: {e}")))
}

impl DataFrame {
    /// Applies `f` to every partition (Dask's `map_partitions`), where `meta` is the schema
    /// `f` returns (Dask's `meta=`): a partition whose result differs is an error naming `id`.
    /// `f` is registered under `id` in this process; worker programs register it too with
    /// [`register_map_partitions`]. As in Dask, the divisions stay when the index column is
    /// still there: `f` is trusted to keep each row's index value in its partition.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kiln_dataframe::DataFrame;
    /// use kiln_dataframe::arrow::array::{Float64Array, RecordBatch};
    /// use kiln_dataframe::arrow::datatypes::{DataType, Field, Schema};
    /// use kiln_graph::Collection;
    /// let batch = RecordBatch::try_from_iter([("x", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as _)]).unwrap();
    /// let meta = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true), Field::new("twice", DataType::Float64, true)]));
    /// let out = meta.clone();
    /// let doubled = DataFrame::from_batch(batch, 2).unwrap().map_partitions("doc.twice", meta, move |b: &RecordBatch| {
    ///     let x = b.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
    ///     let twice: Float64Array = x.iter().map(|v| v.map(|v| v * 2.0)).collect();
    ///     RecordBatch::try_new(out.clone(), vec![b.column(0).clone(), Arc::new(twice)]).map_err(|e| e.to_string())
    /// }).unwrap();
    /// let result = doubled.compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// assert_eq!(result.column(1).as_any().downcast_ref::<Float64Array>().unwrap().values().to_vec(), vec![2.0, 4.0, 6.0]);
    /// ```
    ///
    /// # Errors
    /// An empty `id`.
    pub fn map_partitions<F>(&self, id: &str, meta: SchemaRef, f: F) -> Result<DataFrame>
    where
        F: Fn(&RecordBatch) -> std::result::Result<RecordBatch, String> + Send + Sync + 'static,
    {
        if id.is_empty() {
            return Err(DataFrameError::InvalidArgument("map_partitions needs a non-empty id".into()));
        }
        register_map_partitions(id, f);
        Ok(self.with_step(Step::Map { id: id.to_string(), meta: SerdeSchema(meta.clone()) }, meta))
    }
}

/// Checks that a partition computed by another collection has the frame's columns and types,
/// and gives it the frame's schema.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CheckSchemaKernel {
    schema: SerdeSchema,
    partition: u32,
}

impl kiln_graph::kernel::PortableKernel for CheckSchemaKernel {
    const ID: &'static str = "kiln.dataframe.check-schema";
    fn name(&self) -> &str {
        "from-delayed"
    }
    fn call(&self, inputs: &[kiln_graph::Value]) -> std::result::Result<kiln_graph::Value, kiln_graph::TaskError> {
        let batch = kiln_graph::kernel::input::<RecordBatch>(inputs, 0)?;
        let got: Vec<_> = batch.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        let want: Vec<_> = self.schema.0.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        if got != want {
            return Err(kiln_graph::TaskError::Failed(format!(
                "from_delayed: partition {} has columns {got:?}, not the declared {want:?}",
                self.partition
            )));
        }
        RecordBatch::try_new(self.schema.0.clone(), batch.columns().to_vec())
            .map(kiln_graph::Value::new)
            .map_err(|e| kiln_graph::TaskError::Failed(format!("from_delayed: partition {}: {e}", self.partition)))
    }
}

/// Partitions each computed by a collection whose value is a `RecordBatch` (a `Delayed`).
struct CollectionPartitions<C> {
    parts: Vec<C>,
    schema: SchemaRef,
    token: u128,
}

impl<C: kiln_graph::Collection<Output = RecordBatch> + Send + Sync> crate::plan::ExternalPartitions
    for CollectionPartitions<C>
{
    fn npartitions(&self) -> usize {
        self.parts.len()
    }

    fn add_to(
        &self,
        builder: &mut kiln_graph::GraphBuilder,
    ) -> std::result::Result<Vec<kiln_graph::TaskId>, kiln_graph::GraphError> {
        crate::ensure_registered();
        let name: Arc<str> = format!("from-delayed-{:032x}", self.token).into();
        let mut out = Vec::with_capacity(self.parts.len());
        for (i, part) in self.parts.iter().enumerate() {
            let tasks = part.add_to(builder)?;
            let [task] = tasks.as_slice() else {
                return Err(kiln_graph::GraphError::invalid(
                    "dataframe",
                    DataFrameError::InvalidArgument(format!(
                        "from_delayed: partition {i} is a collection of {} outputs, not one batch",
                        tasks.len()
                    )),
                ));
            };
            let check = CheckSchemaKernel { schema: SerdeSchema(self.schema.clone()), partition: i as u32 };
            out.push(builder.add(
                kiln_graph::Key::from_shared(&name, &[i as u32]),
                Arc::new(kiln_graph::kernel::Portable(check)),
                vec![kiln_graph::Arg::Task(*task)],
            )?);
        }
        Ok(out)
    }

    fn label(&self) -> (&'static str, &'static str) {
        ("from-delayed", "from_delayed")
    }
}

impl DataFrame {
    /// A frame with one partition per collection in `parts`, each computing a `RecordBatch`
    /// with `meta`'s columns and types (Dask's `from_delayed(dfs, meta=...)`): usually
    /// `Delayed<RecordBatch>` values from `kiln-delayed`, so ordinary code that loads a piece
    /// of data becomes a partition. Nothing is computed here; a partition whose batch has
    /// other columns fails its task, naming it.
    ///
    /// # Errors
    /// No partitions.
    pub fn from_delayed<C>(parts: Vec<C>, meta: SchemaRef) -> Result<DataFrame>
    where
        C: kiln_graph::Collection<Output = RecordBatch> + Send + Sync + 'static,
    {
        if parts.is_empty() {
            return Err(DataFrameError::InvalidArgument("from_delayed needs at least one partition".into()));
        }
        let parts = CollectionPartitions { parts, schema: meta.clone(), token: kiln_graph::unique_token() };
        Ok(DataFrame::from_source(crate::plan::Source::External { parts: Arc::new(parts), schema: meta }))
    }
}

/// The number of rows of every partition, as a collection (Dask's
/// `df.map_partitions(len).compute()`): what an array made of the partitions needs to know
/// its chunks. Only one column is read.
#[derive(Clone)]
pub struct PartitionLengths {
    frame: DataFrame,
}

impl DataFrame {
    /// The number of rows of each partition, computed ([`PartitionLengths`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kiln_dataframe::DataFrame;
    /// use kiln_dataframe::arrow::array::{Int64Array, RecordBatch};
    /// use kiln_graph::Collection;
    /// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from_iter_values(0..10)) as _)]).unwrap();
    /// let df = DataFrame::from_batch(batch, 3).unwrap();
    /// let even = df.filter(&(&df.col("x") % 2i64).eq(0i64)).unwrap();
    /// assert_eq!(even.partition_lengths().compute_on(&kiln_local::LocalScheduler::new()).unwrap(), vec![2, 1, 2]);
    /// ```
    pub fn partition_lengths(&self) -> PartitionLengths {
        PartitionLengths { frame: self.clone() }
    }
}

impl kiln_graph::Collection for PartitionLengths {
    type Output = Vec<u64>;

    fn add_to(
        &self,
        builder: &mut kiln_graph::GraphBuilder,
    ) -> std::result::Result<Vec<kiln_graph::TaskId>, kiln_graph::GraphError> {
        let needed = self.frame.columns().into_iter().take(1).collect();
        crate::lower::lower_frame(&self.frame.frame, Some(needed), &|_| crate::lower::Terminal::Length, builder)
    }

    fn output_count(&self) -> usize {
        self.frame.npartitions()
    }

    fn assemble(
        &self,
        graph: &kiln_graph::Graph,
        outputs: &[kiln_graph::TaskId],
        values: Vec<kiln_graph::Value>,
    ) -> std::result::Result<Vec<u64>, kiln_graph::ComputeError> {
        outputs
            .iter()
            .zip(values)
            .map(|(id, v)| {
                v.downcast_ref::<u64>().copied().map_err(|m| kiln_graph::ComputeError::ResultType {
                    key: graph.key(*id).clone(),
                    expected: m.expected,
                    found: m.found,
                })
            })
            .collect()
    }
}
