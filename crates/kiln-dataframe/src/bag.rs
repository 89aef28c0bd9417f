//! Bags to frames (Dask's `Bag.to_dataframe`), behind the `bag` feature: each partition of
//! records becomes one Arrow record batch, through arrow-json's serde decoder (already part of
//! arrow, so no second conversion library). The schema is given, or for JSON records
//! (`serde_json::Value`, [`kiln_bag::Json`]) inferred from the first records, as Dask takes
//! `meta` from the first partition.
//!
//! On a cluster, each partition's conversion is the kernel `kiln.dataframe.from-bag/{tag}`
//! (the schema in its parameters, as Arrow IPC bytes) for element types registered with
//! [`register_bag_record`] under `tag`; `serde_json::Value` (`json`) and [`Json`]
//! (`json-text`) are registered by [`crate::ensure_registered`]. A frame made from a bag of
//! any other type runs on the local scheduler, and a cluster client refuses it before sending
//! anything, naming the type and [`register_bag_record`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::ReaderBuilder;
use kiln_bag::{Bag, Element, Json};
use kiln_graph::kernel::input;
use kiln_graph::{
    Arg, Collection, GraphBuilder, GraphError, Kernel, KernelRegistry, KernelSpec, Key, Scheduler, TaskError, TaskId,
    Value,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DataFrameError, Result};
use crate::frame::DataFrame;
use crate::io::plain_schema;
use crate::lower::SerdeSchema;
use crate::plan::{ExternalPartitions, Source};

/// How many records [`DataFrame::from_json_bag`] infers the schema from when not told.
pub const DEFAULT_INFER_SAMPLE: usize = 1000;

