//! Text and JSON lines: one partition per file, gzip by extension; writing partitions back.

use std::fmt::Display;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_graph::kernel::try_func1;
use kiln_graph::{Kernel, KernelRegistry, KernelSpec, Key, TaskError, Tokenizer};
use serde::de::DeserializeOwned;

use crate::json::Json;
use crate::node::{Node, NodeArg};
use crate::portable::{SpecKernel, StepSpec};
use crate::reduce::Item;
use crate::stream::{ChunkSource, Emit};
use crate::{Bag, BagError, Element, gather_kernel};

/// The files matching `pattern` (a glob: `*`, `?`, `[abc]`, `**`), sorted, or an error when
/// it is invalid or matches nothing.
fn expand(pattern: &str) -> Result<Vec<PathBuf>, BagError> {
    let files = kiln_storage::storage_for(pattern).and_then(|s| s.list(pattern)).map_err(|e| match e {
        kiln_storage::StorageError::InvalidUrl { message, .. } => {
            BagError::BadPattern { pattern: pattern.to_string(), message }
        }
        e => storage_error(e),
    })?;
    if files.is_empty() {
        return Err(BagError::NoFilesMatch { pattern: pattern.to_string() });
    }
    Ok(files.into_iter().map(PathBuf::from).collect())
}

fn io_error(path: &Path, error: std::io::Error) -> BagError {
    BagError::Io { path: path.to_path_buf(), message: error.to_string() }
}

fn storage_error(error: kiln_storage::StorageError) -> BagError {
    let path = PathBuf::from(error.url());
    let message = match &error {
        kiln_storage::StorageError::NotFound { .. } => "not found".to_string(),
        kiln_storage::StorageError::Io { message, .. } => message.clone(),
        e => e.to_string(),
    };
    BagError::Io { path, message }
}

/// The storage serving `path` (local files, or the store registered for its URL scheme) and
/// the path as that storage spells it.
fn storage_of(path: &Path) -> Result<(std::sync::Arc<dyn kiln_storage::Storage>, String), BagError> {
    let text = path.to_string_lossy().into_owned();
    let storage = kiln_storage::storage_for(&text).map_err(storage_error)?;
    Ok((storage, text))
}

/// Whether `path` is a local file (a plain path or `file://`), read with the file system's own
/// calls (positioned reads, modification times).
fn is_local(path: &Path) -> bool {
    kiln_storage::scheme_of(&path.to_string_lossy()).is_none_or(|s| s == "file")
}

fn local(path: &Path) -> PathBuf {
    PathBuf::from(kiln_storage::local_path(&path.to_string_lossy()))
}

/// How many bytes of a file [`for_each_line`] reads at a time: a few hundred typical records,
/// so a block of lines stays in the caches while its records are parsed.
const LINE_BLOCK: usize = 128 << 10;

/// A file's lines, decompressed by its extension; calls `line` with each line (without its
/// `\n` or `\r\n`) and its 1-based number. The file is read a block at a time, split into
/// lines with `memchr` and checked as UTF-8 once per block: no copy per line. The block is
/// reused; records keep copies of their own lines, never the block (a record surviving a filter
/// must not keep 128 KiB of its neighbours alive).
fn for_each_line(path: &Path, mut line: impl FnMut(&str, u64) -> Result<(), TaskError>) -> Result<(), TaskError> {
    let mut reader = open_decompressed(path)?;
    // `buffer[..filled]` holds read bytes not yet handed on: the start of a line whose end has
    // not been read yet. The buffer is zeroed once and only grows (for a line longer than a
    // block), so reads land in it without clearing it again.
    let mut buffer: Vec<u8> = vec![0; LINE_BLOCK * 2];
    let mut filled = 0;
    let mut number = 0u64;
    let mut eof = false;
    while !eof {
        // Fill to at least a block past the pending part, so a block ends in a full line unless
        // a line is longer than a block (then read on until it ends).
        let want = filled + LINE_BLOCK;
        if buffer.len() < want {
            buffer.resize(want, 0);
        }
        while filled < want {
            let read = match reader.read(&mut buffer[filled..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(path, e).into()),
            };
            filled += read;
            if read == 0 {
                eof = true;
                break;
            }
        }
        let pending = &buffer[..filled];
        let cut = if eof {
            pending.len()
        } else {
            match memchr::memrchr(b'\n', pending) {
                Some(i) => i + 1,
                None => continue,
            }
        };
        if cut == 0 {
            break;
        }
        // Text up to the first byte that is not UTF-8 (and the whole line it is in) is handed
        // on first, so lines before a bad one are seen in order, as they would be line by line.
        let (text, bad) = match std::str::from_utf8(&pending[..cut]) {
            Ok(text) => (text, false),
            Err(e) => {
                let valid = memchr::memrchr(b'\n', &pending[..e.valid_up_to()]).map_or(0, |i| i + 1);
                // A prefix of the part found valid: this check cannot fail.
                (std::str::from_utf8(&pending[..valid]).unwrap_or_default(), true)
            }
        };
        let valid = text.len();
        let bytes = text.as_bytes();
        let mut start = 0;
        while start < valid {
            let (end, text_end) = match memchr::memchr(b'\n', &bytes[start..valid]) {
                // `\r\n` ends a line as `\n` does; a lone `\r` at the very end stays.
                Some(i) if i > 0 && bytes[start + i - 1] == b'\r' => (start + i, start + i - 1),
                Some(i) => (start + i, start + i),
                None => (valid, valid),
            };
            number += 1;
            line(&text[start..text_end], number)?;
            start = end + 1;
        }
        if bad {
            let rest = &pending[valid..cut];
            let bad_line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
            let message = match std::str::from_utf8(strip_newline(bad_line)) {
                Err(e) => format!("not UTF-8: {e}"),
                Ok(_) => "not UTF-8".to_string(),
            };
            return Err(BagError::BadLine { path: path.to_path_buf(), line: number + 1, message }.into());
        }
        buffer.copy_within(cut..filled, 0);
        filled -= cut;
    }
    Ok(())
}

