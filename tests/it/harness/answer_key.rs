//! The figures docs/lab-answers.md states, for the tests that recompute
//! them: each table there names, just above it, the test that checks it.

use std::path::Path;

/// The rows of the table that follows the mention of `test` in the answer
/// key, header and separator left out: each row's cells, trimmed.
pub fn rows(test: &str) -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/lab-answers.md");
    let text = std::fs::read_to_string(&path).expect("docs/lab-answers.md");
    let at = text
        .find(&format!("`{test}`"))
        .unwrap_or_else(|| panic!("the answer key names no test {test}"));
    let rows: Vec<Vec<String>> = text[at..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
            inner
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "no table after {test} in the answer key");
    rows
}

/// Whether `actual` is what a cell states: the figure itself, or within
/// the tolerance it gives (`46 ± 3`).
pub fn matches(cell: &str, actual: &str) -> bool {
    match cell.split_once('±') {
        Some((figure, tolerance)) => {
            let parse = |s: &str| s.trim().parse::<i64>().expect("a figure");
            let actual: i64 = actual.parse().expect("a number");
            (actual - parse(figure)).abs() <= parse(tolerance)
        }
        None => cell == actual,
    }
}
