//! Text and JSON lines: one partition per file, gzip by extension; writing partitions back.

use std::fmt::Display;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_graph::kernel::try_func1;
use kiln_graph::{Kernel, Key, Tokenizer};
use serde::de::DeserializeOwned;

use crate::node::{Node, NodeArg};
use crate::reduce::Item;
use crate::{Bag, BagError, Element, gather_kernel};

/// The files matching `pattern` (a glob: `*`, `?`, `[abc]`, `**`), sorted, or an error when
/// it is invalid or matches nothing.
fn expand(pattern: &str) -> Result<Vec<PathBuf>, BagError> {
    let bad = |message: String| BagError::BadPattern { pattern: pattern.to_string(), message };
    let mut files = Vec::new();
    for entry in glob::glob(pattern).map_err(|e| bad(e.to_string()))? {
        let path = entry.map_err(|e| BagError::Io { path: e.path().to_path_buf(), message: e.error().to_string() })?;
        if path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(BagError::NoFilesMatch { pattern: pattern.to_string() });
    }
    files.sort();
    Ok(files)
}

fn io_error(path: &Path, error: std::io::Error) -> BagError {
    BagError::Io { path: path.to_path_buf(), message: error.to_string() }
}

/// A file's lines, decompressed when its name ends in `.gz`; calls `line` with each line
/// (without its `\n` or `\r\n`) and its 1-based number.
fn for_each_line(path: &Path, mut line: impl FnMut(&str, u64) -> Result<(), BagError>) -> Result<(), BagError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut buffer = Vec::new();
    let mut number = 0u64;
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer).map_err(|e| io_error(path, e))? == 0 {
            return Ok(());
        }
        number += 1;
        let mut end = buffer.len();
        if buffer[..end].ends_with(b"\n") {
            end -= 1;
            if buffer[..end].ends_with(b"\r") {
                end -= 1;
            }
        }
        let text = std::str::from_utf8(&buffer[..end]).map_err(|e| BagError::BadLine {
            path: path.to_path_buf(),
            line: number,
            message: format!("not UTF-8: {e}"),
        })?;
        line(text, number)?;
    }
}

/// One task per file, each reading its partition with `read`; keys depend on the paths, sizes
/// and modification times, so a changed file is read again.
fn file_bag<T: Element>(
    operation: &str,
    pattern: &str,
    extra_token: &str,
    read: impl Fn(&Path) -> Result<Vec<T>, BagError> + Send + Sync + 'static,
) -> Result<Bag<T>, BagError> {
    let files = expand(pattern)?;
    let mut tokens = Tokenizer::new();
    tokens.feed(operation).feed(extra_token);
    for path in &files {
        let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        tokens
            .feed(path.to_string_lossy().as_ref())
            .feed(&meta.len())
            .feed(&modified.map_or(0, |d| d.as_nanos() as u64));
    }
    let token = tokens.finish();
    let name: Arc<str> = format!("{operation}-{token}").into();
    let read = Arc::new(read);
    let nodes = files
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            let read = Arc::clone(&read);
            let kernel: Arc<dyn Kernel> =
                Arc::new(kiln_graph::kernel::try_func0(operation, move || read(&path).map_err(|e| e.to_string())));
            Node::new(Key::from_shared(&name, &[i as u32]), kernel, Vec::new())
        })
        .collect();
    Ok(Bag::from_nodes(nodes, token))
}

/// The lines of the files matching `pattern`, one partition per file in path order (Dask's
/// `read_text`). Lines lose their `\n` (and `\r\n`); files ending in `.gz` are decompressed.
///
/// # Errors
/// An invalid pattern, or one that matches no file. Unreadable files and lines that are not
/// UTF-8 fail the computation, naming the file (and line).
pub fn read_text(pattern: &str) -> Result<Bag<String>, BagError> {
    file_bag("read_text", pattern, "", |path| {
        let mut lines = Vec::new();
        for_each_line(path, |line, _| {
            lines.push(line.to_string());
            Ok(())
        })?;
        Ok(lines)
    })
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
/// `serde::Deserialize`, or `serde_json::Value` for schemaless records); one partition per
/// file, `.gz` decompressed, blank lines ignored. A malformed line fails the computation naming
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
    file_bag("read_json_lines", pattern, &policy, move |path| {
        let mut records = Vec::new();
        for_each_line(path, |line, number| {
            if line.trim().is_empty() {
                return Ok(());
            }
            match serde_json::from_str::<T>(line) {
                Ok(record) => records.push(record),
                Err(error) => match &on_bad_line {
                    OnBadLine::Fail => {
                        return Err(BagError::BadLine {
                            path: path.to_path_buf(),
                            line: number,
                            message: error.to_string(),
                        });
                    }
                    OnBadLine::Skip(log) => {
                        log.record(SkippedLine { path: path.to_path_buf(), line: number, message: error.to_string() })
                    }
                },
            }
            Ok(())
        })?;
        Ok(records)
    })
}

/// How [`Bag::to_textfiles`] writes its files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Plain text, `part.N.txt`.
    #[default]
    None,
    /// Gzip, `part.N.txt.gz`.
    Gzip,
}

fn write_partition<T: Display>(path: &Path, items: &[T], compression: Compression) -> Result<(), BagError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    let file = BufWriter::new(File::create(path).map_err(|e| io_error(path, e))?);
    let mut out: Box<dyn Write> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::default())),
    };
    for item in items {
        writeln!(out, "{item}").map_err(|e| io_error(path, e))?;
    }
    out.flush().map_err(|e| io_error(path, e))?;
    drop(out);
    Ok(())
}

impl<T: Element + Display> Bag<T> {
    /// Writes partition `N` to `dir/part.N.txt` (`.txt.gz` with [`Compression::Gzip`]), one
    /// element per line (Dask's `to_textfiles`). Lazy: computing the item writes the files and
    /// gives their paths in partition order.
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
        let token = Tokenizer::new()
            .add(&self.nodes().first().map(|n| n.key.clone()).unwrap_or_else(|| Key::new("empty")))
            .add(dir.to_string_lossy().as_ref())
            .add(&(compression == Compression::Gzip))
            .finish();
        let name: Arc<str> = format!("to_textfiles-{token}").into();
        let suffix = if compression == Compression::Gzip { "txt.gz" } else { "txt" };
        let writers: Vec<Arc<Node>> = self
            .nodes()
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let path = dir.join(format!("part.{i}.{suffix}"));
                let kernel: Arc<dyn Kernel> = Arc::new(try_func1("to_textfiles", move |items: &Vec<T>| {
                    write_partition(&path, items, compression).map(|()| path.clone()).map_err(|e| e.to_string())
                }));
                Node::new(Key::from_shared(&name, &[i as u32]), kernel, vec![NodeArg::Node(part)])
            })
            .collect();
        let args = writers.into_iter().map(NodeArg::Node).collect();
        Item::from_node(Node::new(
            Key::new(format!("to_textfiles-paths-{token}")),
            gather_kernel::<PathBuf>("paths"),
            args,
        ))
    }
}