/// The compression a file's extension names: `.gz`, `.bz2`, `.zst`/`.zstd`.
fn compression_of(path: &Path) -> Compression {
    match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Compression::Gzip,
        Some("bz2") => Compression::Bz2,
        Some("zst" | "zstd") => Compression::Zstd,
        _ => Compression::None,
    }
}

fn is_compressed(path: &Path) -> bool {
    compression_of(path) != Compression::None
}

/// The file's bytes, decompressed by its extension (concatenated gzip, bzip2 and zstd streams
/// are read whole).
fn open_decompressed(path: &Path) -> Result<Box<dyn Read>, BagError> {
    let file: Box<dyn Read> = if is_local(path) {
        Box::new(File::open(local(path)).map_err(|e| io_error(path, e))?)
    } else {
        let (storage, url) = storage_of(path)?;
        storage.open(&url).map_err(storage_error)?
    };
    Ok(match compression_of(path) {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file))),
        Compression::Bz2 => Box::new(bzip2::read::MultiBzDecoder::new(BufReader::with_capacity(1 << 16, file))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| io_error(path, e))?),
    })
}

/// The byte range of a file a partition reads; `None` for the whole file.
type Block = Option<Range<u64>>;

/// One task per file (or per `blocksize` bytes of an uncompressed file), each reading its
/// partition with `read`; keys depend on the paths, sizes and modification times, so a changed
/// file is read again.
fn file_bag<T: Element>(
    operation: &str,
    pattern: &str,
    extra_token: &str,
    blocksize: Option<u64>,
    source: impl Fn(PathBuf, Block) -> Arc<FileSource<T>>,
) -> Result<Bag<T>, BagError> {
    let files = expand(pattern)?;
    let mut tokens = Tokenizer::new();
    tokens.feed(operation).feed(extra_token).feed(&blocksize.unwrap_or(0));
    let mut parts: Vec<(PathBuf, Block)> = Vec::new();
    for path in files {
        // A local file's modification time joins its size in the key; an object's size only.
        let (len, modified) = if is_local(&path) {
            let meta = std::fs::metadata(local(&path)).map_err(|e| io_error(&path, e))?;
            let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            (meta.len(), modified.map_or(0, |d| d.as_nanos() as u64))
        } else {
            let (storage, url) = storage_of(&path)?;
            (storage.size(&url).map_err(storage_error)?, 0)
        };
        tokens.feed(path.to_string_lossy().as_ref()).feed(&len).feed(&modified);
        match blocksize {
            Some(size) if !is_compressed(&path) && len > 0 => {
                let mut start = 0;
                while start < len {
                    let end = (start + size).min(len);
                    parts.push((path.clone(), Some(start..end)));
                    start = end;
                }
            }
            _ => parts.push((path, None)),
        }
    }
    let token = tokens.finish();
    let name: Arc<str> = format!("{operation}-{token}").into();
    let nodes = parts
        .into_iter()
        .enumerate()
        .map(|(i, (path, block))| file_node(Key::from_shared(&name, &[i as u32]), source(path, block)))
        .collect();
    Ok(Bag::from_nodes(nodes, token))
}

