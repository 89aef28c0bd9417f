//! Operators: `&a + &b`, `&a * 2.0`, `1.0 - &a`, `-&a`, with NumPy broadcasting. Division of
//! integer arrays is true division (float64), as in NumPy.

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::array::Array;
use crate::block::Element;
use crate::chunk::expr::{BinaryOp, UnaryOp};

macro_rules! array_op {
    ($trait:ident, $method:ident, $op:expr, $out:ty) => {
        impl<T: Element> $trait<&Array<T>> for &Array<T> {
            type Output = Array<$out>;
            fn $method(self, rhs: &Array<T>) -> Array<$out> {
                self.binary($op, rhs, false)
            }
        }
        impl<T: Element> $trait<Array<T>> for &Array<T> {
            type Output = Array<$out>;
            fn $method(self, rhs: Array<T>) -> Array<$out> {
                self.binary($op, &rhs, false)
            }
        }
        impl<T: Element> $trait<&Array<T>> for Array<T> {
            type Output = Array<$out>;
            fn $method(self, rhs: &Array<T>) -> Array<$out> {
                (&self).binary($op, rhs, false)
            }
        }
        impl<T: Element> $trait<Array<T>> for Array<T> {
            type Output = Array<$out>;
            fn $method(self, rhs: Array<T>) -> Array<$out> {
                (&self).binary($op, &rhs, false)
            }
        }
    };
}

array_op!(Add, add, BinaryOp::Add, T);
array_op!(Sub, sub, BinaryOp::Sub, T);
array_op!(Mul, mul, BinaryOp::Mul, T);
array_op!(Div, div, BinaryOp::Div, T::Float);

macro_rules! scalar_ops {
    ($($t:ty),*) => {$(
        scalar_ops!(@one $t, Add, add, BinaryOp::Add, $t);
        scalar_ops!(@one $t, Sub, sub, BinaryOp::Sub, $t);
        scalar_ops!(@one $t, Mul, mul, BinaryOp::Mul, $t);
        scalar_ops!(@one $t, Div, div, BinaryOp::Div, <$t as Element>::Float);
    )*};
    (@one $t:ty, $trait:ident, $method:ident, $op:expr, $out:ty) => {
        impl $trait<$t> for &Array<$t> {
            type Output = Array<$out>;
            fn $method(self, rhs: $t) -> Array<$out> {
                self.binary($op, rhs, false)
            }
        }
        impl $trait<$t> for Array<$t> {
            type Output = Array<$out>;
            fn $method(self, rhs: $t) -> Array<$out> {
                (&self).binary($op, rhs, false)
            }
        }
        impl $trait<&Array<$t>> for $t {
            type Output = Array<$out>;
            fn $method(self, rhs: &Array<$t>) -> Array<$out> {
                rhs.binary($op, self, true)
            }
        }
        impl $trait<Array<$t>> for $t {
            type Output = Array<$out>;
            fn $method(self, rhs: Array<$t>) -> Array<$out> {
                (&rhs).binary($op, self, true)
            }
        }
    };
}
scalar_ops!(i32, i64, f32, f64);

impl<T: Element> Neg for &Array<T> {
    type Output = Array<T>;
    fn neg(self) -> Array<T> {
        self.map_unary(UnaryOp::Neg)
    }
}

impl<T: Element> Neg for Array<T> {
    type Output = Array<T>;
    fn neg(self) -> Array<T> {
        self.map_unary(UnaryOp::Neg)
    }
}

impl Array<bool> {
    /// Elementwise logical and.
    pub fn and(&self, other: &Array<bool>) -> Array<bool> {
        self.binary(BinaryOp::And, other, false)
    }
    /// Elementwise logical or.
    pub fn or(&self, other: &Array<bool>) -> Array<bool> {
        self.binary(BinaryOp::Or, other, false)
    }
    /// Elementwise logical not.
    pub fn not(&self) -> Array<bool> {
        self.map_unary(UnaryOp::Not)
    }
}

/// `cond ? a : b` elementwise with broadcasting (NumPy's `where`).
pub fn where_<T: Element>(cond: &Array<bool>, a: &Array<T>, b: &Array<T>) -> Array<T> {
    use crate::lower::node::{MapFn, Operand};
    crate::array::elementwise(
        MapFn::Where,
        T::DTYPE,
        vec![Operand::Array(cond.node.clone()), Operand::Array(a.node.clone()), Operand::Array(b.node.clone())],
        "where".into(),
    )
}
