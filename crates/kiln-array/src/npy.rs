//! NumPy's `.npy` format: read and write single arrays (the format golden fixtures use, and a
//! simple way to move arrays between kiln and NumPy).
//!
//! Supported: little-endian `bool`, `int32`, `int64`, `float32`, `float64`, C or Fortran order,
//! format versions 1.0–3.0.

use std::io::{Read, Write};
use std::path::Path;

use ndarray::{ArrayD, IxDyn, ShapeBuilder};

use crate::block::{Block, DType, Element};
use crate::error::ArrayError;

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "|b1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
    }
}

fn bad(path: &str, msg: impl std::fmt::Display) -> ArrayError {
    ArrayError::Io(format!("{path}: {msg}"))
}

/// Parses the header dictionary: `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(h: &str, path: &str) -> Result<(DType, bool, Vec<usize>), ArrayError> {
    let field = |name: &str| -> Result<&str, ArrayError> {
        let key = format!("'{name}':");
        let at = h.find(&key).ok_or_else(|| bad(path, format!("header has no {name}")))?;
        Ok(h[at + key.len()..].trim_start())
    };
    let d = field("descr")?;
    let d = d.strip_prefix('\'').and_then(|r| r.split('\'').next()).ok_or_else(|| bad(path, "bad descr"))?;
    let dtype = match d {
        "|b1" => DType::Bool,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        other => {
            return Err(bad(
                path,
                format!("unsupported dtype {other:?} (kiln reads bool, int32, int64, float32, float64, little-endian)"),
            ));
        }
    };
    let fortran = field("fortran_order")?.starts_with("True");
    let s = field("shape")?;
    let inner = s.strip_prefix('(').and_then(|r| r.split(')').next()).ok_or_else(|| bad(path, "bad shape"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<usize>().map_err(|e| bad(path, format!("bad shape entry {t:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dtype, fortran, shape))
}

/// Reads an `.npy` file into a [`Block`] of its element type.
///
/// # Errors
/// [`ArrayError::Io`] naming the file for a missing file, a bad header, an unsupported dtype or
/// truncated data.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Block, ArrayError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| bad(&name, e))?;
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(&name, "not an .npy file"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(&name, format!("unsupported .npy version {v}"))),
    };
    let header = bytes.get(start..start + header_len).ok_or_else(|| bad(&name, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|e| bad(&name, e))?;
    let (dtype, fortran, shape) = parse_header(header, &name)?;
    let data = &bytes[start + header_len..];
    let count: usize = shape.iter().product();
    let need = count * dtype.itemsize();
    if data.len() < need {
        return Err(bad(&name, format!("data has {} bytes, the header says {need}", data.len())));
    }
    let data = &data[..need];
    let sh = if fortran { IxDyn(&shape).f() } else { IxDyn(&shape).into_shape_with_order() };
    macro_rules! build {
        ($ty:ty, $variant:ident, $size:expr) => {{
            let v: Vec<$ty> =
                data.chunks_exact($size).map(|c| <$ty>::from_le_bytes(c.try_into().expect("exact chunk"))).collect();
            Block::$variant(ArrayD::from_shape_vec(sh, v).map_err(|e| bad(&name, e))?)
        }};
    }
    Ok(match dtype {
        DType::Bool => {
            Block::Bool(ArrayD::from_shape_vec(sh, data.iter().map(|&b| b != 0).collect()).map_err(|e| bad(&name, e))?)
        }
        DType::I32 => build!(i32, I32, 4),
        DType::I64 => build!(i64, I64, 8),
        DType::F32 => build!(f32, F32, 4),
        DType::F64 => build!(f64, F64, 8),
    })
}

/// Reads an `.npy` file as an array of `T`.
///
/// # Errors
/// As [`read_npy`], or when the file's dtype is not `T`.
pub fn read_npy_as<T: Element>(path: impl AsRef<Path>) -> Result<ArrayD<T>, ArrayError> {
    let path = path.as_ref();
    let block = read_npy(path)?;
    let found = block.dtype();
    T::from_block(block).ok_or_else(|| bad(&path.display().to_string(), format!("holds {found}, not {}", T::DTYPE)))
}

/// Writes an array as an `.npy` file (version 1.0, C order).
///
/// # Errors
/// [`ArrayError::Io`] when the file cannot be written.
pub fn write_npy<T: Element>(path: impl AsRef<Path>, array: &ArrayD<T>) -> Result<(), ArrayError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let shape = match array.shape() {
        [one] => format!("({one},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", descr(T::DTYPE));
    // Pad so the data starts at a multiple of 64 bytes, ending the header with a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + array.len() * T::DTYPE.itemsize());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    let block = T::into_block(array.as_standard_layout().into_owned());
    match &block {
        Block::Bool(a) => out.extend(a.iter().map(|&b| b as u8)),
        Block::I32(a) => a.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Block::I64(a) => a.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Block::F32(a) => a.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Block::F64(a) => a.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
    }
    std::fs::File::create(path).and_then(|mut f| f.write_all(&out)).map_err(|e| bad(&name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

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