/// Gathers elements into chunks of at most `size` and hands each full chunk on.
struct Chunker<'a, T> {
    items: Vec<T>,
    size: usize,
    emitted: bool,
    emit: &'a mut dyn FnMut(Vec<T>) -> Result<(), TaskError>,
}

impl<'a, T> Chunker<'a, T> {
    fn new(size: usize, emit: &'a mut dyn FnMut(Vec<T>) -> Result<(), TaskError>) -> Self {
        let size = size.max(1);
        Chunker { items: Vec::with_capacity(size.min(4096)), size, emitted: false, emit }
    }

    fn push(&mut self, item: T) -> Result<(), TaskError> {
        self.items.push(item);
        if self.items.len() >= self.size {
            self.emitted = true;
            let capacity = self.items.capacity();
            (self.emit)(std::mem::replace(&mut self.items, Vec::with_capacity(capacity)))?;
        }
        Ok(())
    }

    /// Hands on the last chunk: the rest, or an empty chunk when nothing was handed on.
    fn finish(mut self) -> Result<(), TaskError> {
        if !self.items.is_empty() || !self.emitted {
            (self.emit)(std::mem::take(&mut self.items))?;
        }
        Ok(())
    }
}

/// The lines of `range` of an uncompressed file in chunks: those that start inside it (a line
/// crossing the end belongs to this block, one crossing the start to the previous block).
fn block_lines(
    path: &Path,
    range: Range<u64>,
    chunk: usize,
    emit: &mut dyn FnMut(Vec<String>) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let mut position = range.start.saturating_sub(1);
    let source: Box<dyn Read> = if is_local(path) {
        let mut file = File::open(local(path)).map_err(|e| io_error(path, e))?;
        file.seek(SeekFrom::Start(position)).map_err(|e| io_error(path, e))?;
        Box::new(file)
    } else {
        let (storage, url) = storage_of(path)?;
        let size = storage.size(&url).map_err(storage_error)?;
        Box::new(RangeReader::new(storage, url, position, size))
    };
    let mut reader = BufReader::with_capacity(1 << 16, source);
    let mut buffer = Vec::new();
    if range.start > 0 {
        // Skip the rest of the line the previous block owns (just its `\n` when the block
        // starts a line).
        position += reader.read_until(b'\n', &mut buffer).map_err(|e| io_error(path, e))? as u64;
    }
    let mut lines = Chunker::new(chunk, emit);
    while position < range.end {
        buffer.clear();
        let read = reader.read_until(b'\n', &mut buffer).map_err(|e| io_error(path, e))?;
        if read == 0 {
            break;
        }
        let text = std::str::from_utf8(strip_newline(&buffer)).map_err(|e| BagError::BadText {
            path: path.to_path_buf(),
            offset: position,
            message: format!("not UTF-8: {e}"),
        })?;
        lines.push(text.to_string())?;
        position += read as u64;
    }
    lines.finish()
}

fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A whole file's lines in chunks.
fn file_lines(
    path: &Path,
    chunk: usize,
    emit: &mut dyn FnMut(Vec<String>) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let mut lines = Chunker::new(chunk, emit);
    for_each_line(path, |line, _| lines.push(line.to_string()))?;
    lines.finish()
}

/// The lines of a text partition (a whole file, or a block of one) in chunks.
fn text_lines(
    path: &Path,
    block: &Block,
    chunk: usize,
    emit: &mut dyn FnMut(Vec<String>) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    match block {
        Some(range) => block_lines(path, range.clone(), chunk, emit),
        None => file_lines(path, chunk, emit),
    }
}

/// The lines of the files matching `pattern`, one partition per file in path order (Dask's
/// `read_text`). Lines lose their `\n` (and `\r\n`); files ending in `.gz` are decompressed.
///
/// # Errors
/// An invalid pattern, or one that matches no file. Unreadable files and lines that are not
/// UTF-8 fail the computation, naming the file (and line).
pub fn read_text(pattern: &str) -> Result<Bag<String>, BagError> {
    file_bag("read_text", pattern, "", None, read_text_source)
}

/// Where a file partition reads: the kernels' parameters.
#[derive(serde::Serialize, serde::Deserialize)]
struct FilePart {
    path: PathBuf,
    block: Option<(u64, u64)>,
}

/// Reads a file partition in chunks: `(path, block, chunk size, emit)`.
type ReadChunks<T> = Arc<
    dyn Fn(&Path, &Block, usize, &mut dyn FnMut(Vec<T>) -> Result<(), TaskError>) -> Result<(), TaskError>
        + Send
        + Sync,
>;

