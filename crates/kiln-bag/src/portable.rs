//! Bags on clusters: what lets another process rebuild a bag's tasks and move its partitions.
//!
//! A bag's task runs a fused pipeline of steps (kernel `kiln.bag.pipeline`, whose parameters
//! are the steps' [`StepSpec`]s), or a reduction's combine, or a file read. Each step and kernel
//! is found again by id in the process that runs it:
//!
//! - **Element types** are registered once per process with [`register_element`] (and
//!   [`register_hashable`], [`register_numeric`], [`register_text`] for the operations that
//!   need more of the type): that gives partitions a codec (MessagePack through `rmp-serde`,
//!   self-describing, so `serde_json::Value` and `#[serde(untagged)]` types travel too) and
//!   registers the built-in steps for that type (`count`, `frequencies`, `sum`, ...). The
//!   common types (`String`, `serde_json::Value`, the integers and floats, `bool`) are
//!   registered by [`ensure_registered`], which `kiln::register_builtins` (and so `kiln
//!   worker`) calls.
//! - **User functions** are local closures until given an id: `bag.map(parse).portable("app.parse")`
//!   on the client, and `register_map("app.parse", parse)` in every process that runs it (a
//!   worker started from the user's binary with `run_worker_if_requested`, after the
//!   registrations). The client refuses a bag with a local function before sending anything,
//!   naming the function.
//!
//! Partition sizes (what the schedulers weigh and spill by) are estimated from an encoded
//! sample of at most 16 elements: the elements' inline size plus their average encoded size.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Arc, Once, OnceLock, RwLock};

use kiln_graph::codec::{CodecError, SerdeCodec, ValueCodec};
use kiln_graph::shuffle::SplitStage;
use kiln_graph::{CodecRegistry, Encoded, Kernel, KernelRegistry, KernelSpec, TaskError, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::groupby::{KeyFn, Pieces};
use crate::pipeline::{self, PIPELINE_KERNEL_ID, PipelineKernel, Step};
use crate::reduce::{self, Moments, MomentsOf, Numeric, OrderedMap, Reduction, ReductionId};
use crate::stream::{ChunkSource, STREAM_KERNEL_ID, StreamKernel, StreamSpec};
use crate::{Element, steps, text};

/// A step as plain data: a registered id and postcard parameters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepSpec {
    /// The id the step's factory is registered under, e.g. `kiln.bag.map/app.parse`.
    pub id: String,
    /// Its parameters, postcard-encoded.
    pub params: Vec<u8>,
}

type StepFactory = Arc<dyn Fn(&[u8]) -> Result<Arc<dyn Step>, String> + Send + Sync>;

fn step_registry() -> &'static RwLock<HashMap<String, StepFactory>> {
    static STEPS: OnceLock<RwLock<HashMap<String, StepFactory>>> = OnceLock::new();
    STEPS.get_or_init(Default::default)
}

fn register_step(id: String, factory: impl Fn(&[u8]) -> Result<Arc<dyn Step>, String> + Send + Sync + 'static) {
    step_registry().write().unwrap_or_else(|p| p.into_inner()).insert(id, Arc::new(factory));
}

/// Rebuilds a step from its spec.
fn resolve_step(spec: &StepSpec) -> Result<Arc<dyn Step>, String> {
    let factory =
        step_registry().read().unwrap_or_else(|p| p.into_inner()).get(&spec.id).cloned().ok_or_else(|| {
            format!(
                "bag step {:?} is not registered in this process: register user functions with \
             kiln_bag::portable::register_map (or register_filter, ...) and element types with \
             kiln_bag::portable::register_element in the worker program, before run_worker_if_requested",
                spec.id
            )
        })?;
    let step = factory(&spec.params)?;
    Ok(pipeline::with_spec(step, Some(spec.clone())))
}

type SourceFactory = Arc<dyn Fn(&[u8]) -> Result<Arc<dyn ChunkSource>, String> + Send + Sync>;

fn source_registry() -> &'static RwLock<HashMap<String, SourceFactory>> {
    static SOURCES: OnceLock<RwLock<HashMap<String, SourceFactory>>> = OnceLock::new();
    SOURCES.get_or_init(Default::default)
}

/// Registers how to rebuild a chunked file source (fused `kiln.bag.stream` tasks) from its
/// spec; the id is the one of the kernel reading the same partition whole.
pub(crate) fn register_source(
    id: String,
    factory: impl Fn(&[u8]) -> Result<Arc<dyn ChunkSource>, String> + Send + Sync + 'static,
) {
    source_registry().write().unwrap_or_else(|p| p.into_inner()).insert(id, Arc::new(factory));
}

fn resolve_source(spec: &StepSpec) -> Result<Arc<dyn ChunkSource>, String> {
    let factory =
        source_registry().read().unwrap_or_else(|p| p.into_inner()).get(&spec.id).cloned().ok_or_else(|| {
            format!(
                "bag file source {:?} is not registered in this process: register the element type with \
                 kiln_bag::portable::register_element in the worker program",
                spec.id
            )
        })?;
    factory(&spec.params)
}

