//! The three floors of kiln-array import downward only: `chunk/` (block math) knows nothing of
//! graphs or arrays, and `lower/` (graph builders and kernels) never reaches up into the user
//! API. A source scan keeps it that way.

use std::path::{Path, PathBuf};

fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).expect("readable source"))).collect()
}

/// Code lines (comments dropped) of a source file, with their numbers.
fn code(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter(|(_, l)| !l.trim_start().starts_with("//")).map(|(i, l)| (i + 1, l))
}

/// Whether `word` occurs as a whole name, not as part of another (`ArrayD`) or as the tail of
/// another crate's path (`zarrs::array::Array`; paths into this crate are checked by prefix).
fn has_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        let part = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !part(before) && before != Some(':') && !part(after)
    })
}

const API_MODULES: &[&str] = &[
    "crate::array",
    "crate::Array",
    "crate::ops",
    "crate::slicing",
    "crate::Idx",
    "crate::reduce",
    "crate::linalg",
    "crate::join",
    "crate::select",
    "crate::map",
    "crate::cumulative",
    "crate::overlap",
    "crate::npy",
    "crate::zarr",
];

#[test]
fn the_block_floor_names_no_graph_or_array_type() {
    let mut violations = Vec::new();
    for (path, text) in sources("chunk") {
        for (n, line) in code(&text) {
            let upward = API_MODULES.iter().chain(&["crate::lower", "kiln_graph"]).find(|m| has_word(line, m));
            let graph_type =
                ["Array", "Node", "Key", "TaskId", "GraphBuilder", "Lowering"].into_iter().find(|w| has_word(line, w));
            if let Some(what) = upward.copied().or(graph_type) {
                violations.push(format!("{}:{n}: {what}: {line}", path.display()));
            }
        }
    }
    assert!(violations.is_empty(), "chunk/ must stay below the graph:\n{}", violations.join("\n"));
}

#[test]
fn the_lowering_floor_does_not_import_the_user_api() {
    let mut violations = Vec::new();
    for (path, text) in sources("lower") {
        for (n, line) in code(&text) {
            if let Some(m) = API_MODULES.iter().find(|m| has_word(line, m)) {
                violations.push(format!("{}:{n}: {m}: {line}", path.display()));
            }
        }
    }
    assert!(violations.is_empty(), "lower/ must not import the API floor:\n{}", violations.join("\n"));
}
