//! Kernels: what a task runs.
//!
//! A task names a kernel and its inputs. A kernel is *portable* when it can be described by a
//! stable id plus serialized parameters ([`KernelSpec`]); a process that has the same kernel
//! registered in its [`KernelRegistry`] rebuilds it from that description, which is how graphs
//! travel to remote workers. Closures are kernels too, but they have no spec: they run on the
//! local scheduler only, and a remote engine refuses them with a message naming the function.
//!
//! ```
//! use kiln_graph::{Kernel, Value, kernel::{func1, try_func2}};
//! let inc = func1("inc", |x: &i64| x + 1);
//! assert_eq!(*inc.call(&[Value::new(1i64)]).unwrap().downcast_ref::<i64>().unwrap(), 2);
//! let div = try_func2("div", |a: &i64, b: &i64| a.checked_div(*b).ok_or("division by zero"));
//! assert!(div.call(&[Value::new(1i64), Value::new(0i64)]).is_err());
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::TaskError;
use crate::value::Value;

/// What a task runs: a function of its input values.
pub trait Kernel: Send + Sync + 'static {
    /// A short human name (shown in graphs, progress and errors).
    fn name(&self) -> &str;

    /// Runs the kernel on its inputs, in the order the task lists them.
    ///
    /// # Errors
    /// Whatever the kernel reports, or a type/arity mismatch of its inputs.
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError>;

    /// The portable description of this kernel, or `None` when it can only run in this process
    /// (an unregistered closure).
    fn spec(&self) -> Option<KernelSpec> {
        None
    }

    /// For a kernel without a [`Kernel::spec`]: what makes it portable, in words a user can act
    /// on (the registration call to make). A cluster client's refusal
    /// ([`crate::portable::PortableError::NotPortable`]) quotes it; `None` gives the generic
    /// remedy for a local closure (`.portable(id)` plus a kernel registration), which is wrong
    /// for kernels whose fix is registering a type or a collection's own function.
    fn portable_hint(&self) -> Option<String> {
        None
    }

    /// Whether this task stands for a value held by a cluster ([`RemoteValue`]): such tasks
    /// are never fused or sent.
    fn is_remote(&self) -> bool {
        false
    }

    /// `Some(bytes)` when this kernel reads its value from storage and running it again gives
    /// an equal value by reading about `bytes` again (a Zarr chunk, a `.npy` file): engines may
    /// then read it twice rather than hold it between distant readers
    /// ([`crate::reread::split_rereads`]). Only meaningful for a task without task inputs.
    fn reread_bytes(&self) -> Option<u64> {
        None
    }
}

/// A portable kernel description: a registered id plus serialized parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KernelSpec {
    /// The id under which the kernel is registered, e.g. `"kiln.array.ones"`.
    pub id: String,
    /// The kernel's parameters, postcard-encoded.
    pub params: Vec<u8>,
}

/// Borrows input `position` as a `T`, with a typed error instead of a panic.
///
/// # Errors
/// [`TaskError::Arity`] when there is no such input, [`TaskError::TypeMismatch`] when it has
/// another type.
pub fn input<T: Any>(inputs: &[Value], position: usize) -> Result<&T, TaskError> {
    let value = inputs.get(position).ok_or(TaskError::Arity { expected: position + 1, found: inputs.len() })?;
    value.downcast_ref::<T>().map_err(|m| TaskError::TypeMismatch { position, expected: m.expected, found: m.found })
}

fn check_arity(inputs: &[Value], expected: usize) -> Result<(), TaskError> {
    if inputs.len() == expected { Ok(()) } else { Err(TaskError::Arity { expected, found: inputs.len() }) }
}

/// A kernel from a typed Rust function taking its inputs by reference.
///
/// Made with [`func1`], [`try_func2`] and friends. With an id ([`FnKernel::portable`]) and
/// registration in a [`KernelRegistry`] it becomes portable.
pub struct FnKernel<F, Args> {
    name: Arc<str>,
    id: Option<Arc<str>>,
    f: F,
    _args: PhantomData<fn(Args)>,
}

impl<F, Args> FnKernel<F, Args> {
    /// Marks the kernel portable under `id`: processes that registered the same function under
    /// the same id can run it.
    pub fn portable(mut self, id: impl Into<Arc<str>>) -> Self {
        self.id = Some(id.into());
        self
    }
}