fn tags() -> &'static RwLock<HashMap<TypeId, Arc<str>>> {
    static TAGS: OnceLock<RwLock<HashMap<TypeId, Arc<str>>>> = OnceLock::new();
    TAGS.get_or_init(Default::default)
}

/// The tag `T` was registered under, if any.
pub(crate) fn tag_of<T: 'static>() -> Option<Arc<str>> {
    ensure_registered();
    tags().read().unwrap_or_else(|p| p.into_inner()).get(&TypeId::of::<T>()).cloned()
}

/// The bytes a list of elements takes, estimated from an encoded sample of at most 16 of them
/// (spread over the list): per element, its inline size plus the sample's mean encoded size.
pub fn estimated_nbytes<T: Serialize>(items: &[T]) -> usize {
    const SAMPLE: usize = 16;
    let n = items.len();
    if n == 0 {
        return std::mem::size_of::<Vec<T>>();
    }
    let stride = n.div_ceil(SAMPLE);
    let mut buffer = Vec::new();
    let (mut sampled, mut encoded) = (0usize, 0usize);
    for item in items.iter().step_by(stride) {
        buffer.clear();
        if rmp_serde::encode::write_named(&mut buffer, item).is_ok() {
            encoded += buffer.len();
            sampled += 1;
        }
    }
    let mean = if sampled == 0 { 0 } else { encoded.div_ceil(sampled) };
    std::mem::size_of::<Vec<T>>() + n * (std::mem::size_of::<T>() + mean)
}

/// A codec for any serde value: one MessagePack frame (structs as maps, so skipped fields and
/// self-describing types such as `serde_json::Value` round-trip).
struct MsgpackCodec<V, W> {
    tag: String,
    to_wire: fn(&V) -> &W,
    from_wire: fn(W) -> V,
    size: Option<fn(&V) -> usize>,
    _v: PhantomData<fn() -> (V, W)>,
}

impl<V, W> ValueCodec for MsgpackCodec<V, W>
where
    V: Send + Sync + 'static,
    W: Serialize + DeserializeOwned + 'static,
{
    fn tag(&self) -> &str {
        &self.tag
    }
    fn value_type(&self) -> TypeId {
        TypeId::of::<V>()
    }
    fn encode(&self, value: &Value) -> Result<Encoded, CodecError> {
        let v = value.downcast_ref::<V>().map_err(|_| CodecError::NoCodecForType(value.type_name()))?;
        let frame = rmp_serde::to_vec_named((self.to_wire)(v))
            .map_err(|e| CodecError::Malformed { tag: self.tag.clone(), message: e.to_string() })?;
        Ok(Encoded { tag: self.tag.clone(), header: Vec::new(), frames: vec![frame.into()] })
    }
    fn decode(&self, encoded: &Encoded) -> Result<Value, CodecError> {
        let malformed = |message: String| CodecError::Malformed { tag: self.tag.clone(), message };
        let [frame] = encoded.frames.as_slice() else {
            return Err(malformed(format!("expected 1 frame, got {}", encoded.frames.len())));
        };
        let wire: W = rmp_serde::from_slice(frame).map_err(|e| malformed(e.to_string()))?;
        Ok(Value::new((self.from_wire)(wire)))
    }
    fn nbytes(&self, value: &Value) -> Option<usize> {
        let size = self.size?;
        value.downcast_ref::<V>().ok().map(size)
    }
}

fn codec<V: Serialize + DeserializeOwned + Send + Sync + 'static>(tag: String, size: Option<fn(&V) -> usize>) {
    CodecRegistry::global().register(MsgpackCodec::<V, V> {
        tag,
        to_wire: |v| v,
        from_wire: |v| v,
        size,
        _v: PhantomData,
    });
}

/// Registers a reduction under `id` (`{id}.partial` step, `{id}.combine` and `{id}.final`
/// kernels); `make` builds it from the parameters.
fn register_tree<T, R, S>(
    id: String,
    make: impl Fn(&[u8]) -> Result<Reduction<T, R, S>, String> + Send + Sync + 'static,
) where
    T: Element,
    R: Element,
    S: Element,
{
    let make = Arc::new(make);
    {
        let (make, id) = (Arc::clone(&make), id.clone());
        register_step(format!("{id}.partial"), move |params| {
            Ok(make(params)?.partial_step(Some(&ReductionId { id: id.clone(), params: params.to_vec() })))
        });
    }
    for last in [false, true] {
        let (make, base) = (Arc::clone(&make), id.clone());
        let kernel_id = format!("{id}.{}", if last { "final" } else { "combine" });
        KernelRegistry::global().register_factory(&kernel_id, move |params| {
            Ok(make(params)?.combine_kernel(last, Some(&ReductionId { id: base.clone(), params: params.to_vec() })))
        });
    }
}

