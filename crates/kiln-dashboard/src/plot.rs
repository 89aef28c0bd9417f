//! Heat maps of 2-d fields as PNG images with a title, labelled axes and a colour bar with its
//! unit: what the examples (the meteorology day-night difference, the seasonal climatology) write
//! for people to look at.
//!
//! Drawn with plotters' bitmap backend into an RGB buffer and encoded with `png`, so no image
//! library is pulled in. Text needs a font that is the same on every machine: a subset of DejaVu
//! Sans (printable ASCII and ° ² µ × – −, 14 KB, `assets/fonts/LICENSE-DejaVu`) is compiled in and
//! registered with plotters once.
//!
//! # Examples
//! ```no_run
//! use kiln_dashboard::plot::{HeatMap, Palette};
//!
//! // Two rows (south, north) by three columns (west to east).
//! let values = [1.0, 2.0, 3.0, -1.0, 0.0, 1.0];
//! HeatMap::new("Day minus night", "K")
//!     .x_axis("longitude (°E)", 0.0, 360.0)
//!     .y_axis("latitude (°N)", -90.0, 90.0)
//!     .palette(Palette::Diverging)
//!     .write_png("map.png", &values, 2, 3)?;
//! # Ok::<(), kiln_dashboard::plot::PlotError>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");
/// The family name the font is registered under.
const FAMILY: &str = "sans-serif";
/// Width of the colour bar's strip and of the room for its tick labels and unit.
const BAR_STRIP: u32 = 22;
const BAR_AREA: u32 = 110;
/// Colour of cells without a value (NaN).
const MISSING: RGBColor = RGBColor(160, 160, 160);

/// Why a heat map could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The values do not fill the grid they were said to form.
    #[error("heat map {title:?}: {len} values for a {rows} x {cols} grid")]
    Shape {
        /// The map's title.
        title: String,
        /// Number of values given.
        len: usize,
        /// Rows said.
        rows: usize,
        /// Columns said.
        cols: usize,
    },
    /// An image too small for the title, axes and colour bar, or an empty axis range.
    #[error("heat map {title:?}: {reason}")]
    Layout {
        /// The map's title.
        title: String,
        /// What is wrong.
        reason: String,
    },
    /// The drawing backend failed.
    #[error("heat map {title:?}: drawing failed: {message}")]
    Draw {
        /// The map's title.
        title: String,
        /// The backend's message.
        message: String,
    },
    /// The PNG file could not be written.
    #[error("cannot write heat map {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

/// How values map to colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    /// Blue through white to red, centred on zero (differences, anomalies).
    Diverging,
    /// Dark blue through green to yellow (magnitudes: temperatures, heights).
    Sequential,
}

impl Palette {
    /// The colour of `t` in [0, 1] along the palette.
    pub fn color(self, t: f64) -> RGBColor {
        let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.5 };
        let stops: &[(f64, [f64; 3])] = match self {
            Palette::Diverging => {
                &[(0.0, [33.0, 102.0, 172.0]), (0.5, [247.0, 247.0, 247.0]), (1.0, [178.0, 24.0, 43.0])]
            }
            Palette::Sequential => &[
                (0.0, [68.0, 1.0, 84.0]),
                (0.25, [59.0, 82.0, 139.0]),
                (0.5, [33.0, 145.0, 140.0]),
                (0.75, [94.0, 201.0, 98.0]),
                (1.0, [253.0, 231.0, 37.0]),
            ],
        };
        let i = stops.iter().rposition(|(at, _)| *at <= t).unwrap_or(0).min(stops.len() - 2);
        let ((a, ca), (b, cb)) = (stops[i], stops[i + 1]);
        let f = (t - a) / (b - a);
        let mix = |k: usize| (ca[k] + (cb[k] - ca[k]) * f).round() as u8;
        RGBColor(mix(0), mix(1), mix(2))
    }
}

/// An RGB image in memory: rows top to bottom, three bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

/// A heat map's description: title, axes, colour bar and size. Build it, then
/// [`render`](HeatMap::render) or [`write_png`](HeatMap::write_png) a grid of values.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMap {
    title: String,
    unit: String,
    x_label: String,
    x_range: (f64, f64),
    y_label: String,
    y_range: (f64, f64),
    palette: Palette,
    limits: Option<(f64, f64)>,
    size: (u32, u32),
}

impl HeatMap {
    /// A heat map titled `title` whose colour bar is labelled with `unit`; axes from 0 to 1
    /// until set, a sequential palette, 1000 x 560 pixels.
    pub fn new(title: &str, unit: &str) -> HeatMap {
        HeatMap {
            title: title.to_string(),
            unit: unit.to_string(),
            x_label: String::new(),
            x_range: (0.0, 1.0),
            y_label: String::new(),
            y_range: (0.0, 1.0),
            palette: Palette::Sequential,
            limits: None,
            size: (1000, 560),
        }
    }

