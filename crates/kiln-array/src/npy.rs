//! NumPy's `.npy` format: read and write single arrays (the format golden fixtures use, and a
//! simple way to move arrays between kiln and NumPy). A directory of `.npy` files, one per
//! block, is [`crate::npy_blocks`].
//!
//! Supported: little-endian `bool`, `int32`, `int64`, `float32`, `float64`, C or Fortran order,
//! format versions 1.0–3.0.

use std::path::Path;

use ndarray::ArrayD;

use crate::block::{Block, Element};
use crate::chunk::ChunkError;
use crate::chunk::npy;
pub use crate::chunk::npy::NpyHeader;
use crate::error::ArrayError;

fn io(e: ChunkError) -> ArrayError {
    ArrayError::Io(e.0)
}

/// Reads only the header of an `.npy` file.
///
/// # Errors
/// [`ArrayError::Io`] naming the file for a missing file, a file that is not `.npy`, a bad
/// header or an unsupported dtype.
pub fn read_npy_header(path: impl AsRef<Path>) -> Result<NpyHeader, ArrayError> {
    npy::read_npy_header(path).map_err(io)
}

/// Reads an `.npy` file into a [`Block`] of its element type.
///
/// # Errors
/// [`ArrayError::Io`] naming the file for a missing file, a bad header, an unsupported dtype or
/// truncated data.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Block, ArrayError> {
    npy::read_npy(path).map_err(io)
}

/// Reads an `.npy` file as an array of `T`.
///
/// # Errors
/// As [`read_npy`], or when the file's dtype is not `T`.
pub fn read_npy_as<T: Element>(path: impl AsRef<Path>) -> Result<ArrayD<T>, ArrayError> {
    let path = path.as_ref();
    let block = read_npy(path)?;
    let found = block.dtype();
    T::from_block(block).ok_or_else(|| ArrayError::Io(format!("{}: holds {found}, not {}", path.display(), T::DTYPE)))
}

/// Writes an array as an `.npy` file (version 1.0, C order).
///
/// # Errors
/// [`ArrayError::Io`] when the file cannot be written.
pub fn write_npy<T: Element>(path: impl AsRef<Path>, array: &ArrayD<T>) -> Result<(), ArrayError> {
    npy::write_block(path.as_ref(), &T::into_block(array.as_standard_layout().into_owned())).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn roundtrip_and_errors() {
        let dir = std::env::temp_dir().join(format!("kiln-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] * 10 + i[1]) as f64 - 0.5);
        write_npy(dir.join("a.npy"), &a).unwrap();
        assert_eq!(read_npy_as::<f64>(dir.join("a.npy")).unwrap(), a);
        let b = ArrayD::from_shape_vec(IxDyn(&[2]), vec![true, false]).unwrap();
        write_npy(dir.join("b.npy"), &b).unwrap();
        assert_eq!(read_npy_as::<bool>(dir.join("b.npy")).unwrap(), b);
        assert!(read_npy_as::<i64>(dir.join("a.npy")).unwrap_err().to_string().contains("holds float64"));
        let missing = read_npy(dir.join("missing.npy")).unwrap_err().to_string();
        assert!(missing.contains("missing.npy"), "{missing}");
        std::fs::write(dir.join("junk.npy"), b"hello").unwrap();
        assert!(read_npy(dir.join("junk.npy")).unwrap_err().to_string().contains("not an .npy file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