/// Whether `T` is a primitive number, whose `Vec` kiln-graph encodes as raw frames.
fn is_number<T: 'static>() -> bool {
    [
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
    ]
    .contains(&TypeId::of::<T>())
}

/// Makes `T` a bag element type other processes know under `tag` (unique in the program, e.g.
/// `"myapp.Event"`): partitions of `T` get a codec (MessagePack; vectors of numbers keep their raw codec) whose size estimate reads a
/// sample, and the built-in steps that need nothing more of `T` (`count`, `flatten`, typed
/// `read_json_lines`, `random_sample`, ...) become portable for it. Call it in the client and
/// in every worker program; registering again is harmless.
pub fn register_element<T: Element + Serialize + DeserializeOwned>(tag: &str) {
    let tag: Arc<str> = tag.into();
    tags().write().unwrap_or_else(|p| p.into_inner()).insert(TypeId::of::<T>(), Arc::clone(&tag));
    // Vectors of numbers keep kiln-graph's codec (raw little-endian frames): faster, exact in
    // size, and shared with `delayed` values of the same type, whose sizes and wire format must
    // not change because bags were registered. Other vectors (strings, records) get MessagePack
    // with a sampled size.
    if !is_number::<T>() || CodecRegistry::global().codec_for(TypeId::of::<Vec<T>>()).is_none() {
        codec::<Vec<T>>(format!("kiln.bag.vec<{tag}>"), Some(|v: &Vec<T>| estimated_nbytes(v)));
    }
    if CodecRegistry::global().codec_for(TypeId::of::<T>()).is_none() {
        codec::<T>(format!("kiln.bag.{tag}"), None);
    }
    register_tree(format!("kiln.bag.count/{tag}"), |_| Ok(reduce::count_reduction::<T>()));
    register_step(format!("kiln.bag.flatten/{tag}"), |_| Ok(steps::flatten::<T>()));
    register_step(format!("kiln.bag.random_sample/{tag}"), |params| {
        let (fraction, seed): (f64, u64) = postcard::from_bytes(params).map_err(|e| e.to_string())?;
        Ok(steps::random_sample::<T>(fraction, seed))
    });
    {
        let tag = Arc::clone(&tag);
        KernelRegistry::global().register_factory(&format!("kiln.bag.concat/{tag}"), move |_| {
            Ok(crate::ops::concat_kernel::<T>(Some(&tag)))
        });
    }
    {
        let tag = Arc::clone(&tag);
        KernelRegistry::global().register_factory(&format!("kiln.bag.split/{tag}"), move |params| {
            let (piece, pieces): (u64, u64) = postcard::from_bytes(params).map_err(|e| e.to_string())?;
            if piece >= pieces {
                return Err(format!("piece {piece} of {pieces}"));
            }
            Ok(crate::ops::piece_kernel::<T>(piece as usize, pieces as usize, Some(&tag)))
        });
    }
    {
        let tag = Arc::clone(&tag);
        KernelRegistry::global().register_factory(&format!("kiln.bag.select/{tag}"), move |params| {
            let piece: u32 = postcard::from_bytes(params).map_err(|e| e.to_string())?;
            Ok(crate::groupby::select_kernel::<T>(piece, Some(&tag)))
        });
    }
    CodecRegistry::global().register(MsgpackCodec::<Pieces<T>, Vec<Vec<T>>> {
        tag: format!("kiln.bag.pieces<{tag}>"),
        to_wire: |p| &p.0,
        from_wire: Pieces,
        size: Some(|p| p.0.iter().map(|piece| estimated_nbytes(piece)).sum()),
        _v: PhantomData,
    });
    KernelRegistry::global().register_factory(&format!("kiln.bag.read_json_lines/{tag}"), {
        let tag = Arc::clone(&tag);
        move |params| text::json_lines_kernel::<T>(params, &tag)
    });
    register_source(format!("kiln.bag.read_json_lines/{tag}"), {
        let tag = Arc::clone(&tag);
        move |params| text::json_lines_source::<T>(params, &tag)
    });
}

/// [`register_element`], plus what needs `Eq + Hash`: `frequencies` (whose `(T, u64)` pairs
/// are registered as elements too) and `distinct`.
pub fn register_hashable<T: Element + Serialize + DeserializeOwned + Eq + Hash>(tag: &str) {
    register_element::<T>(tag);
    register_element::<(T, u64)>(&format!("({tag},u64)"));
    register_tree(format!("kiln.bag.frequencies/{tag}"), |_| Ok(reduce::frequencies_reduction::<T>()));
    register_tree(format!("kiln.bag.distinct/{tag}"), |_| Ok(reduce::distinct_reduction::<T>()));
    CodecRegistry::global().register(MsgpackCodec::<OrderedMap<T, u64>, Vec<(T, u64)>> {
        tag: format!("kiln.bag.counts<{tag}>"),
        to_wire: |m| &m.entries,
        from_wire: OrderedMap::from_entries,
        size: Some(|m| estimated_nbytes(&m.entries)),
        _v: PhantomData,
    });
    CodecRegistry::global().register(MsgpackCodec::<OrderedMap<T, ()>, Vec<(T, ())>> {
        tag: format!("kiln.bag.seen<{tag}>"),
        to_wire: |m| &m.entries,
        from_wire: OrderedMap::from_entries,
        size: Some(|m| estimated_nbytes(&m.entries)),
        _v: PhantomData,
    });
}

