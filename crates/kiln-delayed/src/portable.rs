//! Delayed graphs on other processes: the portable forms of `value`, `collect` and
//! `collect_map`, and codecs for the value types they produce.
//!
//! `value(x)` is a task of kernel `kiln.delayed.value` whose input is `x` as a literal, so the
//! data travels through its codec (a type without one is refused by name when the graph is
//! converted). `collect::<T>` and `collect_map::<K, V>` are generic; they are portable for the
//! element types listed below (ids `kiln.delayed.collect.<type>` and
//! `kiln.delayed.collect_map.<key>.<value>`) and local-only for the others. User functions are
//! portable once given an id with `.portable(id)` and registered.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Once, OnceLock};

use kiln_graph::codec::{CodecError, SerdeCodec, ValueCodec, pod_from_bytes, pod_to_bytes};
use kiln_graph::kernel::{Identity, Portable, PortableKernel, input};
use kiln_graph::{CodecRegistry, Encoded, Kernel, KernelRegistry, KernelSpec, Key, TaskError, Value};

use crate::{Delayed, NodeArg};

/// The element types `collect` is portable for, with their id suffixes.
macro_rules! collect_types {
    ($m:ident) => {
        $m!(
            u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64", i8 => "i8", i16 => "i16",
            i32 => "i32", i64 => "i64", f32 => "f32", f64 => "f64", usize => "usize", isize => "isize",
            bool => "bool", String => "string",
            Vec<u8> => "vec<u8>", Vec<u16> => "vec<u16>", Vec<u32> => "vec<u32>", Vec<u64> => "vec<u64>",
            Vec<i8> => "vec<i8>", Vec<i16> => "vec<i16>", Vec<i32> => "vec<i32>", Vec<i64> => "vec<i64>",
            Vec<f32> => "vec<f32>", Vec<f64> => "vec<f64>", Vec<String> => "vec<string>",
        )
    };
}

/// The (key, value) types `collect_map` is portable for: every pair of these keys and values.
macro_rules! map_combos {
    ($m:ident) => {
        map_combos!(@keys $m,
            [String => "string", i64 => "i64", (i64, i64) => "(i64,i64)", (i64, i64, i64) => "(i64,i64,i64)"],
            [i64 => "i64", f64 => "f64", String => "string", bool => "bool"]);
    };
    (@keys $m:ident, [$($k:ty => $kn:literal),*], $values:tt) => {
        $(map_combos!(@values $m, $k, $kn, $values);)*
    };
    (@values $m:ident, $k:ty, $kn:literal, [$($v:ty => $vn:literal),*]) => {
        $($m!($k, $kn, $v, $vn);)*
    };
}

/// Registers the kernels and codecs of `kiln-delayed` in these registries. Registering twice
/// replaces entries with equal ones, so calling it again is harmless. Functions made portable
/// with `.portable(id)` are the application's to register.
pub fn register_portable(kernels: &KernelRegistry, codecs: &CodecRegistry) {
    kernels.register_instance(Arc::new(Identity));
    kernels.register::<ValueKernel>();

    macro_rules! collect_kernels {
        ($($ty:ty => $name:literal),* $(,)?) => {$(
            kernels.register_instance(Arc::new(CollectKernel::<$ty> { id: Some(concat!("kiln.delayed.collect.", $name)), _t: PhantomData }));
        )*};
    }
    collect_types!(collect_kernels);

    macro_rules! collect_map_kernels {
        ($k:ty, $kn:literal, $v:ty, $vn:literal) => {{
            const ID: &str = concat!("kiln.delayed.collect_map.", $kn, ".", $vn);
            kernels.register_factory(ID, |params| {
                let keys: Vec<$k> = postcard::from_bytes(params).map_err(|e| e.to_string())?;
                Ok(Arc::new(CollectMapKernel::<$k, $v> { keys, id: Some(ID), _v: PhantomData }) as Arc<dyn Kernel>)
            });
            codecs.register(SerdeCodec::<BTreeMap<$k, $v>>::new(concat!("btreemap<", $kn, ",", $vn, ">")));
        }};
    }
    map_combos!(collect_map_kernels);

    // The literal types delayed calls accept that kiln-graph's built-ins leave out.
    codecs.register(SerdeCodec::<usize>::new("usize"));
    codecs.register(SerdeCodec::<isize>::new("isize"));
    codecs.register(WideVecCodec::<usize, u64>::new("vec<usize>"));
    codecs.register(WideVecCodec::<isize, i64>::new("vec<isize>"));
    // What `collect` of vectors gives: one frame per inner vector.
    macro_rules! nested {
        ($($ty:ty => $name:literal),*) => {$(
            codecs.register(NestedVecCodec::<$ty>::new(concat!("vec<vec<", $name, ">>")));
        )*};
    }
    nested!(u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64", i8 => "i8", i16 => "i16",
            i32 => "i32", i64 => "i64", f32 => "f32", f64 => "f64");
    codecs.register(SerdeCodec::<Vec<Vec<String>>>::new("vec<vec<string>>"));
}

