//! Blocks read from a NetCDF variable (classic or NetCDF-4, through libnetcdf): one block is one
//! hyperslab, read as `f64` (the library converts packed integer and `f32` storage) and decoded
//! by the CF conventions as xarray decodes them: `_FillValue`/`missing_value` become NaN, then
//! `scale_factor` and `add_offset` apply.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use ndarray::ArrayD;
use netcdf::{Extent, Extents};

use crate::block::Block;
use crate::chunk::ChunkError;
use crate::error::ArrayError;

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> ArrayError {
    ArrayError::Io(format!("netcdf file {}: {e}", path.display()))
}

/// How stored numbers become values (the CF conventions' packing and missing data).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CfDecode {
    /// Stored values that mean "no data" (`_FillValue`, `missing_value`).
    pub(crate) missing: Vec<f64>,
    /// `scale_factor`, when packed.
    pub(crate) scale: Option<f64>,
    /// `add_offset`, when packed.
    pub(crate) offset: Option<f64>,
}

impl CfDecode {
    pub(crate) fn apply(&self, values: &mut ArrayD<f64>) {
        if self.missing.is_empty() && self.scale.is_none() && self.offset.is_none() {
            return;
        }
        let (scale, offset) = (self.scale.unwrap_or(1.0), self.offset.unwrap_or(0.0));
        values.mapv_inplace(|v| if self.missing.contains(&v) { f64::NAN } else { v * scale + offset });
    }
}

/// Opens the NetCDF file at `path`.
pub(crate) fn open(path: &Path) -> Result<netcdf::File, ArrayError> {
    if !path.exists() {
        return Err(io(path, "does not exist"));
    }
    netcdf::open(path).map_err(|e| io(path, format!("cannot be opened as NetCDF ({e})")))
}

/// The file, opened on first use (see `chunk::hdf5::opened`).
pub(crate) fn opened<'a>(
    cell: &'a OnceLock<Arc<netcdf::File>>,
    path: &Path,
) -> Result<&'a Arc<netcdf::File>, ChunkError> {
    if let Some(file) = cell.get() {
        return Ok(file);
    }
    let file = open(path).map_err(|e| ChunkError::msg(e.to_string()))?;
    Ok(cell.get_or_init(|| Arc::new(file)))
}

/// Reads `ranges` of `variable` as decoded `f64` values.
pub(crate) fn read_decoded(
    file: &netcdf::File,
    path: &Path,
    variable: &str,
    ranges: &[Range<u64>],
    decode: &CfDecode,
) -> Result<ArrayD<f64>, String> {
    let var =
        file.variable(variable).ok_or_else(|| format!("netcdf file {}: no variable {variable}", path.display()))?;
    let shape: Vec<usize> = ranges.iter().map(|r| (r.end - r.start) as usize).collect();
    if shape.contains(&0) {
        return Ok(ArrayD::zeros(ndarray::IxDyn(&shape)));
    }
    let extents = if ranges.is_empty() {
        Extents::from(())
    } else {
        Extents::from(ranges.iter().map(|r| Extent::from(r.start as usize..r.end as usize)).collect::<Vec<_>>())
    };
    let mut values = var
        .get::<f64, _>(extents)
        .map_err(|e| format!("reading netcdf file {}, variable {variable}: {e}", path.display()))?
        .into_shape_with_order(ndarray::IxDyn(&shape))
        .map_err(|e| format!("reading netcdf file {}, variable {variable}: {e}", path.display()))?;
    decode.apply(&mut values);
    Ok(values)
}

/// One block of a variable.
pub(crate) fn read_region(
    file: &netcdf::File,
    path: &Path,
    variable: &str,
    ranges: &[Range<u64>],
    decode: &CfDecode,
) -> Result<Block, ChunkError> {
    read_decoded(file, path, variable, ranges, decode).map(Block::F64).map_err(ChunkError::msg)
}

/// An exclusive lock held by one writer (thread or process) at a time (bounded wait). It is
/// taken on the file's directory, not the file: libnetcdf's HDF5 layer locks the file itself
/// when it opens it, and would fail against a lock of ours there.
fn lock_file(path: &Path) -> Result<std::fs::File, String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file = std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::chunk::writer_lock::lock_exclusive(file)
}

/// Writes `block` (decoded `f64` values) into `variable` of the NetCDF file at `path` at
/// `offset`; returns the written marker (a `true` block of `ndim` length-1 axes).
pub(crate) fn write_region(
    path: &Path,
    variable: &str,
    offset: &[u64],
    ndim: usize,
    block: Block,
) -> Result<Block, ChunkError> {
    let fail = |e: &dyn std::fmt::Display| {
        ChunkError::msg(format!("writing netcdf file {}, variable {variable}: {e}", path.display()))
    };
    let Block::F64(values) = block else {
        return Err(fail(&format!("expected f64 values, got {}", block.dtype())));
    };
    let _lock = lock_file(path).map_err(|e| fail(&e))?;
    let mut file = netcdf::append(path).map_err(|e| fail(&e))?;
    {
        let mut var = file.variable_mut(variable).ok_or_else(|| fail(&"the variable is not in the file"))?;
        let values = values.as_standard_layout();
        if !values.is_empty() {
            let extents: Vec<Extent> =
                offset.iter().zip(values.shape()).map(|(&o, &n)| Extent::from(o as usize..o as usize + n)).collect();
            var.put(values.view(), Extents::from(extents)).map_err(|e| fail(&e))?;
        }
    }
    file.close().map_err(|e| fail(&e))?;
    Ok(Block::Bool(ArrayD::from_elem(ndarray::IxDyn(&vec![1; ndim]), true)))
}