macro_rules! fn_kernels {
    ($(($plain:ident, $fallible:ident, $n:expr $(, $arg:ident : $idx:tt)*)),* $(,)?) => {$(
        impl<F, R, E, $($arg,)*> Kernel for FnKernel<F, ($($arg,)*)>
        where
            F: Fn($(&$arg),*) -> Result<R, E> + Send + Sync + 'static,
            R: Any + Send + Sync,
            E: Display,
            $($arg: Any,)*
        {
            fn name(&self) -> &str {
                &self.name
            }

            #[allow(unused_variables)]
            fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
                check_arity(inputs, $n)?;
                (self.f)($(input::<$arg>(inputs, $idx)?),*)
                    .map(Value::new)
                    .map_err(|e| TaskError::Failed(e.to_string()))
            }

            fn spec(&self) -> Option<KernelSpec> {
                self.id.as_ref().map(|id| KernelSpec { id: id.to_string(), params: Vec::new() })
            }
        }

        /// A kernel from a fallible function of this many inputs; an `Err` fails the task
        /// with its message.
        pub fn $fallible<F, R, E, $($arg,)*>(name: &str, f: F) -> FnKernel<F, ($($arg,)*)>
        where
            F: Fn($(&$arg),*) -> Result<R, E> + Send + Sync + 'static,
            R: Any + Send + Sync,
            E: Display,
            $($arg: Any,)*
        {
            FnKernel { name: name.into(), id: None, f, _args: PhantomData }
        }

        /// A kernel from an infallible function of this many inputs.
        pub fn $plain<F, R, $($arg,)*>(
            name: &str,
            f: F,
        ) -> FnKernel<impl Fn($(&$arg),*) -> Result<R, Infallible> + Send + Sync + 'static, ($($arg,)*)>
        where
            F: Fn($(&$arg),*) -> R + Send + Sync + 'static,
            R: Any + Send + Sync,
            $($arg: Any,)*
        {
            FnKernel {
                name: name.into(),
                id: None,
                f: move |$($arg: &$arg),*| Ok(f($($arg),*)),
                _args: PhantomData,
            }
        }
    )*};
}

#[allow(non_snake_case)]
mod arities {
    use super::*;
    fn_kernels!(
        (func0, try_func0, 0),
        (func1, try_func1, 1, A: 0),
        (func2, try_func2, 2, A: 0, B: 1),
        (func3, try_func3, 3, A: 0, B: 1, C: 2),
        (func4, try_func4, 4, A: 0, B: 1, C: 2, D: 3),
        (func5, try_func5, 5, A: 0, B: 1, C: 2, D: 3, E2: 4),
        (func6, try_func6, 6, A: 0, B: 1, C: 2, D: 3, E2: 4, G: 5),
    );
}
pub use arities::*;

/// A kernel over the raw input slice, for kernels that take any number of inputs (e.g. a sum
/// of however many partial results a tree level has).
pub struct SliceKernel<F> {
    name: Arc<str>,
    id: Option<Arc<str>>,
    f: F,
}

/// A kernel from a function of all inputs as a slice of values.
///
/// ```
/// use kiln_graph::{Value, kernel::{slice_kernel, input}};
/// let sum = slice_kernel("sum", |xs: &[Value]| {
///     let mut total = 0i64;
///     for i in 0..xs.len() { total += input::<i64>(xs, i)?; }
///     Ok(Value::new(total))
/// });
/// # use kiln_graph::Kernel;
/// let out = sum.call(&[Value::new(1i64), Value::new(2i64)]).unwrap();
/// assert_eq!(*out.downcast_ref::<i64>().unwrap(), 3);
/// ```
pub fn slice_kernel<F>(name: &str, f: F) -> SliceKernel<F>
where
    F: Fn(&[Value]) -> Result<Value, TaskError> + Send + Sync + 'static,
{
    SliceKernel { name: name.into(), id: None, f }
}

impl<F> SliceKernel<F> {
    /// Marks the kernel portable under `id` (see [`FnKernel::portable`]).
    pub fn portable(mut self, id: impl Into<Arc<str>>) -> Self {
        self.id = Some(id.into());
        self
    }
}