/// Registers kiln-delayed's kernels and codecs in the process-wide registries, once. Lowering a
/// delayed value calls it; worker programs call it at start-up.
pub fn ensure_registered() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| register_portable(KernelRegistry::global(), CodecRegistry::global()));
}

/// `value(x)`: returns its literal input.
#[derive(serde::Serialize, serde::Deserialize)]
struct ValueKernel;

impl PortableKernel for ValueKernel {
    const ID: &'static str = "kiln.delayed.value";
    fn name(&self) -> &str {
        "value"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        match inputs {
            [v] => Ok(v.clone()),
            _ => Err(TaskError::Arity { expected: 1, found: inputs.len() }),
        }
    }
}

/// A delayed value holding `data` as the literal input of a `value` task.
pub(crate) fn value_node<T: Any + Send + Sync>(key: Key, data: Value) -> Delayed<T> {
    static KERNEL: OnceLock<Arc<dyn Kernel>> = OnceLock::new();
    let kernel = KERNEL.get_or_init(|| Arc::new(Portable(ValueKernel)));
    Delayed::from_node(key, Arc::clone(kernel), vec![NodeArg::Literal(data)])
}

/// Gathers its inputs into a `Vec<T>`; portable when `id` is set.
struct CollectKernel<T> {
    id: Option<&'static str>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Any + Send + Sync + Clone> Kernel for CollectKernel<T> {
    fn name(&self) -> &str {
        "collect"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let mut out: Vec<T> = Vec::with_capacity(inputs.len());
        for i in 0..inputs.len() {
            out.push(input::<T>(inputs, i)?.clone());
        }
        Ok(Value::new(out))
    }
    fn spec(&self) -> Option<KernelSpec> {
        self.id.map(|id| KernelSpec { id: id.to_string(), params: Vec::new() })
    }
}

/// The `collect` kernel for `T`: portable for the types of `collect_types!`.
pub(crate) fn collect_kernel<T: Any + Send + Sync + Clone>() -> Arc<dyn Kernel> {
    let t = TypeId::of::<T>();
    let mut id = None;
    macro_rules! find {
        ($($ty:ty => $name:literal),* $(,)?) => {$(
            if t == TypeId::of::<$ty>() {
                id = Some(concat!("kiln.delayed.collect.", $name));
            }
        )*};
    }
    collect_types!(find);
    Arc::new(CollectKernel::<T> { id, _t: PhantomData })
}

/// Gathers its inputs into a map under `keys`; portable when `id` is set (the keys travel as
/// the parameters).
struct CollectMapKernel<K, V> {
    keys: Vec<K>,
    id: Option<&'static str>,
    _v: PhantomData<fn() -> V>,
}

impl<K, V> Kernel for CollectMapKernel<K, V>
where
    K: Ord + Clone + Any + Send + Sync,
    V: Any + Send + Sync + Clone,
{
    fn name(&self) -> &str {
        "collect_map"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        if inputs.len() != self.keys.len() {
            return Err(TaskError::Arity { expected: self.keys.len(), found: inputs.len() });
        }
        let mut out = BTreeMap::new();
        for (i, key) in self.keys.iter().enumerate() {
            out.insert(key.clone(), input::<V>(inputs, i)?.clone());
        }
        Ok(Value::new(out))
    }
    fn spec(&self) -> Option<KernelSpec> {
        let id = self.id?;
        // The key type is one of `map_combos!`'s (that is how `id` was set); find it to encode.
        let keys: &dyn Any = &self.keys;
        let params = if let Some(k) = keys.downcast_ref::<Vec<String>>() {
            postcard::to_allocvec(k)
        } else if let Some(k) = keys.downcast_ref::<Vec<i64>>() {
            postcard::to_allocvec(k)
        } else if let Some(k) = keys.downcast_ref::<Vec<(i64, i64)>>() {
            postcard::to_allocvec(k)
        } else if let Some(k) = keys.downcast_ref::<Vec<(i64, i64, i64)>>() {
            postcard::to_allocvec(k)
        } else {
            return None;
        };
        params.ok().map(|params| KernelSpec { id: id.to_string(), params })
    }
}