/// Converts one partition of records to a batch of `schema` (every field taken as nullable:
/// a missing key or `None` is a null; keys not in the schema are ignored).
///
/// # Errors
/// [`DataFrameError::Records`] naming the field when a record does not fit the schema (a
/// string where a number is expected, a number out of the column's range).
pub fn records_to_batch<T: Serialize + Any>(records: &[T], schema: &SchemaRef) -> Result<RecordBatch> {
    let schema = plain_schema(schema);
    let fail = |e: arrow::error::ArrowError| DataFrameError::Records { message: e.to_string() };
    let mut decoder =
        ReaderBuilder::new(schema.clone()).with_batch_size(records.len().max(1)).build_decoder().map_err(fail)?;
    // Records that are JSON text already are parsed straight into the batch; serializing them
    // would build a `serde_json::Value` per record first.
    if TypeId::of::<T>() == TypeId::of::<Json>() {
        let mut text = String::new();
        for record in records {
            if let Some(json) = (record as &dyn Any).downcast_ref::<Json>() {
                text.push_str(json.as_raw());
                text.push('\n');
            }
        }
        // The batch holds every record, so one call reads them all.
        let read = decoder.decode(text.as_bytes()).map_err(fail)?;
        if read != text.len() {
            return Err(DataFrameError::Records { message: format!("read {read} of {} bytes of records", text.len()) });
        }
    } else {
        decoder.serialize(records).map_err(fail)?;
    }
    Ok(decoder.flush().map_err(fail)?.unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

/// Records whose schema can be inferred: JSON values.
pub trait JsonRecord: Element + Serialize {
    /// The record as a `serde_json::Value`, for inference.
    ///
    /// # Errors
    /// The parser's message when the record is not valid JSON.
    fn to_json_value(&self) -> std::result::Result<serde_json::Value, String>;
}

impl JsonRecord for serde_json::Value {
    fn to_json_value(&self) -> std::result::Result<serde_json::Value, String> {
        Ok(self.clone())
    }
}

impl JsonRecord for Json {
    fn to_json_value(&self) -> std::result::Result<serde_json::Value, String> {
        self.to_value().map_err(|e| e.to_string())
    }
}

/// The tags of the record types other processes can convert, by type.
fn record_tags() -> &'static RwLock<HashMap<TypeId, Arc<str>>> {
    static TAGS: OnceLock<RwLock<HashMap<TypeId, Arc<str>>>> = OnceLock::new();
    TAGS.get_or_init(Default::default)
}

/// The id of the conversion kernel for records registered under `tag`.
fn kernel_id(tag: &str) -> String {
    format!("kiln.dataframe.from-bag/{tag}")
}

/// Registers the conversion kernel of `T` under `tag` (the element's bag tag).
fn register_converter<T: Element + Serialize>(tag: &str) {
    let tag: Arc<str> = tag.into();
    record_tags().write().unwrap_or_else(|p| p.into_inner()).insert(TypeId::of::<T>(), Arc::clone(&tag));
    let id = kernel_id(&tag);
    KernelRegistry::global().register_factory(&id.clone(), move |params| {
        let schema: SerdeSchema = postcard::from_bytes(params).map_err(|e| format!("{id}: the schema: {e}"))?;
        Ok(Arc::new(ToBatch::<T>::new(schema.0)) as Arc<dyn Kernel>)
    });
}

/// Makes frames of bags of `T` computable on a cluster (Dask's `Bag.to_dataframe` on
/// distributed workers): registers `T` as a bag element under `tag` (as
/// [`kiln_bag::portable::register_element`] does; unique in the program, e.g. `"myapp.Trip"`)
/// and the kernel that converts its partitions to batches. Call it in the client and in every
/// worker program (before `run_worker_if_requested`); registering again is harmless.
/// `serde_json::Value` and [`Json`] records need no registration.
pub fn register_bag_record<T: Element + Serialize + DeserializeOwned>(tag: &str) {
    crate::ensure_registered();
    kiln_bag::portable::register_element::<T>(tag);
    register_converter::<T>(tag);
}

/// The JSON record types, under the tags kiln-bag gives them.
pub(crate) fn register_builtin_records() {
    kiln_bag::portable::ensure_registered();
    register_converter::<serde_json::Value>("json");
    register_converter::<Json>("json-text");
}

/// Converts one partition of records to a batch of `schema`.
struct ToBatch<T> {
    schema: SchemaRef,
    spec: Option<KernelSpec>,
    _t: PhantomData<fn(&T)>,
}

impl<T: Element + Serialize> ToBatch<T> {
    fn new(schema: SchemaRef) -> ToBatch<T> {
        let tag = record_tags().read().unwrap_or_else(|p| p.into_inner()).get(&TypeId::of::<T>()).cloned();
        let spec = tag.and_then(|tag| {
            let params = postcard::to_allocvec(&SerdeSchema(schema.clone())).ok();
            params.map(|params| KernelSpec { id: kernel_id(&tag), params })
        });
        ToBatch { schema, spec, _t: PhantomData }
    }
}

impl<T: Element + Serialize> Kernel for ToBatch<T> {
    fn name(&self) -> &str {
        "from_bag"
    }

    fn portable_hint(&self) -> Option<String> {
        // The remedy is registering the record type, not naming a function.
        Some(format!(
            "{0} is a record type not registered for clusters: call register_bag_record::<{0}>(tag) \
             (kiln::bag, kiln_dataframe::bag) in the client and in every worker program (before \
             run_worker_if_requested)",
            std::any::type_name::<T>()
        ))
    }

    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let records = input::<Vec<T>>(inputs, 0)?;
        records_to_batch(records, &self.schema).map(Value::new).map_err(|e| TaskError::Failed(e.to_string()))
    }

    fn spec(&self) -> Option<KernelSpec> {
        self.spec.clone()
    }
}

/// A bag's partitions, each converted to a batch by one task.
struct BagPartitions<T: Element> {
    bag: Bag<T>,
    schema: SchemaRef,
    token: u128,
}

impl<T: Element + Serialize> ExternalPartitions for BagPartitions<T> {
    fn npartitions(&self) -> usize {
        self.bag.npartitions()
    }

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        crate::ensure_registered();
        let parts = self.bag.add_to(builder)?;
        let name: Arc<str> = format!("from-bag-{:032x}", self.token).into();
        let convert: Arc<dyn Kernel> = Arc::new(ToBatch::<T>::new(self.schema.clone()));
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| builder.add(Key::from_shared(&name, &[i as u32]), convert.clone(), vec![Arg::Task(part)]))
            .collect()
    }
}