/// [`register_element`], plus `sum`, `min`, `max`, `mean`, `var` and `std`.
pub fn register_numeric<T: Numeric + Serialize + DeserializeOwned>(tag: &str) {
    register_element::<T>(tag);
    register_tree(format!("kiln.bag.sum/{tag}"), |_| Ok(reduce::sum_reduction::<T>()));
    register_tree(format!("kiln.bag.min/{tag}"), |_| Ok(reduce::extreme_reduction::<T>(false)));
    register_tree(format!("kiln.bag.max/{tag}"), |_| Ok(reduce::extreme_reduction::<T>(true)));
    register_tree(format!("kiln.bag.moments/{tag}"), |params| {
        let of: MomentsOf = postcard::from_bytes(params).map_err(|e| e.to_string())?;
        Ok(reduce::moments_reduction::<T>(of))
    });
    CodecRegistry::global().register(SerdeCodec::<Option<T>>::new(&format!("kiln.bag.option<{tag}>")));
}

/// [`register_element`], plus `to_textfiles` for `T` (one element per line, by `Display`).
pub fn register_text<T: Element + Serialize + DeserializeOwned + Display>(tag: &str) {
    register_element::<T>(tag);
    text::register_text_writer::<T>(tag);
}

/// Registers `f` as the function `.map(f).portable(id)` names, from `T` to `U` (both
/// registered element types).
pub fn register_map<T: Element, U: Element>(id: &str, f: impl Fn(&T) -> U + Send + Sync + 'static) {
    let f = Arc::new(f);
    register_step(format!("kiln.bag.map/{id}"), move |_| {
        let f = Arc::clone(&f);
        Ok(steps::map(move |x: &T| f(x)))
    });
}

/// Registers a fallible function for `.try_map(f).portable(id)`.
pub fn register_try_map<T: Element, U: Element, E: Display + 'static>(
    id: &str,
    f: impl Fn(&T) -> Result<U, E> + Send + Sync + 'static,
) {
    let f = Arc::new(f);
    register_step(format!("kiln.bag.try_map/{id}"), move |_| {
        let f = Arc::clone(&f);
        Ok(steps::try_map(move |x: &T| f(x)))
    });
}

/// Registers a predicate for `.filter(p).portable(id)` and `.remove(p).portable(id)`.
pub fn register_filter<T: Element>(id: &str, predicate: impl Fn(&T) -> bool + Send + Sync + 'static) {
    let predicate = Arc::new(predicate);
    for keep in [true, false] {
        let predicate = Arc::clone(&predicate);
        let kind = if keep { "filter" } else { "remove" };
        register_step(format!("kiln.bag.{kind}/{id}"), move |_| {
            let predicate = Arc::clone(&predicate);
            Ok(steps::filter(kind, move |x: &T| predicate(x) == keep))
        });
    }
}

/// Registers `f` for `.flat_map(f).portable(id)`.
pub fn register_flat_map<T: Element, U: Element, I: IntoIterator<Item = U> + 'static>(
    id: &str,
    f: impl Fn(&T) -> I + Send + Sync + 'static,
) {
    let f = Arc::new(f);
    register_step(format!("kiln.bag.flat_map/{id}"), move |_| {
        let f = Arc::clone(&f);
        Ok(steps::flat_map(move |x: &T| f(x)))
    });
}

/// Registers `f` for `.map_partitions(f).portable(id)`.
pub fn register_map_partitions<T: Element, U: Element>(id: &str, f: impl Fn(&[T]) -> Vec<U> + Send + Sync + 'static) {
    let f = Arc::new(f);
    register_step(format!("kiln.bag.map_partitions/{id}"), move |_| {
        let f = Arc::clone(&f);
        Ok(steps::map_partitions(move |x: &[T]| f(x)))
    });
}

/// Registers a key function for `.topk(k, key).portable(id)` (and `bottomk`, whose key is
/// reversed: register `|x| Reverse(key(x))` for it).
pub fn register_key<T: Element, K: Ord + 'static>(id: &str, key: impl Fn(&T) -> K + Send + Sync + 'static) {
    let key: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(key);
    register_tree(format!("kiln.bag.topk/{id}"), move |params| {
        let k: u64 = postcard::from_bytes(params).map_err(|e| e.to_string())?;
        Ok(reduce::topk_reduction(k as usize, Arc::clone(&key)))
    });
}