impl<F> Kernel for SliceKernel<F>
where
    F: Fn(&[Value]) -> Result<Value, TaskError> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        (self.f)(inputs)
    }
    fn spec(&self) -> Option<KernelSpec> {
        self.id.as_ref().map(|id| KernelSpec { id: id.to_string(), params: Vec::new() })
    }
}

/// The identity kernel: returns its single input. Used for aliases.
pub struct Identity;

impl Kernel for Identity {
    fn name(&self) -> &str {
        "identity"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        check_arity(inputs, 1)?;
        Ok(inputs[0].clone())
    }
    fn spec(&self) -> Option<KernelSpec> {
        Some(KernelSpec { id: "kiln.identity".into(), params: Vec::new() })
    }
}

/// The id of [`RemoteValue`] tasks.
pub const REMOTE_KERNEL_ID: &str = "kiln.remote";

/// Stands for a value that already lives on a cluster (a future's result): the task's key is
/// the remote key. A distributed client does not send these tasks (the cluster has their
/// values); anything else running one gets a clear error.
pub struct RemoteValue;

impl Kernel for RemoteValue {
    fn name(&self) -> &str {
        "remote"
    }
    fn call(&self, _inputs: &[Value]) -> Result<Value, TaskError> {
        Err(TaskError::Failed(
            "this value lives on a kiln cluster; compute graphs that use it with the client that holds it".into(),
        ))
    }
    fn spec(&self) -> Option<KernelSpec> {
        Some(KernelSpec { id: REMOTE_KERNEL_ID.into(), params: Vec::new() })
    }
    fn is_remote(&self) -> bool {
        true
    }
}

/// A kernel whose parameters are a serde-serializable struct: the struct *is* the kernel, and
/// its encoding travels with the task.
///
/// ```
/// use kiln_graph::{Value, TaskError, KernelRegistry, Kernel, kernel::{PortableKernel, Portable, input}};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct AddConst { c: i64 }
/// impl PortableKernel for AddConst {
///     const ID: &'static str = "example.add_const";
///     fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
///         Ok(Value::new(input::<i64>(inputs, 0)? + self.c))
///     }
/// }
/// let registry = KernelRegistry::new();
/// registry.register::<AddConst>();
/// let spec = Portable(AddConst { c: 5 }).spec().unwrap();
/// let rebuilt = registry.resolve(&spec).unwrap();
/// let out = rebuilt.call(&[Value::new(1i64)]).unwrap();
/// assert_eq!(*out.downcast_ref::<i64>().unwrap(), 6);
/// ```
pub trait PortableKernel: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable id, unique across everything registered (use a dotted crate prefix).
    const ID: &'static str;

    /// Runs the kernel.
    ///
    /// # Errors
    /// Whatever the kernel reports.
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError>;

    /// A short human name; the id by default.
    fn name(&self) -> &str {
        Self::ID
    }

    /// As [`Kernel::reread_bytes`].
    fn reread_bytes(&self) -> Option<u64> {
        None
    }
}

/// Adapts a [`PortableKernel`] to [`Kernel`].
pub struct Portable<K>(pub K);

impl<K: PortableKernel> Kernel for Portable<K> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        self.0.call(inputs)
    }
    fn reread_bytes(&self) -> Option<u64> {
        self.0.reread_bytes()
    }
    fn spec(&self) -> Option<KernelSpec> {
        // Serializing plain parameter structs cannot fail with postcard's Vec output.
        postcard::to_allocvec(&self.0).ok().map(|params| KernelSpec { id: K::ID.to_string(), params })
    }
}

/// Why a kernel spec could not be turned back into a kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Nothing is registered under the id.
    #[error(
        "kernel {0:?} is not registered in this process; register it (KernelRegistry::register \
         or register_instance) in every process that runs it, e.g. the worker binary"
    )]
    Unknown(String),
    /// The parameters do not decode.
    #[error("kernel {id:?}: bad parameters: {message}")]
    BadParams {
        /// The kernel id.
        id: String,
        /// The decoder's message.
        message: String,
    },
}

type Factory = Arc<dyn Fn(&[u8]) -> Result<Arc<dyn Kernel>, String> + Send + Sync>;

/// Maps kernel ids to constructors, so a [`KernelSpec`] received from elsewhere becomes a
/// runnable kernel again.
#[derive(Default)]
pub struct KernelRegistry {
    factories: RwLock<HashMap<String, Factory>>,
}