impl DataFrame {
    /// A frame with one partition per partition of `bag`, each record a row of `schema`
    /// (Dask's `Bag.to_dataframe(meta)`). Struct fields map to columns by name; a missing key
    /// or `None` is a null, keys not in the schema are ignored. Nothing is computed here.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use kiln_bag::Bag;
    /// use kiln_dataframe::DataFrame;
    /// use kiln_graph::Collection;
    ///
    /// #[derive(Clone, serde::Serialize)]
    /// struct Trip { id: i64, miles: f64 }
    /// let bag = Bag::from_sequence((0..4).map(|id| Trip { id, miles: id as f64 / 2.0 }), 2);
    /// let schema = Arc::new(Schema::new(vec![
    ///     Field::new("id", DataType::Int64, true),
    ///     Field::new("miles", DataType::Float64, true),
    /// ]));
    /// let df = DataFrame::from_bag(&bag, schema);
    /// assert_eq!(df.npartitions(), 2);
    /// let out = df.compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// assert_eq!(out.num_rows(), 4);
    /// ```
    ///
    /// A record that does not fit fails its partition's task with
    /// [`DataFrameError::Records`], naming the field.
    pub fn from_bag<T: Element + Serialize>(bag: &Bag<T>, schema: SchemaRef) -> DataFrame {
        let schema = plain_schema(&schema);
        let parts = BagPartitions { bag: bag.clone(), schema: schema.clone(), token: kiln_graph::unique_token() };
        DataFrame::from_source(Source::External { parts: Arc::new(parts), schema })
    }

    /// [`DataFrame::from_bag`] for JSON records, the schema inferred from the first `sample`
    /// records (computed now, on `scheduler`: the first partition, and the next ones only if
    /// it holds fewer), as Dask takes `meta` from the first partition. Integers become
    /// `Int64`, numbers with a fraction `Float64`, a key seen with both `Float64`, strings
    /// `Utf8`; nested objects and lists become struct and list columns.
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] for `sample == 0` or a bag with no records;
    /// [`DataFrameError::Records`] when the sample's records are not objects or give one key
    /// incompatible types; [`DataFrameError::Compute`] when computing the sample fails.
    pub fn from_json_bag<T: JsonRecord>(bag: &Bag<T>, sample: usize, scheduler: &dyn Scheduler) -> Result<DataFrame> {
        if sample == 0 {
            return Err(DataFrameError::InvalidArgument("from_json_bag: the sample needs at least one record".into()));
        }
        let records =
            bag.take(sample, scheduler).map_err(|e| DataFrameError::compute("from_json_bag: the sample", e))?;
        if records.is_empty() {
            return Err(DataFrameError::InvalidArgument(
                "from_json_bag: the bag has no records to infer a schema from; give one to from_bag".into(),
            ));
        }
        let values = records
            .iter()
            .map(|r| r.to_json_value().map_err(|m| DataFrameError::Records { message: m }))
            .collect::<Result<Vec<_>>>()?;
        let schema = arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
            .map_err(|e| DataFrameError::Records { message: format!("inferring the schema: {e}") })?;
        Ok(DataFrame::from_bag(bag, Arc::new(schema)))
    }
}

/// `bag.to_dataframe(schema)` (Dask's `Bag.to_dataframe`), for bags of any serializable
/// records; the facade `kiln` puts it in its prelude.
pub trait ToDataFrame {
    /// [`DataFrame::from_bag`] of this bag.
    fn to_dataframe(&self, schema: SchemaRef) -> DataFrame;
}

impl<T: Element + Serialize> ToDataFrame for Bag<T> {
    fn to_dataframe(&self, schema: SchemaRef) -> DataFrame {
        DataFrame::from_bag(self, schema)
    }
}

/// `bag.to_dataframe_inferred(sample, scheduler)` for bags of JSON records: the schema
/// inferred from the first `sample` records.
pub trait JsonToDataFrame {
    /// [`DataFrame::from_json_bag`] of this bag.
    ///
    /// # Errors
    /// As [`DataFrame::from_json_bag`].
    fn to_dataframe_inferred(&self, sample: usize, scheduler: &dyn Scheduler) -> Result<DataFrame>;
}

impl<T: JsonRecord> JsonToDataFrame for Bag<T> {
    fn to_dataframe_inferred(&self, sample: usize, scheduler: &dyn Scheduler) -> Result<DataFrame> {
        DataFrame::from_json_bag(self, sample, scheduler)
    }
}