/// Registers a key function for `.groupby(key).portable(id)` (and `groupby_with`): the
/// shuffle's split and group steps for elements `T` (a registered element type) and keys `K`,
/// and the codec of the `(K, Vec<T>)` groups. Every process that runs the groupby registers the
/// same function under the same id.
pub fn register_group_key<T, K>(id: &str, key: impl Fn(&T) -> K + Send + Sync + 'static)
where
    T: Element + Serialize + DeserializeOwned,
    K: Element + Eq + Hash + Serialize + DeserializeOwned,
{
    let key: KeyFn<T, K> = Arc::new(key);
    {
        let (key, id) = (Arc::clone(&key), id.to_string());
        register_step(format!("kiln.bag.groupby_split/{id}"), move |params| {
            let stage: SplitStage = postcard::from_bytes(params).map_err(|e| e.to_string())?;
            if stage.base == 0 || stage.npartitions_out == 0 {
                return Err(format!("groupby split {stage:?} has no pieces or no output partitions"));
            }
            Ok(crate::groupby::split_step(Arc::clone(&key), stage, Some(&id)))
        });
    }
    {
        let id = id.to_string();
        register_step(format!("kiln.bag.groupby/{id}"), move |_| {
            Ok(crate::groupby::group_step(Arc::clone(&key), Some(&id)))
        });
    }
    register_element::<(K, Vec<T>)>(&format!("groupby/{id}"));
}

/// Registers `f` for `.starmap(f).portable(id)` on a bag of pairs `(A, B)`.
pub fn register_starmap<A: Element, B: Element, U: Element>(id: &str, f: impl Fn(&A, &B) -> U + Send + Sync + 'static) {
    let f = Arc::new(f);
    register_step(format!("kiln.bag.starmap/{id}"), move |_| {
        let f = Arc::clone(&f);
        Ok(steps::named_map("starmap", move |(a, b): &(A, B)| f(a, b)))
    });
}

/// Registers `f` for `.starmap(f).portable(id)` on a bag of triples `(A, B, C)`.
pub fn register_starmap3<A: Element, B: Element, C: Element, U: Element>(
    id: &str,
    f: impl Fn(&A, &B, &C) -> U + Send + Sync + 'static,
) {
    let f = Arc::new(f);
    register_step(format!("kiln.bag.starmap/{id}"), move |_| {
        let f = Arc::clone(&f);
        Ok(steps::named_map("starmap", move |(a, b, c): &(A, B, C)| f(a, b, c)))
    });
}

/// Registers the key functions of `.join(table, on_self, on_other).portable(id)`: the table
/// (a `Vec<O>`) travels with each partition's task and is indexed by `on_other` where the task
/// runs. Registers the table's elements `O` and the joined pairs `(O, T)` as element types
/// (under `join/{id}/table` and `join/{id}` when they have no tag yet), so both travel; `T`
/// must be a registered element type. Call it in the client and in every worker program.
pub fn register_join<T, O, K>(
    id: &str,
    on_self: impl Fn(&T) -> K + Send + Sync + 'static,
    on_other: impl Fn(&O) -> K + Send + Sync + 'static,
) where
    T: Element + Serialize + DeserializeOwned,
    O: Element + Serialize + DeserializeOwned,
    K: Eq + Hash + Send + Sync + 'static,
{
    register_element_if_new::<O>(&format!("join/{id}/table"));
    register_element_if_new::<(O, T)>(&format!("join/{id}"));
    let on_self: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(on_self);
    let on_other = Arc::new(on_other);
    register_step(format!("kiln.bag.join/{id}"), move |params| {
        let table: Vec<O> = decode_value(params)?;
        let index = crate::ops::join_index(&table, &*on_other);
        Ok(crate::ops::join_step(Arc::new(table), Arc::new(index), Arc::clone(&on_self)))
    });
}

/// Registers the functions of `.fold(binop, combine, initial)` for `.portable(id)` on its
/// result: `binop` folds a partition's elements of `T` into an `A`, `combine` folds the
/// partials. The `initial` value travels with the tasks, so `A` needs a codec: one is
/// registered here (MessagePack) unless `A` has one. Call it in the client and in every worker
/// program.
pub fn register_fold<T, A>(
    id: &str,
    binop: impl Fn(A, &T) -> A + Send + Sync + 'static,
    combine: impl Fn(A, &A) -> A + Send + Sync + 'static,
) where
    T: Element,
    A: Element + Serialize + DeserializeOwned,
{
    value_codec::<A>();
    let binop: reduce::Binop<A, T> = Arc::new(binop);
    let combine: reduce::Binop<A, A> = Arc::new(combine);
    register_tree(format!("kiln.bag.fold/{id}"), move |params| {
        let initial: A = decode_value(params)?;
        Ok(reduce::fold_reduction(Arc::clone(&binop), Arc::clone(&combine), initial))
    });
}

/// Registers the functions of `.reduction(per_partition, aggregate)` for `.portable(id)` on
/// its result; `R` gets a codec (MessagePack) unless it has one. Call it in the client and in
/// every worker program.
pub fn register_reduction<T, R>(
    id: &str,
    per_partition: impl Fn(&[T]) -> R + Send + Sync + 'static,
    aggregate: impl Fn(Vec<R>) -> R + Send + Sync + 'static,
) where
    T: Element,
    R: Element + Serialize + DeserializeOwned,
{
    value_codec::<R>();
    let per_partition: reduce::PerPartition<T, R> = Arc::new(per_partition);
    let aggregate: reduce::Aggregate<R> = Arc::new(aggregate);
    register_tree(format!("kiln.bag.reduction/{id}"), move |_| {
        Ok(reduce::user_reduction(Arc::clone(&per_partition), Arc::clone(&aggregate)))
    });
}

/// Registers the functions of `.foldby(key, binop, initial, combine, combine_initial)` for
/// `.portable(id)` on its result. The two initial values travel with the tasks; the
/// per-partition groups and the `(K, A)` results get codecs (the pairs as an element type
/// tagged `foldby/{id}` unless they have a tag). Call it in the client and in every worker
/// program.
pub fn register_foldby<T, K, A>(
    id: &str,
    key: impl Fn(&T) -> K + Send + Sync + 'static,
    binop: impl Fn(A, &T) -> A + Send + Sync + 'static,
    combine: impl Fn(A, &A) -> A + Send + Sync + 'static,
) where
    T: Element,
    K: Element + Eq + Hash + Serialize + DeserializeOwned,
    A: Element + Serialize + DeserializeOwned,
{
    value_codec::<A>();
    register_element_if_new::<(K, A)>(&format!("foldby/{id}"));
    if CodecRegistry::global().codec_for(TypeId::of::<OrderedMap<K, reduce::Acc<A>>>()).is_none() {
        CodecRegistry::global().register(MsgpackCodec::<OrderedMap<K, reduce::Acc<A>>, Vec<(K, reduce::Acc<A>)>> {
            tag: format!("kiln.bag.foldby<{id}>"),
            to_wire: |m| &m.entries,
            from_wire: OrderedMap::from_entries,
            size: Some(|m| estimated_nbytes(&m.entries)),
            _v: PhantomData,
        });
    }
    let fns = reduce::FoldBy {
        key: Arc::new(key) as reduce::KeyOf<T, K>,
        binop: Arc::new(binop) as reduce::Binop<A, T>,
        combine: Arc::new(combine) as reduce::Binop<A, A>,
    };
    register_tree(format!("kiln.bag.foldby/{id}"), move |params| {
        let (initial, combine_initial): (Encoded, Encoded) =
            postcard::from_bytes(params).map_err(|e| format!("foldby's initial values: {e}"))?;
        Ok(reduce::foldby_reduction(fns.clone(), decode_encoded(initial)?, decode_encoded(combine_initial)?))
    });
}

/// Makes `a.zip(&b)` of bags of `T` and `U` portable: registers the zip kernel and the pairs
/// `(T, U)` as an element type (tagged `({t},{u})` from the two tags unless it has a tag).
/// `(T, u64)` for the built-in hashable types and `(T, T)` for `u64`, `i64`, `f64` and
/// `String` are registered already.
///
/// # Errors
/// [`crate::BagError::Unregistered`] when `T` or `U` is not a registered element type (register
/// them first: the kernel's id is made of their tags).
pub fn register_zip<T, U>() -> Result<(), crate::BagError>
where
    T: Element + Serialize + DeserializeOwned,
    U: Element + Serialize + DeserializeOwned,
{
    ensure_registered();
    register_zip_here::<T, U>()
}

/// [`register_zip`] without [`ensure_registered`] (which calls it).
fn register_zip_here<T, U>() -> Result<(), crate::BagError>
where
    T: Element + Serialize + DeserializeOwned,
    U: Element + Serialize + DeserializeOwned,
{
    let unregistered = |name: &'static str| crate::BagError::Unregistered { type_name: name };
    let tag_of = |t: TypeId| tags().read().unwrap_or_else(|p| p.into_inner()).get(&t).cloned();
    let t = tag_of(TypeId::of::<T>()).ok_or_else(|| unregistered(std::any::type_name::<T>()))?;
    let u = tag_of(TypeId::of::<U>()).ok_or_else(|| unregistered(std::any::type_name::<U>()))?;
    let id = zip_id(&t, &u);
    register_element_if_new::<(T, U)>(&format!("({t},{u})"));
    KernelRegistry::global().register_factory(&id.clone(), move |params| {
        let partition: u64 = postcard::from_bytes(params).map_err(|e| format!("{id}: {e}"))?;
        Ok(crate::ops::zip_kernel::<T, U>(partition as usize, true))
    });
    zips().write().unwrap_or_else(|p| p.into_inner()).insert(TypeId::of::<(T, U)>());
    Ok(())
}

/// The zip kernel's id for tags `t` and `u`.
pub(crate) fn zip_id(t: &str, u: &str) -> String {
    format!("kiln.bag.zip/({t},{u})")
}

fn zips() -> &'static RwLock<std::collections::HashSet<TypeId>> {
    static ZIPS: OnceLock<RwLock<std::collections::HashSet<TypeId>>> = OnceLock::new();
    ZIPS.get_or_init(Default::default)
}