/// One file partition: read whole by its node's kernel, or in chunks by a fused pipeline.
struct FileSource<T> {
    operation: &'static str,
    /// The id its kernel and source factories are registered under, when it can travel.
    id: Option<String>,
    path: PathBuf,
    block: Block,
    read: ReadChunks<T>,
}

impl<T: Element> FileSource<T> {
    fn spec(&self) -> Option<StepSpec> {
        let id = self.id.clone()?;
        let params = FilePart { path: self.path.clone(), block: self.block.as_ref().map(|r| (r.start, r.end)) };
        postcard::to_allocvec(&params).ok().map(|params| StepSpec { id, params })
    }

    fn read_whole(&self) -> Result<Vec<T>, TaskError> {
        let mut all: Vec<T> = Vec::new();
        (self.read)(&self.path, &self.block, usize::MAX, &mut |items| {
            if all.is_empty() {
                all = items;
            } else {
                all.extend(items);
            }
            Ok(())
        })?;
        Ok(all)
    }
}

impl<T: Element> ChunkSource for FileSource<T> {
    fn read(&self, chunk: usize, emit: &mut Emit<'_>) -> Result<(), TaskError> {
        (self.read)(&self.path, &self.block, chunk, &mut |items| emit(Box::new(items)))
    }

    fn spec(&self) -> Option<StepSpec> {
        FileSource::spec(self)
    }
}

/// The kernel reading a file partition whole.
struct FileKernel<T>(Arc<FileSource<T>>);

impl<T: Element> Kernel for FileKernel<T> {
    fn name(&self) -> &str {
        self.0.operation
    }
    fn call(&self, inputs: &[kiln_graph::Value]) -> Result<kiln_graph::Value, TaskError> {
        if !inputs.is_empty() {
            return Err(TaskError::Arity { expected: 0, found: inputs.len() });
        }
        Ok(kiln_graph::Value::new(self.0.read_whole()?))
    }
    fn spec(&self) -> Option<KernelSpec> {
        self.0.spec().map(|spec| KernelSpec { id: spec.id, params: spec.params })
    }
}

/// The source of one file partition read with `read`, portable under `id` when given one.
fn file_source<T: Element>(
    operation: &'static str,
    id: Option<String>,
    path: PathBuf,
    block: Block,
    read: impl Fn(&Path, &Block, usize, &mut dyn FnMut(Vec<T>) -> Result<(), TaskError>) -> Result<(), TaskError>
    + Send
    + Sync
    + 'static,
) -> Arc<FileSource<T>> {
    Arc::new(FileSource { operation, id, path, block, read: Arc::new(read) })
}

/// The node of a file partition: its kernel reads it whole, and fused pipelines read its
/// source in chunks.
fn file_node<T: Element>(key: Key, source: Arc<FileSource<T>>) -> Arc<Node> {
    let kernel: Arc<dyn Kernel> = Arc::new(FileKernel(Arc::clone(&source)));
    Node::with_source(key, kernel, source)
}

fn read_text_source(path: PathBuf, block: Block) -> Arc<FileSource<String>> {
    file_source("read_text", Some("kiln.bag.read_text".into()), path, block, text_lines)
}

fn decode_file_part(params: &[u8]) -> Result<(PathBuf, Block), String> {
    let part: FilePart = postcard::from_bytes(params).map_err(|e| e.to_string())?;
    Ok((part.path, part.block.map(|(start, end)| start..end)))
}

/// The source of a `read_json_lines::<T>` partition (failing on bad lines) other processes
/// rebuild from its parameters.
pub(crate) fn json_lines_source<T: Element + DeserializeOwned>(
    params: &[u8],
    tag: &str,
) -> Result<Arc<dyn ChunkSource>, String> {
    let (path, _) = decode_file_part(params)?;
    Ok(json_source::<T>(path, OnBadLine::Fail, Some(tag)))
}

/// The kernel of a `read_json_lines::<T>` partition other processes rebuild.
pub(crate) fn json_lines_kernel<T: Element + DeserializeOwned>(
    params: &[u8],
    tag: &str,
) -> Result<Arc<dyn Kernel>, String> {
    let (path, _) = decode_file_part(params)?;
    Ok(Arc::new(FileKernel(json_source::<T>(path, OnBadLine::Fail, Some(tag)))))
}

fn json_source<T: Element + DeserializeOwned>(
    path: PathBuf,
    on_bad_line: OnBadLine,
    tag: Option<&str>,
) -> Arc<FileSource<T>> {
    // A skip log lives in the client's memory: such reads run locally only.
    let id = match (&on_bad_line, tag) {
        (OnBadLine::Fail, Some(tag)) => Some(format!("kiln.bag.read_json_lines/{tag}")),
        _ => None,
    };
    file_source("read_json_lines", id, path, None, move |path, _, chunk, emit| {
        json_records::<T>(path, &on_bad_line, chunk, emit, |line| serde_json::from_str::<T>(line))
    })
}

