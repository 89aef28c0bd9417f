//! Computing an array built from invalid operations reports what is invalid, as a typed error.

use kiln_array::{ArrayError, Reduce, ones};
use kiln_graph::{Collection, ComputeError, GraphError};
use kiln_local::LocalScheduler;

#[test]
fn computing_an_array_with_an_axis_out_of_range_reports_the_array_error() {
    let bad = ones::<f64>(&[4, 4], 2).sum_with(&Reduce::axis(5));
    let err = bad.compute_on(&LocalScheduler::new()).unwrap_err();
    match &err {
        ComputeError::InvalidCollection { collection, cause } => {
            assert_eq!(*collection, "array");
            assert_eq!(cause.downcast_ref::<ArrayError>(), Some(&ArrayError::Axis { axis: 5, ndim: 2 }));
        }
        other => panic!("expected an invalid collection, got {other:?}"),
    }
    assert_eq!(err.to_string(), "invalid array: axis 5 is out of bounds for an array of dimension 2");
}

#[test]
fn an_invalid_operand_poisons_every_array_built_from_it() {
    let bad = &ones::<f64>(&[3], 3) + &ones::<f64>(&[4], 2);
    let downstream = (&bad * 2.0).sum();
    let err = downstream.scalar().compute_on(&LocalScheduler::new()).unwrap_err();
    assert!(matches!(&err, ComputeError::InvalidCollection { collection: "array", .. }), "{err:?}");
    assert!(err.to_string().starts_with("invalid array: shape mismatch"), "{err}");
}

#[test]
fn the_graph_of_an_invalid_array_is_an_invalid_collection_error() {
    let bad = ones::<f64>(&[4], 2).sum_with(&Reduce::axis(-3));
    let err = kiln_graph::collection::graph_of(&bad).unwrap_err();
    assert!(matches!(err, GraphError::InvalidCollection { collection: "array", .. }), "{err:?}");
}