/// The id of the zip kernel of `T` and `U` when [`register_zip`] made it portable here.
pub(crate) fn zip_spec_id<T: 'static, U: 'static>() -> Option<String> {
    ensure_registered();
    if !zips().read().unwrap_or_else(|p| p.into_inner()).contains(&TypeId::of::<(T, U)>()) {
        return None;
    }
    Some(zip_id(&tag_of::<T>()?, &tag_of::<U>()?))
}

/// [`register_element`] unless `T` has a tag already (a type registered twice under different
/// tags would change the ids of its built-in operations between processes that registered in
/// another order).
fn register_element_if_new<T: Element + Serialize + DeserializeOwned>(tag: &str) {
    if tags().read().unwrap_or_else(|p| p.into_inner()).get(&TypeId::of::<T>()).is_none() {
        register_element::<T>(tag);
    }
}

/// A codec for single values of `A` (a fold's accumulator, a reduction's result) unless it has
/// one; tagged by the type's name, so every process of one program agrees on it whatever
/// order it registered things in.
fn value_codec<A: Serialize + DeserializeOwned + Send + Sync + 'static>() {
    if CodecRegistry::global().codec_for(TypeId::of::<A>()).is_none() {
        codec::<A>(format!("kiln.bag.value<{}>", std::any::type_name::<A>()), None);
    }
}