impl KernelRegistry {
    /// An empty registry (tests); most code uses [`KernelRegistry::global`].
    pub fn new() -> Self {
        let registry = Self::default();
        registry.register_instance(Arc::new(Identity));
        registry
    }

    /// The process-wide registry that remote engines consult.
    pub fn global() -> &'static KernelRegistry {
        static GLOBAL: OnceLock<KernelRegistry> = OnceLock::new();
        GLOBAL.get_or_init(KernelRegistry::new)
    }

    /// Registers a parameterized kernel type.
    pub fn register<K: PortableKernel>(&self) {
        let factory: Factory = Arc::new(|params: &[u8]| {
            postcard::from_bytes::<K>(params)
                .map(|k| Arc::new(Portable(k)) as Arc<dyn Kernel>)
                .map_err(|e| e.to_string())
        });
        self.factories.write().unwrap_or_else(|p| p.into_inner()).insert(K::ID.to_string(), factory);
    }

    /// Registers one kernel instance that takes no parameters, under its spec's id.
    ///
    /// # Panics
    /// If the kernel is not portable (has no spec): that is a programming error at start-up.
    pub fn register_instance(&self, kernel: Arc<dyn Kernel>) {
        let id = kernel.spec().expect("register_instance needs a portable kernel (call .portable(id))").id;
        let factory: Factory = Arc::new(move |_params: &[u8]| Ok(Arc::clone(&kernel)));
        self.factories.write().unwrap_or_else(|p| p.into_inner()).insert(id, factory);
    }

    /// Registers a constructor for kernels whose parameters need custom decoding (kernels that
    /// are not one serde type).
    pub fn register_factory(
        &self,
        id: &str,
        factory: impl Fn(&[u8]) -> Result<Arc<dyn Kernel>, String> + Send + Sync + 'static,
    ) {
        self.factories.write().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), Arc::new(factory));
    }

    /// Whether `id` is registered.
    pub fn contains(&self, id: &str) -> bool {
        self.factories.read().unwrap_or_else(|p| p.into_inner()).contains_key(id)
    }

    /// Rebuilds a kernel from its spec.
    ///
    /// # Errors
    /// [`ResolveError`] when the id is unknown or the parameters do not decode.
    pub fn resolve(&self, spec: &KernelSpec) -> Result<Arc<dyn Kernel>, ResolveError> {
        if spec.id == crate::fuse::FUSED_KERNEL_ID {
            return crate::fuse::FusedKernel::from_params(&spec.params, self)
                .map(|k| Arc::new(k) as Arc<dyn Kernel>)
                .map_err(|message| ResolveError::BadParams { id: spec.id.clone(), message });
        }
        let factory = self
            .factories
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&spec.id)
            .cloned()
            .ok_or_else(|| ResolveError::Unknown(spec.id.clone()))?;
        factory(&spec.params).map_err(|message| ResolveError::BadParams { id: spec.id.clone(), message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arity_and_type_errors_are_reported() {
        let add = func2("add", |a: &i64, b: &i64| a + b);
        assert_eq!(add.call(&[Value::new(1i64)]).unwrap_err(), TaskError::Arity { expected: 2, found: 1 });
        match add.call(&[Value::new(1i64), Value::new(1.0f64)]).unwrap_err() {
            TaskError::TypeMismatch { position: 1, expected: "i64", found: "f64" } => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn closures_are_not_portable_until_given_an_id() {
        let inc = func1("inc", |x: &i64| x + 1);
        assert!(inc.spec().is_none());
        let inc = inc.portable("test.inc");
        assert_eq!(inc.spec().unwrap().id, "test.inc");
        let registry = KernelRegistry::new();
        registry.register_instance(Arc::new(inc));
        let k = registry.resolve(&KernelSpec { id: "test.inc".into(), params: vec![] }).unwrap();
        assert_eq!(*k.call(&[Value::new(1i64)]).unwrap().downcast_ref::<i64>().unwrap(), 2);
    }

    #[test]
    fn unknown_kernel_error_says_how_to_register() {
        let err = KernelRegistry::new().resolve(&KernelSpec { id: "nope".into(), params: vec![] }).err().unwrap();
        assert!(err.to_string().contains("register"));
    }
}
