//! Typed ids: a worker's id cannot be passed where a client's is expected.
//!
//! The scheduler hands out small integers, one per accepted connection. On the wire an id is
//! its bare `u32` (`serde(transparent)`), so the newtypes cost nothing in bytes or time; in code
//! they keep worker, client and task-slot numbers from mixing. [`define_id!`] is exported so
//! other crates (the scheduler's task arena) declare their ids the same way.

use serde::{Deserialize, Serialize};

/// Declares a `Copy` newtype id over `u32` with `new`, `get`, ordering, hashing and a
/// `Display` that prints the bare number (so log lines read `worker 3`).
///
/// Extra attributes (`#[derive(Serialize)]`, `#[serde(transparent)]`, docs) are passed through.
///
/// # Examples
/// ```
/// kiln_protocol::define_id! {
///     /// A slot in some arena.
///     pub struct Slot;
/// }
/// let s = Slot::new(3);
/// assert_eq!(s.get(), 3);
/// assert_eq!(s.to_string(), "3");
/// ```
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $vis:vis struct $name:ident;) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis struct $name(u32);

        impl $name {
            /// The id with this number.
            #[inline]
            pub const fn new(raw: u32) -> Self {
                $name(raw)
            }

            /// The id's number.
            #[inline]
            pub const fn get(self) -> u32 {
                self.0
            }

            /// The id's number as an index (ids are dense in the arenas that use them).
            #[inline]
            pub const fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

define_id! {
    /// A worker's id, assigned by the scheduler when it registers (a worker that rejoins gets a
    /// new one).
    #[derive(Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct WorkerId;
}

define_id! {
    /// A client's id, assigned by the scheduler when it connects.
    #[derive(Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct ClientId;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_encode_as_their_bare_number() {
        let id = WorkerId::new(300);
        assert_eq!(postcard::to_allocvec(&id).unwrap(), postcard::to_allocvec(&300u32).unwrap());
        let back: ClientId = postcard::from_bytes(&postcard::to_allocvec(&7u32).unwrap()).unwrap();
        assert_eq!(back, ClientId::new(7));
    }
}