    /// The map's title (error messages name the map by it).
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The horizontal axis: its label and the coordinates of the first and last column.
    pub fn x_axis(mut self, label: &str, first: f64, last: f64) -> HeatMap {
        self.x_label = label.to_string();
        self.x_range = (first, last);
        self
    }

    /// The vertical axis: its label and the coordinates of the first and last row (a first row
    /// below the last is drawn at the bottom, whichever order the coordinates run).
    pub fn y_axis(mut self, label: &str, first: f64, last: f64) -> HeatMap {
        self.y_label = label.to_string();
        self.y_range = (first, last);
        self
    }

    /// The palette (default [`Palette::Sequential`]).
    pub fn palette(mut self, palette: Palette) -> HeatMap {
        self.palette = palette;
        self
    }

    /// The values at the two ends of the colour bar (default: the data's range, made symmetric
    /// around zero for [`Palette::Diverging`]).
    pub fn limits(mut self, low: f64, high: f64) -> HeatMap {
        self.limits = Some((low, high));
        self
    }

    /// The image's size in pixels (default 1000 x 560).
    pub fn size(mut self, width: u32, height: u32) -> HeatMap {
        self.size = (width, height);
        self
    }

    fn layout(&self, reason: impl Into<String>) -> PlotError {
        PlotError::Layout { title: self.title.clone(), reason: reason.into() }
    }

    fn draw_error(&self, e: impl std::fmt::Display) -> PlotError {
        PlotError::Draw { title: self.title.clone(), message: e.to_string() }
    }

