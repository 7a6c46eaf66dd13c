//! Every command the documents show still runs as written.
//!
//! Each `chatroom ...` line in a fenced code block of README.md, SECURITY.md
//! and docs/*.md (after an optional `$ ` prompt, `\` continuations joined),
//! and each inline code span that starts with `chatroom `, is read by the
//! binary's own command line ([`chatroom::cmd::parse`]) without running
//! anything: starting the servers and clients the docs show would need
//! certificates, ports and peers, while a renamed or removed flag, a value
//! out of range or a missing argument is exactly what clap refuses. Every
//! script a code block runs (`scripts/*.sh`) must exist and be executable,
//! every relative link must lead to a file (and heading) that exists,
//! every test cited must be a function of the file cited beside it (so
//! that moving a test cannot leave the threat model pointing nowhere), and
//! README.md stays short enough to read on arrival.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The most README.md may weigh, in bytes: the rest belongs in docs/.
const README_MAX_BYTES: u64 = 16 * 1024;

/// A value put in place of a `<placeholder>` before parsing.
const PLACEHOLDER_VALUE: &str = "x";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, SECURITY.md and every docs/*.md, by path from the repository.
fn documents() -> Vec<(String, String)> {
    let mut names = vec!["README.md".to_owned(), "SECURITY.md".to_owned()];
    let docs = repo().join("docs");
    let mut more: Vec<String> = fs::read_dir(&docs)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", docs.display()))
        .map(|entry| entry.expect("a docs/ entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    more.sort();
    names.extend(more);
    names
        .into_iter()
        .map(|name| {
            let text = fs::read_to_string(repo().join(&name))
                .unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
            (name, text)
        })
        .collect()
}

/// One command line as a document shows it.
#[derive(Debug)]
struct Shown {
    line: usize,
    text: String,
    /// From a fenced code block (run as is) rather than an inline span.
    fenced: bool,
}

/// The lines of fenced code blocks, continuations joined and a leading
/// `$ ` prompt dropped, and the inline code spans outside them.
fn shown_commands(markdown: &str) -> Vec<Shown> {
    let mut shown = Vec::new();
    let mut in_fence = false;
    let mut pending: Option<Shown> = None;
    let mut open_span: Option<Shown> = None;
    for (index, raw) in markdown.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            shown.extend(pending.take());
            open_span = None;
            continue;
        }
        if !in_fence {
            if trimmed.is_empty() {
                // A code span never crosses a paragraph.
                open_span = None;
            }
            inline_spans(raw, number, &mut open_span, &mut shown);
            continue;
        }
        let (part, continues) = match raw.trim_end().strip_suffix('\\') {
            Some(head) => (head, true),
            None => (raw, false),
        };
        let entry = pending.get_or_insert_with(|| Shown {
            line: number,
            text: String::new(),
            fenced: true,
        });
        if !entry.text.is_empty() {
            entry.text.push(' ');
        }
        entry.text.push_str(part.trim());
        if !continues {
            shown.extend(pending.take());
        }
    }
    shown.extend(pending);
    for entry in &mut shown {
        if let Some(rest) = entry.text.strip_prefix("$ ") {
            entry.text = rest.trim_start().to_owned();
        }
    }
    shown
}

/// The `code spans` of one line of prose. A span still open at the end of
/// the line goes on in the next (`open`), as Markdown reads it within a
/// paragraph; it counts from the line where it started.
fn inline_spans(line: &str, number: usize, open: &mut Option<Shown>, shown: &mut Vec<Shown>) {
    for (i, piece) in line.split('`').enumerate() {
        if i > 0 {
            // A backtick: the span closes, or one opens.
            match open.take() {
                Some(mut span) => {
                    span.text = span.text.trim().to_owned();
                    shown.push(span);
                }
                None => {
                    *open = Some(Shown {
                        line: number,
                        text: String::new(),
                        fenced: false,
                    })
                }
            }
        }
        if let Some(span) = open.as_mut() {
            if i == 0 {
                span.text.push(' ');
            }
            span.text.push_str(piece);
        }
    }
}

/// Replaces each `<placeholder>` with a dummy value.
fn fill_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        match rest[open..].find('>') {
            Some(close) if !rest[open + 1..open + close].contains('<') => {
                out.push_str(&rest[..open]);
                out.push_str(PLACEHOLDER_VALUE);
                rest = &rest[open + close + 1..];
            }
            _ => break,
        }
    }
    out.push_str(rest);
    out
}

/// Splits a command line into words as a shell would, for what the docs
/// use: blanks, single and double quotes, backslash escapes and a `#`
/// comment. Variables are not expanded: the caller refuses them.
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => words.extend(word.take()),
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("a single quote is not closed".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("a double quote is not closed".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("a double quote is not closed".into()),
                    }
                }
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    word.get_or_insert_with(String::new).push(c);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// What a shown line asks to run, once its words are read.
enum Invocation {
    Chatroom(Vec<String>),
    Script(String),
    Other,
}

/// Reads a shown line: `[VAR=value ...] [sudo] chatroom ARGS [&]`,
/// `[VAR=value ...] [sudo] scripts/NAME.sh ...`, or anything else (which is
/// not checked). `Ok(None)`: a line the splitter does not handle (command
/// substitution, pipes, redirections), left alone.
fn invocation(text: &str) -> Result<Option<Invocation>, String> {
    let filled = fill_placeholders(text);
    let program = filled
        .split_whitespace()
        .find(|w| !is_assignment(w) && *w != "sudo")
        .unwrap_or_default();
    if program != "chatroom" && !program.starts_with("scripts/") {
        return Ok(Some(Invocation::Other));
    }
    if ["$(", "|", ">", "<", "&&", ";"]
        .iter()
        .any(|s| filled.contains(s))
    {
        return Ok(None);
    }
    let mut words = shell_words(&filled)?;
    let start = words
        .iter()
        .position(|w| !is_assignment(w) && w != "sudo")
        .unwrap_or(words.len());
    words.drain(..start);
    if words.last().is_some_and(|w| w == "&") {
        words.pop();
    }
    let Some(first) = words.first() else {
        return Ok(Some(Invocation::Other));
    };
    if first == "chatroom" {
        if filled.contains('$') {
            return Err("uses a shell variable: write its value instead".into());
        }
        return Ok(Some(Invocation::Chatroom(words)));
    }
    if first.starts_with("scripts/") {
        return Ok(Some(Invocation::Script(first.clone())));
    }
    Ok(Some(Invocation::Other))
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// Whether clap's refusal is only its way of printing help or the version.
fn is_help(err: &clap::Error) -> bool {
    use clap::error::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

/// Whether clap only misses something: prose names a command
/// (`chatroom bench`, `chatroom certs revoke`) without all it needs, but
/// every word it does give must still be one the command line knows.
fn is_incomplete(err: &clap::Error) -> bool {
    use clap::error::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::MissingRequiredArgument | ErrorKind::MissingSubcommand
    )
}

/// Every problem with the commands one document shows, as
/// `FILE:LINE: ...` sentences; also how many commands were checked.
fn check_document(name: &str, markdown: &str) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for shown in shown_commands(markdown) {
        // An inline span that elides arguments is prose, not a command.
        if !shown.fenced && (shown.text.contains("...") || !shown.text.starts_with("chatroom ")) {
            if shown.text.starts_with("scripts/") {
                check_inline_script(name, &shown, &mut problems);
            }
            continue;
        }
        let at = format!("{name}:{}: `{}`", shown.line, shown.text);
        match invocation(&shown.text) {
            Err(why) => problems.push(format!("{at}: {why}")),
            Ok(Some(Invocation::Chatroom(words))) => {
                checked += 1;
                if let Err(err) = chatroom::cmd::parse(words)
                    && !is_help(&err)
                    && (shown.fenced || !is_incomplete(&err))
                {
                    let said = err.to_string();
                    problems.push(format!(
                        "{at}: the command line refuses it:\n    {}",
                        said.trim().replace('\n', "\n    ")
                    ));
                }
            }
            Ok(Some(Invocation::Script(path))) => {
                checked += 1;
                if let Err(why) = executable(&repo().join(&path)) {
                    problems.push(format!("{at}: {path} {why}"));
                }
            }
            Ok(Some(Invocation::Other)) | Ok(None) => {}
        }
    }
    (problems, checked)
}

/// A script named in prose must exist (it may be one that others source).
fn check_inline_script(name: &str, shown: &Shown, problems: &mut Vec<String>) {
    let path = shown.text.split_whitespace().next().unwrap_or_default();
    if path.ends_with(".sh") && !repo().join(path).is_file() {
        problems.push(format!(
            "{name}:{}: `{}`: {path} does not exist",
            shown.line, shown.text
        ));
    }
}

fn executable(path: &Path) -> Result<(), &'static str> {
    let meta = fs::metadata(path).map_err(|_| "does not exist")?;
    if !meta.is_file() {
        return Err("is not a file");
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("is not executable");
    }
    Ok(())
}

#[test]
fn every_command_the_docs_show_is_one_the_binary_accepts() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, text) in documents() {
        let (found, count) = check_document(&name, &text);
        problems.extend(found);
        checked += count;
    }
    assert!(
        problems.is_empty(),
        "{} command(s) shown in the docs would not run as written:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The extraction itself must find the docs' commands, or this test
    // would pass on nothing.
    assert!(checked >= 30, "only {checked} commands found in the docs");
}

#[test]
fn a_made_up_flag_or_a_missing_script_is_named_with_its_file_and_line() {
    let doc = "# t\n\n```sh\nchatroom serve --addr 0.0.0.0:55555\n$ chatroom serve \\\n  --no-such-flag\nscripts/no-such-script.sh out/\n```\n\nSee `chatroom connect --nick`.\n";
    let (problems, checked) = check_document("docs/t.md", doc);
    assert_eq!(checked, 4, "{problems:?}");
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].starts_with("docs/t.md:5: `chatroom serve --no-such-flag`"),
        "{}",
        problems[0]
    );
    assert!(problems[0].contains("--no-such-flag"), "{}", problems[0]);
    assert!(problems[1].starts_with("docs/t.md:7:"), "{}", problems[1]);
    assert!(problems[1].contains("does not exist"), "{}", problems[1]);
    assert!(problems[2].starts_with("docs/t.md:10:"), "{}", problems[2]);
    assert!(problems[2].contains("--nick"), "{}", problems[2]);
}

#[test]
fn the_splitter_reads_quotes_comments_prompts_and_placeholders() {
    assert_eq!(
        shell_words(r#"chatroom connect --nick "a b" --ca 'c d' e\ f # comment"#).unwrap(),
        ["chatroom", "connect", "--nick", "a b", "--ca", "c d", "e f"]
    );
    assert!(shell_words("chatroom 'open").is_err());
    assert_eq!(
        fill_placeholders("certs revoke <name> --dir <dir>"),
        "certs revoke x --dir x"
    );
    let Ok(Some(Invocation::Chatroom(words))) =
        invocation("SSLKEYLOGFILE=keys.log chatroom serve --addr 127.0.0.1:55551 &")
    else {
        panic!("not read as a chatroom command");
    };
    assert_eq!(words, ["chatroom", "serve", "--addr", "127.0.0.1:55551"]);
    assert!(matches!(invocation("chatroom certs list | head"), Ok(None)));
    assert!(invocation("chatroom connect --addr $NODES").is_err());
}

#[test]
fn readme_fits_in_a_first_read() {
    let size = fs::metadata(repo().join("README.md"))
        .expect("README.md")
        .len();
    assert!(
        size <= README_MAX_BYTES,
        "README.md is {size} bytes, more than {README_MAX_BYTES}: move details into docs/"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> HashSet<String> {
    let mut in_fence = false;
    let mut found = HashSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// The targets of `[text](target)` links in one document.
fn link_targets(markdown: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push((index + 1, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_relative_link_leads_to_a_file_and_heading_that_exist() {
    let documents = documents();
    let mut problems = Vec::new();
    for (name, text) in &documents {
        let dir = repo()
            .join(name)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for (line, target) in link_targets(text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let path: PathBuf = if file.is_empty() {
                repo().join(name)
            } else {
                dir.join(file)
            };
            if !path.exists() {
                problems.push(format!(
                    "{name}:{line}: ({target}): {} does not exist",
                    path.display()
                ));
                continue;
            }
            if fragment.is_empty() || path.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let linked = fs::read_to_string(&path).unwrap_or_default();
            if !anchors(&linked).contains(fragment) {
                problems.push(format!(
                    "{name}:{line}: ({target}): no heading #{fragment} there"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

/// Every `fn NAME` in the Rust files under `dir` (recursively), by name,
/// with the files (from the repository) that hold one.
fn functions_in(dir: &str, found: &mut HashMap<String, Vec<String>>) {
    let Ok(entries) = fs::read_dir(repo().join(dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(file) = entry.file_name().to_str().map(|f| format!("{dir}/{f}")) else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            functions_in(&file, found);
        } else if file.ends_with(".rs") {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            let words: Vec<&str> = text
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|word| !word.is_empty())
                .collect();
            for pair in words.windows(2).filter(|pair| pair[0] == "fn") {
                found
                    .entry(pair[1].to_owned())
                    .or_default()
                    .push(file.clone());
            }
        }
    }
}

/// Whether a code span reads as a test's name: a snake_case identifier of
/// four words or more (shorter ones are other things: `aws_lc_rs`).
fn is_test_name(span: &str) -> bool {
    let snake = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    span.starts_with(|c: char| c.is_ascii_lowercase())
        && span.chars().all(snake)
        && span.matches('_').count() >= 3
}

/// The code spans of one document, in groups within which a cited file
/// stays in force: each table cell, and each paragraph outside tables.
/// Fenced blocks are left out.
fn citation_groups(markdown: &str) -> Vec<Vec<Shown>> {
    let mut groups = Vec::new();
    let mut paragraph = Vec::new();
    let mut open = None;
    let mut in_fence = false;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('|') {
            groups.push(std::mem::take(&mut paragraph));
            open = None;
        }
        if trimmed.starts_with('|') {
            // Cells split at `|`, but not at an escaped `\|`.
            for cell in trimmed.replace("\\|", "\u{0}").split('|') {
                let mut cell_spans = Vec::new();
                inline_spans(
                    &cell.replace('\u{0}', "|"),
                    index + 1,
                    &mut None,
                    &mut cell_spans,
                );
                groups.push(cell_spans);
            }
        } else {
            inline_spans(line, index + 1, &mut open, &mut paragraph);
        }
    }
    groups.push(paragraph);
    groups.retain(|group| !group.is_empty());
    groups
}

/// Every problem with the tests and test files one document cites: a
/// `tests/` or `src/` path that does not exist, a test name that is no
/// function of the file cited before it in its cell or paragraph, a test
/// of `tests/` named without its file, a unit test `module::tests::name`
/// that is no function of a file under that module. Also how many names it
/// checked.
fn check_citations(
    name: &str,
    markdown: &str,
    functions: &HashMap<String, Vec<String>>,
) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for group in citation_groups(markdown) {
        let mut file: Option<&str> = None;
        for span in &group {
            let text = span.text.as_str();
            let at = format!("{name}:{}: `{text}`", span.line);
            let holders = |test: &str| functions.get(test).map(Vec::as_slice).unwrap_or(&[]);
            if (text.starts_with("tests/") || text.starts_with("src/"))
                && !text.contains(|c: char| c.is_whitespace() || "*{<".contains(c))
            {
                if !repo().join(text.trim_end_matches('/')).exists() {
                    problems.push(format!("{at}: no such file"));
                }
                if text.ends_with(".rs") {
                    file = Some(text);
                }
            } else if is_test_name(text) {
                let holders = holders(text);
                let in_tests: Vec<&String> =
                    holders.iter().filter(|h| h.starts_with("tests/")).collect();
                match file {
                    Some(file) if !holders.iter().any(|h| h == file) => {
                        problems.push(format!("{at}: no such function in {file} (in {holders:?})"))
                    }
                    None if !in_tests.is_empty() => {
                        problems.push(format!("{at}: name the file it is in: {in_tests:?}"))
                    }
                    // Not a test of ours: a setting's name, say.
                    None => continue,
                    _ => {}
                }
                checked += 1;
            } else if let Some((module, test)) = text.rsplit_once("::")
                && is_test_name(test)
                && module
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == ':')
            {
                checked += 1;
                let parts: Vec<&str> = module.split("::").filter(|p| *p != "tests").collect();
                let found = holders(test)
                    .iter()
                    .any(|h| h.starts_with("src/") && parts.iter().all(|p| h.contains(p)));
                if !found {
                    problems.push(format!("{at}: no such unit test under src/"));
                }
            }
        }
    }
    (problems, checked)
}

/// Every `fn NAME` under `tests/` and `src/`: see [`functions_in`].
fn all_functions() -> HashMap<String, Vec<String>> {
    let mut functions = HashMap::new();
    functions_in("tests", &mut functions);
    functions_in("src", &mut functions);
    functions
}

#[test]
fn every_test_the_docs_cite_is_in_the_file_they_name() {
    let functions = all_functions();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, text) in documents() {
        let (found, count) = check_citations(&name, &text, &functions);
        problems.extend(found);
        checked += count;
    }
    assert!(
        problems.is_empty(),
        "{} citation(s) in the docs lead nowhere:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // SECURITY.md's threat model alone cites far more than this.
    assert!(checked >= 80, "only {checked} test names found in the docs");
}

#[test]
fn a_test_cited_under_the_wrong_file_or_a_missing_file_is_named() {
    let doc = "# t\n\n| a | b |\n|---|---|\n| x | `tests/it/chat.rs`: `the_labs_dry_run`, `nicknames_are_unique_valid_and_three_strikes_close`; `tests/it/cli.rs`: `the_labs_dry_run` |\n\nSee `tests/it/no_such_file.rs` and\n`no_such_test_anywhere_at_all`, and `per_address::tests::the_table_forgets_idle_addresses_and_stays_bounded`\nand `certs::tests::the_labs_dry_run`.\n\nAlone: `twenty_senders_one_global_order`, and `max_msgs_per_subject`.\n";
    let (problems, checked) = check_citations("docs/t.md", doc, &all_functions());
    assert_eq!(checked, 7, "{problems:#?}");
    assert_eq!(problems.len(), 5, "{problems:#?}");
    let expected = [
        "docs/t.md:5: `the_labs_dry_run`: no such function in tests/it/cli.rs",
        "docs/t.md:7: `tests/it/no_such_file.rs`: no such file",
        "docs/t.md:8: `no_such_test_anywhere_at_all`",
        "docs/t.md:9: `certs::tests::the_labs_dry_run`",
        "docs/t.md:11: `twenty_senders_one_global_order`: name the file",
    ];
    for (problem, start) in problems.iter().zip(expected) {
        assert!(problem.starts_with(start), "{problem}");
    }
}
