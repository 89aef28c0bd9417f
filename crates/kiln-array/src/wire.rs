//! Stable wire names for the enums inside portable kernel parameters.
//!
//! postcard, the parameter encoding, writes an enum variant as its index, so reordering a
//! declaration would silently change what a task sent to another process means. Operation
//! enums (`UnaryOp`, `BinaryOp`, `ReduceOp`, `DType`, ...) therefore travel by name: the
//! [`by_name!`] macro gives an enum a fixed name per variant and serde impls that use it. The
//! remaining structure (block expressions) is pinned by the `wire_format` test.

/// Implements `Serialize`/`Deserialize` for a fieldless enum through a fixed name per variant.
macro_rules! by_name {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// The variant's stable name on the wire.
            #[allow(dead_code)]
            pub(crate) fn wire_name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.wire_name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Names;
                impl serde::de::Visitor<'_> for Names {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("the name of a ", stringify!($ty)))
                    }
                    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<$ty, E> {
                        match name {
                            $($name => Ok($ty::$variant),)*
                            other => Err(E::unknown_variant(other, &[$($name),*])),
                        }
                    }
                }
                deserializer.deserialize_str(Names)
            }
        }
    };
}

pub(crate) use by_name;
