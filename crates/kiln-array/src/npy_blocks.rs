//! A directory of `.npy` files, one per block (`0.0.npy`, `0.1.npy`, ...: the block's indices
//! joined by dots, as Zarr v2 names its chunks): the simplest chunked store, readable and
//! writable by NumPy alone. Reading needs no metadata file: the grid comes from the file names
//! and the chunk sizes from the files' headers. Like Zarr-backed arrays, every block is a task
//! that reads only its file, and such reads can be repeated instead of held
//! ([`kiln_graph::reread`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_graph::kernel::Portable;
use kiln_graph::{GraphError, Kernel, TaskId, Tokenizer};

use crate::array::Array;
use crate::block::Element;
use crate::error::ArrayError;
use crate::lower::kernels::{ExprKernel, Finish, ReadNpyBlock, WriteNpyBlock};
use crate::lower::node::{Layer, Lowering, Node, TaskInputs};
use crate::npy::read_npy_header;

fn io(path: &Path, msg: impl std::fmt::Display) -> ArrayError {
    ArrayError::Io(format!("{}: {msg}", path.display()))
}

/// The file name of block `idx`.
fn block_file(idx: &[usize]) -> String {
    let mut name = idx.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(".");
    name.push_str(".npy");
    name
}

/// The block indices a file name stands for, if it is a block file.
fn block_index(name: &str) -> Option<Vec<usize>> {
    let stem = name.strip_suffix(".npy")?;
    stem.split('.')
        .map(|p| if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) { None } else { p.parse().ok() })
        .collect()
}