/// The `collect_map` kernel for `K`, `V`: portable for the pairs of `map_combos!`.
pub(crate) fn collect_map_kernel<K, V>(keys: Vec<K>) -> Arc<dyn Kernel>
where
    K: Ord + Clone + Any + Send + Sync,
    V: Any + Send + Sync + Clone,
{
    let pair = (TypeId::of::<K>(), TypeId::of::<V>());
    let mut id = None;
    macro_rules! find {
        ($k:ty, $kn:literal, $v:ty, $vn:literal) => {
            if pair == (TypeId::of::<$k>(), TypeId::of::<$v>()) {
                id = Some(concat!("kiln.delayed.collect_map.", $kn, ".", $vn));
            }
        };
    }
    map_combos!(find);
    Arc::new(CollectMapKernel::<K, V> { keys, id, _v: PhantomData })
}

/// `Vec<usize>`/`Vec<isize>` as one frame of 64-bit little-endian numbers, so the wire format
/// does not depend on the platform's pointer width.
struct WideVecCodec<T, W> {
    tag: &'static str,
    _t: PhantomData<fn() -> (T, W)>,
}

impl<T, W> WideVecCodec<T, W> {
    fn new(tag: &'static str) -> Self {
        WideVecCodec { tag, _t: PhantomData }
    }
}

macro_rules! wide {
    ($t:ty, $w:ty) => {
        impl ValueCodec for WideVecCodec<$t, $w> {
            fn tag(&self) -> &str {
                self.tag
            }
            fn value_type(&self) -> TypeId {
                TypeId::of::<Vec<$t>>()
            }
            fn encode(&self, value: &Value) -> Result<Encoded, CodecError> {
                let v = value.downcast_ref::<Vec<$t>>().map_err(|_| CodecError::NoCodecForType(value.type_name()))?;
                let wide: Vec<$w> = v.iter().map(|&x| x as $w).collect();
                Ok(Encoded { tag: self.tag.into(), header: Vec::new(), frames: vec![pod_to_bytes(&wide).into()] })
            }
            fn decode(&self, encoded: &Encoded) -> Result<Value, CodecError> {
                let malformed = |message: String| CodecError::Malformed { tag: self.tag.into(), message };
                let [frame] = encoded.frames.as_slice() else {
                    return Err(malformed(format!("expected 1 frame, got {}", encoded.frames.len())));
                };
                let wide = pod_from_bytes::<$w>(frame).map_err(malformed)?;
                let v = wide
                    .into_iter()
                    .map(|x| {
                        <$t>::try_from(x).map_err(|_| malformed(format!("{x} does not fit in {}", stringify!($t))))
                    })
                    .collect::<Result<Vec<$t>, _>>()?;
                Ok(Value::new(v))
            }
        }
    };
}
wide!(usize, u64);
wide!(isize, i64);

/// `Vec<Vec<T>>` of numbers: one raw frame per inner vector, no header.
struct NestedVecCodec<T> {
    tag: &'static str,
    _t: PhantomData<fn() -> T>,
}

impl<T> NestedVecCodec<T> {
    fn new(tag: &'static str) -> Self {
        NestedVecCodec { tag, _t: PhantomData }
    }
}

impl<T: kiln_graph::codec::Pod> ValueCodec for NestedVecCodec<T> {
    fn tag(&self) -> &str {
        self.tag
    }
    fn value_type(&self) -> TypeId {
        TypeId::of::<Vec<Vec<T>>>()
    }
    fn encode(&self, value: &Value) -> Result<Encoded, CodecError> {
        let v = value.downcast_ref::<Vec<Vec<T>>>().map_err(|_| CodecError::NoCodecForType(value.type_name()))?;
        Ok(Encoded {
            tag: self.tag.into(),
            header: Vec::new(),
            frames: v.iter().map(|x| pod_to_bytes(x).into()).collect(),
        })
    }
    fn decode(&self, encoded: &Encoded) -> Result<Value, CodecError> {
        let v = encoded
            .frames
            .iter()
            .map(|f| pod_from_bytes::<T>(f))
            .collect::<Result<Vec<Vec<T>>, _>>()
            .map_err(|message| CodecError::Malformed { tag: self.tag.into(), message })?;
        Ok(Value::new(v))
    }
}