/// The text kernels and sources other processes rebuild: reading text partitions and
/// gathering paths.
pub(crate) fn register_text_kernels() {
    KernelRegistry::global().register_factory("kiln.bag.read_text", |params| {
        let (path, block) = decode_file_part(params)?;
        Ok(Arc::new(FileKernel(read_text_source(path, block))) as Arc<dyn Kernel>)
    });
    crate::portable::register_source("kiln.bag.read_text".into(), |params| {
        let (path, block) = decode_file_part(params)?;
        Ok(read_text_source(path, block) as Arc<dyn ChunkSource>)
    });
    KernelRegistry::global().register_factory("kiln.bag.read_json", |params| {
        let (path, _) = decode_file_part(params)?;
        Ok(Arc::new(FileKernel(read_json_source(path, OnBadLine::Fail))) as Arc<dyn Kernel>)
    });
    crate::portable::register_source("kiln.bag.read_json".into(), |params| {
        let (path, _) = decode_file_part(params)?;
        Ok(read_json_source(path, OnBadLine::Fail) as Arc<dyn ChunkSource>)
    });
    KernelRegistry::global().register_instance(paths_kernel());
}

fn paths_kernel() -> Arc<dyn Kernel> {
    static KERNEL: std::sync::OnceLock<Arc<dyn Kernel>> = std::sync::OnceLock::new();
    Arc::clone(KERNEL.get_or_init(|| {
        Arc::new(SpecKernel {
            inner: gather_kernel::<PathBuf>("paths"),
            spec: Some(KernelSpec { id: "kiln.bag.paths".into(), params: Vec::new() }),
            element: std::any::type_name::<PathBuf>(),
        })
    }))
}

/// Where a `to_textfiles` partition goes: the writer kernel's parameters.
#[derive(serde::Serialize, serde::Deserialize)]
struct WritePart {
    path: PathBuf,
    compression: Compression,
}

fn writer_kernel<T: Element + Display>(path: PathBuf, compression: Compression, tag: Option<&str>) -> Arc<dyn Kernel> {
    let spec = tag.and_then(|tag| {
        postcard::to_allocvec(&WritePart { path: path.clone(), compression })
            .ok()
            .map(|params| KernelSpec { id: format!("kiln.bag.to_textfiles/{tag}"), params })
    });
    let inner: Arc<dyn Kernel> = Arc::new(try_func1("to_textfiles", move |items: &Vec<T>| {
        write_partition(&path, items, compression).map(|()| path.clone()).map_err(|e| e.to_string())
    }));
    Arc::new(SpecKernel { inner, spec, element: std::any::type_name::<T>() })
}

/// Registers `to_textfiles` partition writers for `T` under `tag`.
pub(crate) fn register_text_writer<T: Element + Display>(tag: &str) {
    let owned = tag.to_string();
    KernelRegistry::global().register_factory(&format!("kiln.bag.to_textfiles/{tag}"), move |params| {
        let part: WritePart = postcard::from_bytes(params).map_err(|e| e.to_string())?;
        Ok(writer_kernel::<T>(part.path, part.compression, Some(&owned)))
    });
}

/// [`read_text`] with uncompressed files split into partitions of about `blocksize` bytes
/// (Dask's `read_text(.., blocksize=..)`): a partition holds the lines that start in its byte
/// range, so every line is read once, whole. Compressed files cannot be split and stay one
/// partition each.
///
/// ```
/// # use kiln_bag::read_text_blocks; use kiln_graph::Collection; use kiln_local::LocalScheduler;
/// let dir = std::env::temp_dir().join(format!("kiln-bag-doc-blocks-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("a.txt"), "alpha\nbeta\ngamma\ndelta\n").unwrap();
/// let bag = read_text_blocks(dir.join("a.txt").to_str().unwrap(), 8).unwrap();
/// assert_eq!(bag.npartitions(), 3);
/// assert_eq!(bag.compute_on(&LocalScheduler::new()).unwrap(), ["alpha", "beta", "gamma", "delta"]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
///
/// # Errors
/// As [`read_text`], and a `blocksize` of 0.
pub fn read_text_blocks(pattern: &str, blocksize: u64) -> Result<Bag<String>, BagError> {
    if blocksize == 0 {
        return Err(BagError::ZeroBlocksize);
    }
    file_bag("read_text", pattern, "", Some(blocksize), read_text_source)
}