/// Opens a directory of `.npy` blocks as a kiln array of `T`. Nothing but the headers is read
/// until blocks are computed.
///
/// ```
/// use kiln_array::{ones, npy_blocks::from_npy_blocks};
/// # use kiln_graph::Collection;
/// let dir = std::env::temp_dir().join(format!("kiln-doc-npy-blocks-{}", std::process::id()));
/// let sched = kiln_local::LocalScheduler::threads(2);
/// let written = ones::<f64>(&[5, 4], [2, 3]).to_npy_blocks(&dir).unwrap().compute_on(&sched).unwrap();
/// assert_eq!(written, 6); // 3 x 2 blocks: 0.0.npy ... 2.1.npy
/// let x = from_npy_blocks::<f64>(&dir).unwrap();
/// assert_eq!(x.chunks(), &[vec![2, 2, 1], vec![3, 1]]);
/// assert_eq!(x.sum().scalar().compute_on(&sched).unwrap(), 20.0);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
///
/// # Errors
/// [`ArrayError::Io`] naming the directory or file: a missing or empty directory, block files
/// with different numbers of indices, a missing block, a block of another element type than `T`,
/// or blocks whose shapes do not form a grid (each block's extent along an axis must match the
/// other blocks in its row, column, ...).
pub fn from_npy_blocks<T: Element>(dir: impl AsRef<Path>) -> Result<Array<T>, ArrayError> {
    let dir = dir.as_ref().to_path_buf();
    let blocks = block_files(&dir)?;
    let Some(ndim) = blocks.first().map(|(idx, _)| idx.len()) else {
        return Err(io(&dir, "holds no block files (named like 0.0.npy)"));
    };
    if let Some((_, path)) = blocks.iter().find(|(idx, _)| idx.len() != ndim) {
        return Err(io(path, format!("names a block with another number of indices than the others ({ndim})")));
    }
    let grid: Vec<usize> =
        (0..ndim).map(|a| blocks.iter().map(|(idx, _)| idx[a].saturating_add(1)).max().unwrap_or(0)).collect();
    let count = grid.iter().try_fold(1usize, |n, &g| n.checked_mul(g));
    // A file named like 999999.0.npy must not make us allocate a slot per block of its grid:
    // with fewer files than blocks, name the first hole (searched among at most a few times
    // as many blocks as there are files) or the grid.
    if count != Some(blocks.len()) {
        let present: std::collections::HashSet<&[usize]> = blocks.iter().map(|(idx, _)| idx.as_slice()).collect();
        if present.len() < blocks.len() {
            return Err(io(&dir, "holds two files for the same block (e.g. 1.0.npy and 01.0.npy)"));
        }
        let mut idx = vec![0usize; ndim];
        for _ in 0..blocks.len().saturating_mul(4).saturating_add(1) {
            if !present.contains(idx.as_slice()) {
                return Err(io(&dir.join(block_file(&idx)), "is missing: every block of the grid needs a file"));
            }
            for a in (0..ndim).rev() {
                idx[a] += 1;
                if idx[a] < grid[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        return Err(io(
            &dir,
            format!("has {} block files for a grid of {grid:?} blocks (from the largest indices)", blocks.len()),
        ));
    }
    let count = blocks.len();
    // Row-major position of a block in the grid.
    let flat = |idx: &[usize]| idx.iter().zip(&grid).fold(0usize, |acc, (&i, &g)| acc * g + i);
    let mut paths: Vec<Option<PathBuf>> = vec![None; count];
    for (idx, path) in blocks {
        paths[flat(&idx)] = Some(path);
    }
    let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(count);
    let mut files: Vec<PathBuf> = Vec::with_capacity(count);
    let mut idx = vec![0usize; ndim];
    for slot in paths {
        let path =
            slot.ok_or_else(|| io(&dir.join(block_file(&idx)), "is missing: every block of the grid needs a file"))?;
        let header = read_npy_header(&path)?;
        if header.dtype != T::DTYPE {
            return Err(io(&path, format!("holds {}, not {}", header.dtype, T::DTYPE)));
        }
        if header.shape.len() != ndim {
            return Err(io(&path, format!("has {} axes; its name gives {ndim}", header.shape.len())));
        }
        shapes.push(header.shape);
        files.push(path);
        // Next index in row-major order.
        for a in (0..ndim).rev() {
            idx[a] += 1;
            if idx[a] < grid[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    // Chunk sizes along each axis from the blocks on that axis (the others at 0), then every
    // block checked against them.
    let chunks: Vec<Vec<usize>> = (0..ndim)
        .map(|a| {
            (0..grid[a])
                .map(|i| {
                    let mut at = vec![0; ndim];
                    at[a] = i;
                    shapes[flat(&at)][a]
                })
                .collect()
        })
        .collect();
    let mut idx = vec![0usize; ndim];
    for (shape, path) in shapes.iter().zip(&files) {
        let want: Vec<usize> = (0..ndim).map(|a| chunks[a][idx[a]]).collect();
        if *shape != want {
            return Err(io(path, format!("has shape {shape:?}; its row and column in the grid need {want:?}")));
        }
        for a in (0..ndim).rev() {
            idx[a] += 1;
            if idx[a] < grid[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    let shape: Vec<usize> = chunks.iter().map(|c| c.iter().sum()).collect();
    let layer = NpyRead { files: Arc::new(files), grid };
    Ok(Array::from_storage("from-npy", &dir, shape, chunks, Arc::new(layer)))
}

/// Blocks read from their files.
struct NpyRead {
    /// One file per block, row-major over `grid`.
    files: Arc<Vec<PathBuf>>,
    grid: Vec<usize>,
}

impl Layer for NpyRead {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let at = idx.iter().zip(&self.grid).fold(0usize, |acc, (&i, &g)| acc * g + i);
        let kernel: Arc<dyn Kernel> = Arc::new(Portable(ReadNpyBlock {
            path: self.files[at].clone(),
            shape: node.block_shape(idx),
            dtype: node.dtype,
        }));
        lw.add(node.key(idx), kernel, [])
    }
}

/// Blocks written to their files.
struct NpyStore {
    input: Arc<Node>,
    dir: PathBuf,
}

impl Layer for NpyStore {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, idx, &mut inputs)?;
        let finish = WriteNpyBlock { path: self.dir.join(block_file(idx)), ndim: idx.len() };
        let kernel: Arc<dyn Kernel> =
            Arc::new(ExprKernel { name: "to-npy".into(), exprs: vec![expr], finish: Finish::builtin(finish) });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}

/// A pending write of an array as a directory of `.npy` blocks; computing it writes every block
/// (in parallel, each from the task that computes it) and returns the number of blocks written.
pub type NpyWrite = crate::writes::BlockWrites;

impl<T: Element> Array<T> {
    /// Prepares writing this array as a directory of `.npy` blocks, one file per block named by
    /// its indices (`0.0.npy`, `0.1.npy`, ...), for [`from_npy_blocks`] or NumPy. The directory
    /// is created; block files already in it are removed first so that an older, larger grid
    /// does not mix with the new one.
    ///
    /// # Errors
    /// [`ArrayError::Io`] when the directory cannot be created or cleared, or for a 0-d array
    /// (it has no blocks to name); the construction error of `self`.
    pub fn to_npy_blocks(&self, dir: impl AsRef<Path>) -> Result<NpyWrite, ArrayError> {
        self.check()?;
        let dir = dir.as_ref().to_path_buf();
        if self.shape().is_empty() {
            return Err(io(&dir, "a 0-d array has no blocks to write as files; reshape it to one axis first"));
        }
        let text = dir.to_string_lossy();
        if kiln_storage::scheme_of(&text).is_none_or(|s| s == "file") {
            let local = Path::new(kiln_storage::local_path(&text));
            std::fs::create_dir_all(local).map_err(|e| io(&dir, e))?;
        }
        // Blocks of an earlier, differently chunked write would mix into this one's grid.
        for (_, path) in block_files(&dir)? {
            let path_text = path.to_string_lossy();
            let storage = kiln_storage::storage_for(&path_text).map_err(|e| ArrayError::Io(e.to_string()))?;
            storage.delete(&path_text).map_err(|e| ArrayError::Io(e.to_string()))?;
        }
        let name = Tokenizer::new().add("to-npy").add(self.name()).add(dir.to_string_lossy().as_ref()).key("to-npy");
        let layer = NpyStore { input: self.node.clone(), dir };
        Ok(NpyWrite::new(&name, &self.numblocks(), Arc::new(layer)))
    }
}

/// The block files (named like `0.1.npy`) in `dir`, a local directory or an object-store
/// prefix such as `s3://bucket/blocks`, with their block indices.
fn block_files(dir: &Path) -> Result<Vec<(Vec<usize>, PathBuf)>, ArrayError> {
    let text = dir.to_string_lossy();
    let mut blocks = Vec::new();
    if kiln_storage::scheme_of(&text).is_none_or(|s| s == "file") {
        let local = Path::new(kiln_storage::local_path(&text));
        for entry in std::fs::read_dir(local).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            if let Some(idx) = entry.file_name().to_str().and_then(block_index) {
                blocks.push((idx, dir.join(entry.file_name())));
            }
        }
        return Ok(blocks);
    }
    let storage = kiln_storage::storage_for(&text).map_err(|e| ArrayError::Io(e.to_string()))?;
    let pattern = format!("{}/*.npy", text.trim_end_matches('/'));
    for url in storage.list(&pattern).map_err(|e| ArrayError::Io(e.to_string()))? {
        let name = url.rsplit('/').next().unwrap_or_default();
        if let Some(idx) = block_index(name) {
            blocks.push((idx, PathBuf::from(url)));
        }
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names() {
        assert_eq!(block_file(&[3, 0, 12]), "3.0.12.npy");
        assert_eq!(block_index("3.0.12.npy"), Some(vec![3, 0, 12]));
        for not_a_block in ["x.npy", "1..2.npy", ".npy", "1.2.npz", "1.-2.npy", "info"] {
            assert_eq!(block_index(not_a_block), None, "{not_a_block}");
        }
    }
}