    /// The colour bar's ends for `values`.
    fn value_range(&self, values: &[f64]) -> (f64, f64) {
        if let Some(limits) = self.limits {
            return limits;
        }
        let (lo, hi) = values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if !lo.is_finite() {
            return (-1.0, 1.0);
        }
        let (lo, hi) = match self.palette {
            Palette::Diverging => {
                let m = lo.abs().max(hi.abs());
                (-m, m)
            }
            Palette::Sequential => (lo, hi),
        };
        // A constant field still needs a bar of some height.
        if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) }
    }

    /// Draws `values` (`rows` x `cols`, row-major; row 0 at the first y coordinate, column 0 at
    /// the first x coordinate) into an image.
    ///
    /// # Errors
    /// A number of values other than `rows * cols`, an empty grid, empty or non-finite axis or
    /// colour ranges, an image too small for its margins, or a drawing failure.
    pub fn render(&self, values: &[f64], rows: usize, cols: usize) -> Result<RgbImage, PlotError> {
        if values.len() != rows.saturating_mul(cols) || rows == 0 || cols == 0 {
            return Err(PlotError::Shape { title: self.title.clone(), len: values.len(), rows, cols });
        }
        let (width, height) = self.size;
        if width < BAR_AREA + 200 || height < 160 {
            return Err(
                self.layout(format!("{width} x {height} pixels is too small (at least {} x 160)", BAR_AREA + 200))
            );
        }
        for (name, (a, b)) in [("x", self.x_range), ("y", self.y_range)] {
            if !(a.is_finite() && b.is_finite()) || a == b {
                return Err(self.layout(format!("the {name} axis runs from {a} to {b}")));
            }
        }
        let (vmin, vmax) = self.value_range(values);
        if !(vmin.is_finite() && vmax.is_finite() && vmin < vmax) {
            return Err(self.layout(format!("colour bar limits {vmin} to {vmax}")));
        }
        if !register_font_once() {
            return Err(self.draw_error("the built-in font could not be loaded"));
        }

        let mut pixels = vec![255u8; width as usize * height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| self.draw_error(e))?;
            let root = root.titled(&self.title, (FAMILY, 22).into_font()).map_err(|e| self.draw_error(e))?;
            let (map_area, bar_area) = root.split_horizontally(width - BAR_AREA);
            self.draw_map(&map_area, values, rows, cols, (vmin, vmax))?;
            self.draw_bar(&bar_area, (vmin, vmax))?;
            root.present().map_err(|e| self.draw_error(e))?;
        }
        Ok(RgbImage { width, height, pixels })
    }

    fn draw_map(
        &self,
        area: &DrawingArea<BitMapBackend<'_>, Shift>,
        values: &[f64],
        rows: usize,
        cols: usize,
        (vmin, vmax): (f64, f64),
    ) -> Result<(), PlotError> {
        let sorted = |(a, b): (f64, f64)| if a < b { a..b } else { b..a };
        let mut chart = ChartBuilder::on(area)
            .margin(8)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(sorted(self.x_range), sorted(self.y_range))
            .map_err(|e| self.draw_error(e))?;
        let label_font = (FAMILY, 14).into_font();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(label_font.clone())
            .axis_desc_style((FAMILY, 15).into_font())
            .x_labels(9)
            .y_labels(7)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(|e| self.draw_error(e))?;
        let plot = chart.plotting_area();
        let (pw, ph) = plot.dim_in_pixel();
        let canvas = plot.strip_coord_spec();
        let (xs, ys) = (self.x_range, self.y_range);
        let (xlo, xhi) = (xs.0.min(xs.1), xs.0.max(xs.1));
        let (ylo, yhi) = (ys.0.min(ys.1), ys.0.max(ys.1));
        let index = |coord: f64, (first, last): (f64, f64), n: usize| -> usize {
            let f = (coord - first) / (last - first);
            ((f * n as f64).floor().max(0.0) as usize).min(n - 1)
        };
        for j in 0..ph {
            // Pixel rows run downward; the y axis upward.
            let y = yhi - (f64::from(j) + 0.5) / f64::from(ph) * (yhi - ylo);
            let row = index(y, ys, rows);
            for i in 0..pw {
                let x = xlo + (f64::from(i) + 0.5) / f64::from(pw) * (xhi - xlo);
                let v = values[row * cols + index(x, xs, cols)];
                let color = if v.is_nan() { MISSING } else { self.palette.color((v - vmin) / (vmax - vmin)) };
                canvas.draw_pixel((i as i32, j as i32), &color).map_err(|e| self.draw_error(e))?;
            }
        }
        Ok(())
    }

    fn draw_bar(
        &self,
        area: &DrawingArea<BitMapBackend<'_>, Shift>,
        (vmin, vmax): (f64, f64),
    ) -> Result<(), PlotError> {
        // Leave the map's bottom label room so the bar spans the map's height.
        let mut chart = ChartBuilder::on(area)
            .margin_top(8)
            .margin_bottom(8 + 44)
            .margin_left(4)
            .margin_right(BAR_AREA - BAR_STRIP - 4 - 62)
            .y_label_area_size(0)
            .right_y_label_area_size(62)
            .build_cartesian_2d(0.0..1.0, vmin..vmax)
            .map_err(|e| self.draw_error(e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            // Tick marks keep the labels off the bar's edge.
            .set_tick_mark_size(LabelAreaPosition::Right, 5)
            .y_desc(&self.unit)
            .label_style((FAMILY, 13).into_font())
            .axis_desc_style((FAMILY, 15).into_font())
            .y_labels(7)
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(|e| self.draw_error(e))?;
        let plot = chart.plotting_area();
        let (pw, ph) = plot.dim_in_pixel();
        let canvas = plot.strip_coord_spec();
        for j in 0..ph {
            let t = 1.0 - (f64::from(j) + 0.5) / f64::from(ph);
            let color = self.palette.color(t);
            for i in 0..pw {
                canvas.draw_pixel((i as i32, j as i32), &color).map_err(|e| self.draw_error(e))?;
            }
        }
        canvas
            .draw(&Rectangle::new([(0, 0), (pw as i32 - 1, ph as i32 - 1)], BLACK.stroke_width(1)))
            .map_err(|e| self.draw_error(e))?;
        Ok(())
    }

    /// Draws `values` (see [`render`](HeatMap::render)) and writes the image as a PNG file.
    ///
    /// # Errors
    /// Those of [`render`](HeatMap::render); a file that cannot be created or written (naming
    /// it).
    pub fn write_png(&self, path: impl AsRef<Path>, values: &[f64], rows: usize, cols: usize) -> Result<(), PlotError> {
        let image = self.render(values, rows, cols)?;
        let path = path.as_ref();
        let failed = |e: &dyn std::fmt::Display| PlotError::Write { path: path.to_path_buf(), message: e.to_string() };
        let file = std::fs::File::create(path).map_err(|e| failed(&e))?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), image.width, image.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| failed(&e))?;
        writer.write_image_data(&image.pixels).map_err(|e| failed(&e))?;
        writer.finish().map_err(|e| failed(&e))
    }
}

/// Registers the built-in font with plotters (once per process); whether it is available.
pub(crate) fn register_font_once() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok())
}

/// A tick label: integers without decimals, others with as few as read well.
fn tick(v: f64) -> String {
    let v = if v == 0.0 { 0.0 } else { v };
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round())
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