/// What to do with a line that is not valid JSON for the requested type.
#[derive(Clone, Debug, Default)]
pub enum OnBadLine {
    /// Fail the computation with an error naming the file and the line (the default).
    #[default]
    Fail,
    /// Leave the line out and record it in this log.
    Skip(BadLines),
}

/// A line left out by [`OnBadLine::Skip`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedLine {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line number.
    pub line: u64,
    /// Why it was left out.
    pub message: String,
}

/// The lines [`OnBadLine::Skip`] left out, shared by every task of the bags that use it. Each
/// computation that reads a file records its bad lines again; [`BadLines::clear`] starts over.
#[derive(Clone, Debug, Default)]
pub struct BadLines(Arc<Mutex<BadLinesState>>);

#[derive(Debug, Default)]
struct BadLinesState {
    count: u64,
    first: Vec<SkippedLine>,
}

impl BadLines {
    /// How many the first lines kept with their details; the count covers them all.
    pub const KEPT: usize = 100;

    /// An empty log.
    pub fn new() -> BadLines {
        BadLines::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BadLinesState> {
        // A panic while holding the lock leaves a count that is still meaningful.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, line: SkippedLine) {
        let mut state = self.state();
        state.count += 1;
        if state.first.len() < Self::KEPT {
            state.first.push(line);
        }
    }

    /// How many lines were skipped.
    pub fn count(&self) -> u64 {
        self.state().count
    }

    /// The first [`BadLines::KEPT`] skipped lines, in the order tasks met them.
    pub fn lines(&self) -> Vec<SkippedLine> {
        self.state().first.clone()
    }

    /// Forgets every skipped line.
    pub fn clear(&self) {
        *self.state() = BadLinesState::default();
    }
}

/// The records of the JSON-lines files matching `pattern`, parsed as `T` (typed structs with
/// `serde::Deserialize`, or `serde_json::Value` when a tree is wanted; [`read_json`] is the
/// faster schemaless reader, the seeds' `map(json.loads)`); one partition per file, `.gz`,
/// `.bz2` and `.zst` decompressed, blank lines ignored. A malformed line fails the computation naming
/// the file and the line; see [`read_json_lines_with`] to skip such lines.
///
/// # Errors
/// An invalid pattern, or one that matches no file.
pub fn read_json_lines<T: Element + DeserializeOwned>(pattern: &str) -> Result<Bag<T>, BagError> {
    read_json_lines_with(pattern, OnBadLine::Fail)
}

/// [`read_json_lines`] with a policy for malformed lines.
///
/// ```
/// # use kiln_bag::{read_json_lines_with, OnBadLine, BadLines}; use kiln_graph::Collection;
/// # use kiln_local::LocalScheduler;
/// let dir = std::env::temp_dir().join(format!("kiln-bag-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("a.jsonl"), "{\"n\": 1}\nnot json\n{\"n\": 2}\n").unwrap();
/// let skipped = BadLines::new();
/// let bag = read_json_lines_with::<serde_json::Value>(
///     dir.join("*.jsonl").to_str().unwrap(), OnBadLine::Skip(skipped.clone())).unwrap();
/// assert_eq!(bag.count().compute_on(&LocalScheduler::new()).unwrap(), 2);
/// assert_eq!((skipped.count(), skipped.lines()[0].line), (1, 2));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
///
/// # Errors
/// As [`read_json_lines`].
pub fn read_json_lines_with<T: Element + DeserializeOwned>(
    pattern: &str,
    on_bad_line: OnBadLine,
) -> Result<Bag<T>, BagError> {
    let policy = match &on_bad_line {
        OnBadLine::Fail => "fail".to_string(),
        OnBadLine::Skip(log) => format!("skip-{:p}", Arc::as_ptr(&log.0)),
    };
    let tag = crate::portable::tag_of::<T>();
    file_bag("read_json_lines", pattern, &policy, None, move |path, _| {
        json_source::<T>(path, on_bad_line.clone(), tag.as_deref())
    })
}

/// The schemaless records of the JSON-lines files matching `pattern` as [`Json`] values (the
/// seeds' `read_text(..).map(json.loads)`): each line is validated by serde_json without
/// building a tree and kept as text, and fields are found when asked for (`record["name"]`,
/// [`Bag::pluck`]). One partition per file, `.gz`/`.bz2`/`.zst` decompressed, blank lines
/// ignored; a malformed line fails the computation naming the file and the line.
///
/// ```
/// # use kiln_bag::read_json; use kiln_graph::Collection; use kiln_local::LocalScheduler;
/// let dir = std::env::temp_dir().join(format!("kiln-bag-doc-json-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("a.jsonl"), "{\"name\": \"Alice\"}\n{\"name\": \"Bob\"}\n").unwrap();
/// let records = read_json(dir.join("*.jsonl").to_str().unwrap()).unwrap();
/// let alice = records.filter(|r| r["name"] == "Alice").count();
/// assert_eq!(alice.compute_on(&LocalScheduler::new()).unwrap(), 1);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
///
/// # Errors
/// An invalid pattern, or one that matches no file.
pub fn read_json(pattern: &str) -> Result<Bag<Json>, BagError> {
    read_json_with(pattern, OnBadLine::Fail)
}

/// [`read_json`] with a policy for malformed lines.
///
/// # Errors
/// As [`read_json`].
pub fn read_json_with(pattern: &str, on_bad_line: OnBadLine) -> Result<Bag<Json>, BagError> {
    let policy = match &on_bad_line {
        OnBadLine::Fail => "fail".to_string(),
        OnBadLine::Skip(log) => format!("skip-{:p}", Arc::as_ptr(&log.0)),
    };
    crate::portable::ensure_registered();
    file_bag("read_json", pattern, &policy, None, move |path, _| read_json_source(path, on_bad_line.clone()))
}

fn read_json_source(path: PathBuf, on_bad_line: OnBadLine) -> Arc<FileSource<Json>> {
    // A skip log lives in the client's memory: such reads run locally only.
    let id = matches!(on_bad_line, OnBadLine::Fail).then(|| "kiln.bag.read_json".to_string());
    file_source("read_json", id, path, None, move |path, _, chunk, emit| {
        json_records(path, &on_bad_line, chunk, emit, Json::parse)
    })
}

/// The records of a JSON-lines file in chunks.
fn json_records<T>(
    path: &Path,
    on_bad_line: &OnBadLine,
    chunk: usize,
    emit: &mut dyn FnMut(Vec<T>) -> Result<(), TaskError>,
    parse: impl Fn(&str) -> Result<T, serde_json::Error>,
) -> Result<(), TaskError> {
    let mut records = Chunker::new(chunk, emit);
    for_each_line(path, |line, number| {
        if line.trim().is_empty() {
            return Ok(());
        }
        match parse(line) {
            Ok(record) => records.push(record)?,
            Err(error) => match on_bad_line {
                OnBadLine::Fail => {
                    return Err(BagError::BadLine {
                        path: path.to_path_buf(),
                        line: number,
                        message: error.to_string(),
                    }
                    .into());
                }
                OnBadLine::Skip(log) => {
                    log.record(SkippedLine { path: path.to_path_buf(), line: number, message: error.to_string() })
                }
            },
        }
        Ok(())
    })?;
    records.finish()
}

/// How [`Bag::to_textfiles`] writes its files (and what a file's extension says when reading).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// Plain text, `part.N.txt`.
    #[default]
    None,
    /// Gzip, `part.N.txt.gz`.
    Gzip,
    /// Bzip2, `part.N.txt.bz2`.
    Bz2,
    /// Zstandard, `part.N.txt.zst`.
    Zstd,
}