/// A value as parameters of a task: its codec's encoding, postcard-framed.
pub(crate) fn encode_value<A: Element>(value: &A) -> Result<Vec<u8>, crate::BagError> {
    let encoded = CodecRegistry::global()
        .encode(&Value::new(value.clone()))
        .map_err(|_| crate::BagError::Unregistered { type_name: std::any::type_name::<A>() })?;
    postcard::to_allocvec(&encoded).map_err(|e| crate::BagError::Encode(e.to_string()))
}

/// [`encode_value`]'s encoding before postcard framing (for parameters that hold several).
pub(crate) fn encoded<A: Element>(value: &A) -> Result<Encoded, crate::BagError> {
    CodecRegistry::global()
        .encode(&Value::new(value.clone()))
        .map_err(|_| crate::BagError::Unregistered { type_name: std::any::type_name::<A>() })
}

fn decode_value<A: Element>(params: &[u8]) -> Result<A, String> {
    let encoded: Encoded = postcard::from_bytes(params).map_err(|e| e.to_string())?;
    decode_encoded(encoded)
}

fn decode_encoded<A: Element>(encoded: Encoded) -> Result<A, String> {
    let value = CodecRegistry::global().decode_owned(encoded).map_err(|e| e.to_string())?;
    value.take::<A>().map_err(|m| format!("expected {}, decoded {}", m.expected, m.found))
}

/// What to do so that operation `op` (a step's or kernel's name) on elements of type `element`
/// can run on a cluster: the remedy a cluster client's refusal quotes.
pub(crate) fn hint(op: &str, element: Option<&str>) -> String {
    let ty = element.unwrap_or("T");
    let user = |after: &str, register: &str| {
        format!(
            "`{op}` runs a user function that has no id: give it one with `.portable(id)` right after {after}, and \
             register the same function with `kiln_bag::portable::{register}` in the client and in every worker \
             program (before run_worker_if_requested)"
        )
    };
    let element_type = |register: &str| {
        format!(
            "`{op}` of {ty} needs the element type registered: call `kiln_bag::portable::{register}::<{ty}>(tag)` \
             in the client and in every worker program (before run_worker_if_requested)"
        )
    };
    match op {
        "map" => user("`map`", "register_map(id, f)"),
        "try_map" => user("`try_map`", "register_try_map(id, f)"),
        "filter" | "remove" => user("`filter` or `remove`", "register_filter(id, predicate)"),
        "flat_map" => user("`flat_map`", "register_flat_map(id, f)"),
        "map_partitions" => user("`map_partitions`", "register_map_partitions(id, f)"),
        "starmap" => user("`starmap`", "register_starmap(id, f)` or `register_starmap3(id, f)"),
        "join" => user("`join`", "register_join(id, on_self, on_other)"),
        "topk" => user("`topk` or `bottomk`", "register_key(id, key)"),
        "groupby" | "groupby-split" => user("`groupby`", "register_group_key(id, key)"),
        "fold" => user("`fold` (on its result)", "register_fold(id, binop, combine)"),
        "reduction" => user("`reduction` (on its result)", "register_reduction(id, per_partition, aggregate)"),
        "foldby" => user("`foldby` (on its result)", "register_foldby(id, key, binop, combine)"),
        "zip" => format!(
            "`zip` into {ty} needs both element types registered (`kiln_bag::portable::register_element`) and then \
             `kiln_bag::portable::register_zip::<T, U>()`, in the client and in every worker program (before \
             run_worker_if_requested)"
        ),
        "frequencies" | "distinct" => element_type("register_hashable"),
        "sum" | "min" | "max" | "mean" | "var" | "std" => element_type("register_numeric"),
        "to_textfiles" => element_type("register_text"),
        _ => element_type("register_element"),
    }
}

