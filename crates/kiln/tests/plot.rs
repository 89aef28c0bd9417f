//! `kiln::plot`: heat maps of computed arrays through the facade.
#![cfg(feature = "plot")]

use kiln::array::random::RandomState;
use kiln::plot::{HeatMap, PlotError, WriteArrayPng};
use kiln::prelude::*;

fn map() -> HeatMap {
    HeatMap::new("test field", "K").x_axis("x", 0.0, 9.0).y_axis("y", 0.0, 5.0).size(400, 240)
}

#[test]
fn a_transposed_result_draws_like_its_row_major_copy() {
    let x = RandomState::new(3).random(&[10, 6], [4, 3]);
    // `t()` computes to a view with swapped strides: its memory order is not its row order.
    let field = x.t().compute().unwrap();
    assert_eq!(field.shape(), &[6, 10]);
    let row_major: Vec<f64> = field.iter().copied().collect();
    let drawn = map().render_array(&field).unwrap();
    let expected = map().render(&row_major, 6, 10).unwrap();
    assert_eq!((drawn.width, drawn.height), (400, 240));
    assert!(drawn.pixels == expected.pixels, "the array was not drawn in row order");

    // Different values give a different picture, so the comparison above can fail.
    let other = (&x.t() * 2.0).compute().unwrap();
    assert!(map().render_array(&other).unwrap().pixels != drawn.pixels);
}

#[test]
fn the_png_file_is_written() {
    let dir = std::env::temp_dir().join(format!("kiln-plot-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("field.png");
    let field = RandomState::new(1).random(&[6, 10], [3, 5]).compute().unwrap();
    map().write_array_png(&path, &field).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cube_is_refused_with_its_shape() {
    let cube = RandomState::new(1).random(&[2, 3, 4], [2, 3, 4]).compute().unwrap();
    match map().render_array(&cube) {
        Err(e @ PlotError::Layout { .. }) => {
            let message = e.to_string();
            assert!(message.contains("test field") && message.contains("[2, 3, 4]"), "{message}");
        }
        other => panic!("expected a layout error, got {other:?}"),
    }
}