impl Compression {
    /// The file name suffix after `.txt` (`""`, `".gz"`, `".bz2"`, `".zst"`).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Bz2 => ".bz2",
            Compression::Zstd => ".zst",
        }
    }
}

fn write_partition<T: Display>(path: &Path, items: &[T], compression: Compression) -> Result<(), BagError> {
    if !is_local(path) {
        // Objects are written whole: the file is made in memory, then stored.
        let mut bytes = Vec::new();
        encode_partition(&mut bytes, items, compression).map_err(|e| io_error(path, e))?;
        let (storage, url) = storage_of(path)?;
        return storage.write(&url, &bytes).map_err(storage_error);
    }
    let path = &local(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    let file = BufWriter::new(File::create(path).map_err(|e| io_error(path, e))?);
    encode_partition(file, items, compression).map_err(|e| io_error(path, e))
}

/// Writes `items`, one per line, compressed as asked, to `file`.
fn encode_partition<W: Write, T: Display>(file: W, items: &[T], compression: Compression) -> std::io::Result<()> {
    match compression {
        Compression::None => write_lines(file, items)?.flush(),
        Compression::Gzip => {
            let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            write_lines(encoder, items)?.finish()?.flush()
        }
        Compression::Bz2 => {
            let encoder = bzip2::write::BzEncoder::new(file, bzip2::Compression::default());
            write_lines(encoder, items)?.finish()?.flush()
        }
        Compression::Zstd => {
            let encoder = zstd::stream::write::Encoder::new(file, 0)?;
            write_lines(encoder, items)?.finish()?.flush()
        }
    }
}

/// An object read from `position` on in pieces of [`RangeReader::PIECE`] bytes, for blocks of
/// a file in an object store: one ranged request per piece, and the block's reader stops once
/// it has passed its end, so a block costs about its own bytes.
struct RangeReader {
    storage: std::sync::Arc<dyn kiln_storage::Storage>,
    url: String,
    position: u64,
    end: u64,
    piece: std::io::Cursor<Vec<u8>>,
}

impl RangeReader {
    const PIECE: u64 = 4 << 20;

    fn new(storage: std::sync::Arc<dyn kiln_storage::Storage>, url: String, position: u64, end: u64) -> Self {
        RangeReader { storage, url, position, end, piece: std::io::Cursor::new(Vec::new()) }
    }
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let served = self.piece.read(buf)?;
        if served > 0 || buf.is_empty() || self.position >= self.end {
            return Ok(served);
        }
        let to = (self.position + Self::PIECE).min(self.end);
        let bytes =
            self.storage.read_range(&self.url, self.position..to).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.position = to;
        self.piece = std::io::Cursor::new(bytes);
        self.piece.read(buf)
    }
}