/// Registers the bag kernels and the common element types (`String`, `serde_json::Value`,
/// `bool`, the integers and floats) in the process-wide registries, once. Building a bag
/// calls it; `kiln::register_builtins` (so `kiln worker`) calls it at start-up.
pub fn ensure_registered() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        kiln_delayed::ensure_registered();
        KernelRegistry::global().register_factory(PIPELINE_KERNEL_ID, |params| {
            let specs: Vec<StepSpec> = postcard::from_bytes(params).map_err(|e| e.to_string())?;
            let steps = specs.iter().map(resolve_step).collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(PipelineKernel::from_steps(steps)) as Arc<dyn Kernel>)
        });
        KernelRegistry::global().register_factory(STREAM_KERNEL_ID, |params| {
            let spec: StreamSpec = postcard::from_bytes(params).map_err(|e| e.to_string())?;
            let source = resolve_source(&spec.source)?;
            let steps = spec.steps.iter().map(resolve_step).collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StreamKernel::rebuilt(source, steps, spec.chunk)?) as Arc<dyn Kernel>)
        });
        register_hashable::<String>("string");
        register_text::<String>("string");
        register_hashable::<serde_json::Value>("json");
        register_text::<serde_json::Value>("json");
        register_hashable::<crate::Json>("json-text");
        register_text::<crate::Json>("json-text");
        register_hashable::<bool>("bool");
        register_tree("kiln.bag.any/bool".into(), |_| Ok(reduce::truth_reduction(false)));
        register_tree("kiln.bag.all/bool".into(), |_| Ok(reduce::truth_reduction(true)));
        macro_rules! integers {
            ($($t:ty => $tag:literal),*) => {$(
                register_hashable::<$t>($tag);
                register_numeric::<$t>($tag);
                register_text::<$t>($tag);
            )*};
        }
        integers!(u64 => "u64", i64 => "i64", u32 => "u32", i32 => "i32", usize => "usize");
        register_numeric::<f64>("f64");
        register_text::<f64>("f64");
        register_numeric::<f32>("f32");
        // zip: each hashable built-in with u64 (pairs that exist already for frequencies),
        // and a few same-type pairs. `register_zip` cannot fail for tagged types.
        macro_rules! zips {
            ($(($a:ty, $b:ty)),*) => {$( let _ = register_zip_here::<$a, $b>(); )*};
        }
        zips!(
            (String, u64),
            (serde_json::Value, u64),
            (crate::Json, u64),
            (bool, u64),
            (u64, u64),
            (i64, u64),
            (u32, u64),
            (i32, u64),
            (usize, u64),
            (i64, i64),
            (f64, f64),
            (String, String)
        );
        CodecRegistry::global().register(SerdeCodec::<Moments>::new("kiln.bag.moments"));
        CodecRegistry::global().register(SerdeCodec::<PathBuf>::new("kiln.bag.path"));
        CodecRegistry::global().register(SerdeCodec::<Vec<PathBuf>>::new("kiln.bag.paths"));
        register_step("kiln.bag.pluck".into(), |params| {
            let (key, default): (crate::PluckPath, Option<String>) =
                postcard::from_bytes(params).map_err(|e| e.to_string())?;
            let default = default
                .map(|d| serde_json::from_str::<serde_json::Value>(&d))
                .transpose()
                .map_err(|e| e.to_string())?;
            Ok(crate::pluck_step(key, default))
        });
        register_step("kiln.bag.pluck_json".into(), |params| {
            let (key, default): (crate::PluckPath, Option<String>) =
                postcard::from_bytes(params).map_err(|e| e.to_string())?;
            let default = default.map(|d| crate::Json::parse(&d)).transpose().map_err(|e| e.to_string())?;
            Ok(crate::pluck_json_step(key, default))
        });
        KernelRegistry::global().register::<crate::RangeKernel>();
        text::register_text_kernels();
    });
}

/// Marks a user step as registered under `id`: the spec other processes rebuild it from.
pub(crate) fn user_step_spec(step: &dyn Step, id: &str) -> StepSpec {
    StepSpec { id: format!("kiln.bag.{}/{id}", step.name()), params: Vec::new() }
}

/// A kernel with a spec attached (built-in kernels made from closures).
pub(crate) struct SpecKernel {
    pub(crate) inner: Arc<dyn Kernel>,
    pub(crate) spec: Option<KernelSpec>,
    /// The element type the kernel reads (named in the remedy when `spec` is `None`).
    pub(crate) element: &'static str,
}

impl Kernel for SpecKernel {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        self.inner.call(inputs)
    }
    fn spec(&self) -> Option<KernelSpec> {
        self.spec.clone()
    }
    fn portable_hint(&self) -> Option<String> {
        Some(hint(self.inner.name(), Some(self.element)))
    }
}
