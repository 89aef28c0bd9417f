//! The `.npy` format at the block level: headers, reading a file straight into a block's buffer,
//! writing a block. The user API is `crate::npy` and `crate::npy_blocks`.

use std::io::{Read, Write};
use std::path::Path;

use ndarray::{ArrayD, IxDyn, ShapeBuilder};

use super::ChunkError;
use crate::block::{Block, DType};

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

fn bad(path: &str, msg: impl std::fmt::Display) -> ChunkError {
    ChunkError(format!("{path}: {msg}"))
}

/// Parses the header dictionary: `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(h: &str, path: &str) -> Result<(DType, bool, Vec<usize>), ChunkError> {
    let field = |name: &str| -> Result<&str, ChunkError> {
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

/// What an `.npy` file's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// The element type.
    pub dtype: DType,
    /// Whether the data is in Fortran (column-major) order.
    pub fortran: bool,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Where the data starts in the file.
    pub data_offset: u64,
}

/// Reads only the header of an `.npy` file.
///
/// # Errors
/// [`ChunkError::Io`] naming the file for a missing file, a file that is not `.npy`, a bad
/// header or an unsupported dtype.
pub fn read_npy_header(path: impl AsRef<Path>) -> Result<NpyHeader, ChunkError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let (mut file, _) = open_source(path, &name)?;
    header_of(&mut file, &name)
}

/// The file at `path` (a local path, or a URL served by a registered [`kiln_storage::Storage`])
/// as a stream, and its size.
fn open_source(path: &Path, name: &str) -> Result<(Box<dyn Read + Send>, u64), ChunkError> {
    let text = path.to_string_lossy();
    match kiln_storage::scheme_of(&text) {
        None | Some("file") => {
            let file = std::fs::File::open(kiln_storage::local_path(&text)).map_err(|e| bad(name, e))?;
            let size = file.metadata().map_err(|e| bad(name, e))?.len();
            Ok((Box::new(file), size))
        }
        Some(_) => {
            let storage = kiln_storage::storage_for(&text).map_err(|e| ChunkError::msg(e.to_string()))?;
            let size = storage.size(&text).map_err(|e| ChunkError::msg(e.to_string()))?;
            let stream = storage.open(&text).map_err(|e| ChunkError::msg(e.to_string()))?;
            // Object streams arrive in small pieces; the header is read a few bytes at a time.
            Ok((Box::new(std::io::BufReader::with_capacity(1 << 20, stream)), size))
        }
    }
}

fn header_of(file: &mut dyn Read, name: &str) -> Result<NpyHeader, ChunkError> {
    let mut lead = [0u8; 12];
    let got = read_up_to(file, &mut lead).map_err(|e| bad(name, e))?;
    if got < 10 || &lead[..6] != MAGIC {
        return Err(bad(name, "not an .npy file"));
    }
    let (header_len, start) = match lead[6] {
        1 => (u16::from_le_bytes([lead[8], lead[9]]) as usize, 10),
        2 | 3 if got >= 12 => (u32::from_le_bytes([lead[8], lead[9], lead[10], lead[11]]) as usize, 12),
        v => return Err(bad(name, format!("unsupported .npy version {v}"))),
    };
    // A header is a short dictionary; a huge length means a corrupt file, not a big allocation.
    if header_len > 1 << 20 {
        return Err(bad(name, format!("header of {header_len} bytes (corrupt file?)")));
    }
    let mut header = vec![0u8; header_len];
    let already = got - start.min(got);
    header[..already.min(header_len)].copy_from_slice(&lead[start..start + already.min(header_len)]);
    if already < header_len {
        file.read_exact(&mut header[already..]).map_err(|_| bad(name, "truncated header"))?;
    }
    let header = std::str::from_utf8(&header).map_err(|e| bad(name, e))?;
    let (dtype, fortran, shape) = parse_header(header, name)?;
    Ok(NpyHeader { dtype, fortran, shape, data_offset: (start + header_len) as u64 })
}

fn read_up_to(file: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Reads an `.npy` file into a [`Block`] of its element type.
///
/// # Errors
/// [`ChunkError::Io`] naming the file for a missing file, a bad header, an unsupported dtype or
/// truncated data.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Block, ChunkError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let (mut file, size) = open_source(path, &name)?;
    let header = header_of(&mut file, &name)?;
    read_data(&mut file, size, &header, &name)
}