/// Writes one item per line; returns the writer so the caller can finish its stream (an
/// encoder's trailer errors are reported, not lost in a drop).
fn write_lines<W: Write, T: Display>(mut out: W, items: &[T]) -> std::io::Result<W> {
    for item in items {
        writeln!(out, "{item}")?;
    }
    Ok(out)
}

impl<T: Element + Display> Bag<T> {
    /// Writes partition `N` to `dir/part.N.txt` (`.txt.gz` with [`Compression::Gzip`]), one
    /// element per line (Dask's `to_textfiles`). Lazy: computing the item writes the files and
    /// gives their paths in partition order.
    ///
    /// `dir` may instead be a pattern with a `*`, as in Dask (`out/events-*.json.gz`): partition
    /// `N` goes to the pattern with `*` replaced by `N`, compressed as `compression` says or,
    /// when that is [`Compression::None`], as the pattern's extension says (`.gz`, `.bz2`,
    /// `.zst`), so that [`read_text`] reads the files back.
    ///
    /// ```
    /// # use kiln_bag::{Bag, Compression, read_text}; use kiln_graph::Collection;
    /// # use kiln_local::LocalScheduler;
    /// let dir = std::env::temp_dir().join(format!("kiln-bag-doc-out-{}", std::process::id()));
    /// let written = Bag::range(5, 2).to_textfiles(&dir, Compression::Gzip);
    /// let paths = written.compute_on(&LocalScheduler::new()).unwrap();
    /// assert!(paths[1].ends_with("part.1.txt.gz"));
    /// let back = read_text(dir.join("*.gz").to_str().unwrap()).unwrap();
    /// assert_eq!(back.compute_on(&LocalScheduler::new()).unwrap(), ["0", "1", "2", "3", "4"]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn to_textfiles(&self, dir: impl AsRef<Path>, compression: Compression) -> Item<Vec<PathBuf>> {
        if let Some(error) = &self.invalid {
            return Item::invalid(error.clone());
        }
        let dir = dir.as_ref().to_path_buf();
        let nodes = self.nodes();
        let mut tokens = Tokenizer::new();
        // Every partition's key: bags that share only some partitions write different files.
        for node in &nodes {
            tokens.feed(&node.key);
        }
        let token = tokens.add(dir.to_string_lossy().as_ref()).add(compression.suffix()).finish();
        let name: Arc<str> = format!("to_textfiles-{token}").into();
        let tag = crate::portable::tag_of::<T>();
        let writers: Vec<Arc<Node>> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let (path, compression) = match dir.to_str() {
                    Some(pattern) if pattern.contains('*') => {
                        let path = PathBuf::from(pattern.replace('*', &i.to_string()));
                        let by_name = compression_of(&path);
                        (path, if compression == Compression::None { by_name } else { compression })
                    }
                    _ => (dir.join(format!("part.{i}.txt{}", compression.suffix())), compression),
                };
                let kernel = writer_kernel::<T>(path, compression, tag.as_deref());
                Node::new(Key::from_shared(&name, &[i as u32]), kernel, vec![NodeArg::Node(part)])
            })
            .collect();
        let args = writers.into_iter().map(NodeArg::Node).collect();
        Item::from_node(Node::new(Key::new(format!("to_textfiles-paths-{token}")), paths_kernel(), args))
    }
}
