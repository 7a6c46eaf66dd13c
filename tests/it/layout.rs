//! The house rules docs/architecture.md states, checked on the source: the
//! top of `src/` shows the layers in at most 12 entries, no file is over
//! 700 lines, no function outside tests over 80, no `too_many_arguments`
//! allowance, and no two modules import each other, nor does a layer import
//! one above it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its module path (`room::cluster`).
fn sources() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).expect("under src");
                let module = relative
                    .with_extension("")
                    .to_string_lossy()
                    .replace('/', "::")
                    .trim_end_matches("::mod")
                    .to_owned();
                found.push((module, path));
            }
        }
    }
    found.sort();
    found
}

/// The code of a file before its unit tests.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    match text.find("#[cfg(test)]") {
        Some(tests) => text[..tests].to_owned(),
        None => text,
    }
}

#[test]
fn the_top_of_src_shows_the_layers_in_at_most_twelve_entries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let entries: Vec<String> = std::fs::read_dir(root)
        .expect("read src")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert!(
        entries.len() <= 12,
        "{} entries: {entries:?}",
        entries.len()
    );
}

/// How a function's first line starts.
const FN_STARTS: [&str; 8] = [
    "fn ",
    "async fn ",
    "pub fn ",
    "pub async fn ",
    "pub(crate) fn ",
    "pub(crate) async fn ",
    "pub(super) fn ",
    "pub(super) async fn ",
];

#[test]
fn no_file_is_over_700_lines_and_no_function_over_80() {
    let mut long = Vec::new();
    for (module, path) in sources() {
        let text = std::fs::read_to_string(&path).expect("read source");
        let lines = text.lines().count();
        if lines > 700 {
            long.push(format!("{module}: {lines} lines"));
        }
        // Unit tests in a file of their own (`mod tests;`) are tests.
        let code = if module.ends_with("::tests") {
            String::new()
        } else {
            code(&path)
        };
        let lines: Vec<&str> = code.lines().collect();
        for (start, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let is_fn = FN_STARTS.iter().any(|p| trimmed.starts_with(p));
            if !is_fn || line.trim_end().ends_with(';') {
                continue;
            }
            let indent = &line[..line.len() - trimmed.len()];
            let close = format!("{indent}}}");
            if let Some(end) = lines[start..].iter().position(|l| *l == close)
                && end + 1 > 80
            {
                long.push(format!(
                    "{module}:{} a function of {} lines",
                    start + 1,
                    end + 1
                ));
            }
        }
        assert!(
            !text.contains("too_many_arguments"),
            "{module} allows too_many_arguments: gather the state into a struct"
        );
    }
    assert!(long.is_empty(), "{long:#?}");
}

/// The layers, bottom first: a module may use its own layer and those
/// below it.
const LAYERS: [&[&str]; 6] = [
    &["protocol", "sync"],
    &["connection", "tls", "certs"],
    &["room"],
    &["server"],
    &["client", "bench", "lab"],
    &["cmd"],
];

fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top))
        .unwrap_or_else(|| panic!("{top} is in no layer: add it to LAYERS and the docs"))
}

#[test]
fn no_module_imports_one_that_imports_it_back_nor_a_layer_above_it() {
    let sources = sources();
    let modules: BTreeSet<&str> = sources.iter().map(|(m, _)| m.as_str()).collect();
    // The innermost module a `crate::a::b::c` path names.
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|candidate| modules.contains(candidate.as_str()))
    };
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &sources {
        if module == "lib" || module == "main" {
            continue;
        }
        for line in code(path).lines() {
            let line = line.split("//").next().unwrap_or_default();
            for (at, _) in line.match_indices("crate::") {
                let rest: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                if let Some(target) = resolve(rest.trim_end_matches(':'))
                    && target != *module
                {
                    imports.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }
    let mut wrong = Vec::new();
    for (module, targets) in &imports {
        for target in targets {
            if imports
                .get(target)
                .is_some_and(|back| back.contains(module))
            {
                wrong.push(format!("{module} and {target} import each other"));
            }
            if layer(target) > layer(module) {
                wrong.push(format!("{module} imports {target}, a layer above it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// No source or document carries what a merge left unresolved.
#[test]
fn no_file_carries_a_merge_conflict_marker() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut folders = vec![
        root.join("src"),
        root.join("tests"),
        root.join("docs"),
        root.join("scripts"),
    ];
    let mut files = vec![root.join("README.md"), root.join("SECURITY.md")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let mut marked = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("<<<<<<< ") || line.starts_with(">>>>>>> ") || line == "=======" {
                marked.push(format!("{}:{}", file.display(), n + 1));
            }
        }
    }
    assert!(marked.is_empty(), "{marked:#?}");
}
