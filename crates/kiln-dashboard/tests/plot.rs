//! Heat maps render to PNG files that decode at the size asked, with the title, both axes and
//! the colour bar drawn in their margins and the values' colours where the values are.

use kiln_dashboard::plot::{HeatMap, Palette, PlotError};

const WIDTH: u32 = 480;
const HEIGHT: u32 = 300;

/// A decoded RGB PNG.
struct Decoded {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Decoded {
    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Pixels in the rectangle that are not the white background.
    fn inked(&self, xs: std::ops::Range<u32>, ys: std::ops::Range<u32>) -> usize {
        ys.flat_map(|y| xs.clone().map(move |x| (x, y))).filter(|&(x, y)| self.at(x, y) != [255, 255, 255]).count()
    }
}

fn decode(path: &std::path::Path) -> Decoded {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    pixels.truncate(info.buffer_size());
    Decoded { width: info.width, height: info.height, pixels }
}

/// A field that grows from west (-1) to east (+1), the same on every row.
fn gradient(rows: usize, cols: usize) -> Vec<f64> {
    (0..rows).flat_map(|_| (0..cols).map(move |c| -1.0 + 2.0 * c as f64 / (cols - 1) as f64)).collect()
}

#[test]
fn a_heat_map_has_title_axes_colour_bar_and_its_values() {
    let dir = std::env::temp_dir().join(format!("kiln-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("map.png");
    let (rows, cols) = (20, 40);
    HeatMap::new("Day minus night", "K")
        .x_axis("longitude (°E)", 0.0, 360.0)
        .y_axis("latitude (°N)", -90.0, 90.0)
        .palette(Palette::Diverging)
        .size(WIDTH, HEIGHT)
        .write_png(&path, &gradient(rows, cols), rows, cols)
        .unwrap();
    let png = decode(&path);
    assert_eq!((png.width, png.height), (WIDTH, HEIGHT));

    // Title across the top, tick labels and axis names left of and below the map, the colour
    // bar with its ticks and unit on the right: each margin carries ink.
    assert!(png.inked(100..380, 0..26) > 100, "no title");
    assert!(png.inked(0..60, 60..220) > 100, "no y axis labels");
    assert!(png.inked(100..330, HEIGHT - 40..HEIGHT) > 100, "no x axis labels");
    assert!(png.inked(WIDTH - 80..WIDTH, 60..220) > 100, "no colour bar labels");

    // The map: blue at the west edge, red at the east edge, near white in the middle.
    let mid = HEIGHT / 2;
    let row: Vec<[u8; 3]> = (0..WIDTH - 110).map(|x| png.at(x, mid)).collect();
    let bluest = row.iter().position(|p| p[2] > 150 && p[0] < 60).expect("no blue cell in the map's middle row");
    let reddest = row.iter().rposition(|p| p[0] > 150 && p[2] < 60).expect("no red cell in the map's middle row");
    assert!(bluest < reddest && bluest < 120 && reddest > 300, "{bluest} {reddest}");
    let centre = row[(bluest + reddest) / 2];
    assert!(centre.iter().all(|&c| c > 200), "{centre:?}");

    // The colour bar: red at its top (the highest value), blue at its bottom.
    let bar: Vec<(u32, [u8; 3])> = (40..HEIGHT - 40).map(|y| (y, png.at(WIDTH - 100, y))).collect();
    let top = bar.iter().find(|(_, p)| *p != [255, 255, 255] && *p != [0, 0, 0]).unwrap().1;
    let bottom = bar.iter().rev().find(|(_, p)| *p != [255, 255, 255] && *p != [0, 0, 0]).unwrap().1;
    assert!(top[0] > 150 && top[2] < 80, "bar top {top:?}");
    assert!(bottom[2] > 150 && bottom[0] < 80, "bar bottom {bottom:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_values_are_grey_and_a_descending_axis_keeps_north_up() {
    // Rows from north (first) to south: the first row's value must be drawn at the top.
    let (rows, cols) = (4, 4);
    let mut values = vec![0.0; rows * cols];
    values[..cols].fill(10.0);
    values[cols * 2] = f64::NAN;
    let image = HeatMap::new("north first", "m")
        .y_axis("latitude", 60.0, -60.0)
        .size(WIDTH, HEIGHT)
        .render(&values, rows, cols)
        .unwrap();
    let at = |x: u32, y: u32| {
        let i = (y as usize * WIDTH as usize + x as usize) * 3;
        [image.pixels[i], image.pixels[i + 1], image.pixels[i + 2]]
    };
    let column: Vec<[u8; 3]> = (0..HEIGHT).map(|y| at(150, y)).collect();
    let yellow = column.iter().position(|p| p[0] > 200 && p[1] > 200 && p[2] < 100).expect("the high row");
    let purple = column.iter().position(|p| p[0] < 100 && p[1] < 30 && p[2] > 60).expect("the low rows");
    assert!(yellow < purple, "the first row (north, highest value) is at the top: {yellow} {purple}");
    assert!((0..WIDTH).any(|x| (0..HEIGHT).any(|y| at(x, y) == [160, 160, 160])), "NaN is grey");
}

#[test]
fn bad_grids_and_sizes_are_clear_errors() {
    let map = HeatMap::new("t", "K").size(WIDTH, HEIGHT);
    let shape = map.render(&[1.0; 5], 2, 3).unwrap_err();
    assert!(matches!(shape, PlotError::Shape { len: 5, rows: 2, cols: 3, .. }), "{shape}");
    assert!(shape.to_string().contains("5 values for a 2 x 3 grid"), "{shape}");
    let small = HeatMap::new("t", "K").size(100, 50).render(&[1.0], 1, 1).unwrap_err();
    assert!(small.to_string().contains("too small"), "{small}");
    let flat = HeatMap::new("t", "K").x_axis("x", 3.0, 3.0).size(WIDTH, HEIGHT).render(&[1.0], 1, 1).unwrap_err();
    assert!(flat.to_string().contains("x axis runs from 3 to 3"), "{flat}");
    let unwritable = map.write_png("/nonexistent-dir/map.png", &[1.0; 6], 2, 3).unwrap_err();
    assert!(unwritable.to_string().contains("/nonexistent-dir/map.png"), "{unwritable}");
    // A field of NaN or a constant still draws.
    assert!(map.render(&[f64::NAN; 6], 2, 3).is_ok());
    assert!(map.render(&[2.0; 6], 2, 3).is_ok());
}