/// Reads the data after `header` (the file positioned at its start) straight into the block's
/// buffer: one copy from the page cache, no intermediate byte vector on little-endian hosts.
fn read_data(file: &mut dyn Read, size: u64, header: &NpyHeader, name: &str) -> Result<Block, ChunkError> {
    let count =
        header.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| bad(name, "shape overflows"))?;
    let need = count.checked_mul(header.dtype.itemsize()).ok_or_else(|| bad(name, "shape overflows"))?;
    let have = size.saturating_sub(header.data_offset);
    if have < need as u64 {
        return Err(bad(name, format!("data has {have} bytes, the header says {need}")));
    }
    crate::block::check_block(&header.shape, header.dtype).map_err(|e| bad(name, e))?;
    let sh = if header.fortran { IxDyn(&header.shape).f() } else { IxDyn(&header.shape).into_shape_with_order() };
    macro_rules! build {
        ($ty:ty, $variant:ident) => {{
            let mut v: Vec<$ty> = vec![0 as $ty; count];
            fill_le(file, &mut v, name)?;
            Block::$variant(ArrayD::from_shape_vec(sh, v).map_err(|e| bad(name, e))?)
        }};
    }
    Ok(match header.dtype {
        DType::Bool => {
            let mut bytes = vec![0u8; count];
            file.read_exact(&mut bytes).map_err(|e| bad(name, e))?;
            Block::Bool(
                ArrayD::from_shape_vec(sh, bytes.into_iter().map(|b| b != 0).collect()).map_err(|e| bad(name, e))?,
            )
        }
        DType::I32 => build!(i32, I32),
        DType::I64 => build!(i64, I64),
        DType::F32 => build!(f32, F32),
        DType::F64 => build!(f64, F64),
    })
}

/// Fills `out` with little-endian numbers read from `file`.
fn fill_le<T: bytemuck::Pod>(file: &mut dyn Read, out: &mut [T], name: &str) -> Result<(), ChunkError> {
    file.read_exact(bytemuck::cast_slice_mut(out)).map_err(|e| bad(name, e))?;
    #[cfg(target_endian = "big")]
    for x in out.iter_mut() {
        let bytes: &mut [u8] = bytemuck::bytes_of_mut(x);
        bytes.reverse();
    }
    Ok(())
}

/// Writes a block as an `.npy` file (version 1.0, C order), its data straight from the block's
/// buffer when it is in standard layout.
pub fn write_block(path: &Path, block: &Block) -> Result<(), ChunkError> {
    let name = path.display().to_string();
    let shape = match block.shape() {
        [one] => format!("({one},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", descr(block.dtype()));
    // Pad so the data starts at a multiple of 64 bytes, ending the header with a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut lead = Vec::with_capacity(10 + header.len());
    lead.extend_from_slice(MAGIC);
    lead.extend_from_slice(&[1, 0]);
    lead.extend_from_slice(&(header.len() as u16).to_le_bytes());
    lead.extend_from_slice(header.as_bytes());
    let text = path.to_string_lossy();
    if kiln_storage::scheme_of(&text).is_some_and(|s| s != "file") {
        // Objects are written whole: the file is made in memory first.
        let count: usize = block.shape().iter().product();
        let mut bytes = Vec::with_capacity(lead.len() + count * block.dtype().itemsize());
        write_npy_body(&mut bytes, &lead, block).map_err(|e| bad(&name, e))?;
        let storage = kiln_storage::storage_for(&text).map_err(|e| ChunkError::msg(e.to_string()))?;
        return storage.write(&text, &bytes).map_err(|e| ChunkError::msg(e.to_string()));
    }
    let file = std::fs::File::create(kiln_storage::local_path(&text)).map_err(|e| bad(&name, e))?;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
    write_npy_body(&mut file, &lead, block).map_err(|e| bad(&name, e))
}

/// Writes the header lead and the block's numbers to `file`.
fn write_npy_body(file: &mut impl Write, lead: &[u8], block: &Block) -> std::io::Result<()> {
    let write = |file: &mut dyn Write| -> std::io::Result<()> {
        file.write_all(lead)?;
        macro_rules! numbers {
            ($a:expr) => {{
                let a = $a;
                match a.as_slice() {
                    Some(slice) if cfg!(target_endian = "little") => file.write_all(bytemuck::cast_slice(slice))?,
                    _ => {
                        for v in a.iter() {
                            file.write_all(&v.to_le_bytes())?;
                        }
                    }
                }
            }};
        }
        match block {
            Block::Bool(a) => {
                for &b in a.iter() {
                    file.write_all(&[u8::from(b)])?;
                }
            }
            Block::I32(a) => numbers!(a),
            Block::I64(a) => numbers!(a),
            Block::F32(a) => numbers!(a),
            Block::F64(a) => numbers!(a),
        }
        file.flush()
    };
    write(file)
}
