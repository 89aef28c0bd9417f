//! Values: task results shared by reference count and typed again at the edges.
//!
//! A task's result lives once in memory and every consumer holds a reference to it; it is
//! serialized only when it leaves the process (see [`crate::codec`]). Users get back a `T`,
//! never a `dyn Any`: [`Value::downcast_ref`] and friends fail with the expected and actual type
//! names instead of panicking.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

/// Object-safe view of a value: `Any` plus its type name for error messages.
trait AnyValue: Any + Send + Sync {
    fn type_name(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    /// One virtual call, where `as_any().type_id()` takes two: engines ask it of every result.
    fn value_type_id(&self) -> TypeId;
}

impl<T: Any + Send + Sync> AnyValue for T {
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn value_type_id(&self) -> TypeId {
        TypeId::of::<T>()
    }
}

/// A reference-counted, type-erased task result. Cloning is one atomic increment.
///
/// ```
/// use kiln_graph::Value;
/// let v = Value::new(41i64);
/// assert_eq!(*v.downcast_ref::<i64>().unwrap() + 1, 42);
/// let err = v.downcast_ref::<f64>().unwrap_err();
/// assert!(err.to_string().contains("expected f64"));
/// ```
#[derive(Clone)]
pub struct Value(Arc<dyn AnyValue>);

/// A value had another type than the one asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("type mismatch: expected {expected}, found {found}")]
pub struct TypeMismatch {
    /// The type that was asked for.
    pub expected: &'static str,
    /// The type the value has.
    pub found: &'static str,
}

impl Value {
    /// Wraps a value.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Value(Arc::new(value))
    }

    /// Wraps an existing `Arc` without copying the value.
    pub fn from_arc<T: Any + Send + Sync>(value: Arc<T>) -> Self {
        Value(value)
    }

    /// The name of the contained type, e.g. `"i64"`.
    pub fn type_name(&self) -> &'static str {
        (*self.0).type_name()
    }

    /// The `TypeId` of the contained type.
    #[inline]
    pub fn type_id(&self) -> TypeId {
        (*self.0).value_type_id()
    }

    /// Whether the value is a `T`.
    pub fn is<T: Any>(&self) -> bool {
        (*self.0).as_any().is::<T>()
    }

    /// Borrows the value as a `T`.
    ///
    /// # Errors
    /// [`TypeMismatch`] naming both types when the value is not a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Result<&T, TypeMismatch> {
        (*self.0).as_any().downcast_ref::<T>().ok_or_else(|| self.mismatch::<T>())
    }

    /// Takes the value as an `Arc<T>`.
    ///
    /// # Errors
    /// [`TypeMismatch`] when the value is not a `T`.
    pub fn downcast_arc<T: Any + Send + Sync>(self) -> Result<Arc<T>, TypeMismatch> {
        if !self.is::<T>() {
            return Err(self.mismatch::<T>());
        }
        let raw: *const dyn AnyValue = Arc::into_raw(self.0);
        // SAFETY: the type check above proves the allocation holds a `T`; casting the fat
        // pointer to a thin `*const T` keeps the same data address that `Arc::into_raw` gave.
        Ok(unsafe { Arc::from_raw(raw as *const T) })
    }

    /// Takes the value as an owned `T`: moved out when this is the only reference, cloned
    /// otherwise.
    ///
    /// # Errors
    /// [`TypeMismatch`] when the value is not a `T`.
    pub fn take<T: Any + Send + Sync + Clone>(self) -> Result<T, TypeMismatch> {
        let arc = self.downcast_arc::<T>()?;
        Ok(Arc::try_unwrap(arc).unwrap_or_else(|shared| (*shared).clone()))
    }

    /// How many references to this value exist (for tests and diagnostics).
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Whether two values share one allocation.
    pub fn ptr_eq(&self, other: &Value) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(&other.0))
    }

    fn mismatch<T: Any>(&self) -> TypeMismatch {
        TypeMismatch { expected: std::any::type_name::<T>(), found: self.type_name() }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value<{}>", self.type_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_moves_when_unique_and_clones_when_shared() {
        let v = Value::new(vec![1, 2, 3]);
        let w = v.clone();
        assert_eq!(v.take::<Vec<i32>>().unwrap(), vec![1, 2, 3]);
        assert_eq!(w.ref_count(), 1);
        assert_eq!(w.take::<Vec<i32>>().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn downcast_arc_checks_type() {
        let v = Value::new(1.5f64);
        assert!(v.clone().downcast_arc::<i64>().is_err());
        assert_eq!(*v.downcast_arc::<f64>().unwrap(), 1.5);
    }
}
