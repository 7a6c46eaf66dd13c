//! Tests that change what a whole process shares (its open-files limit, its
//! global log subscriber) run in a process of their own: the test binary
//! started again for that one test, so that the tests running beside it on
//! other threads never see the change.

use std::process::Command;

/// Set in the child's environment to the test it runs.
const CHILD: &str = "CHATROOM_TEST_ALONE";

/// Runs `body` in a process of its own. `path` is the test's full path
/// (`concat!(module_path!(), "::name")`). In the test process, this starts
/// the test binary again for that test alone and fails if the test fails
/// there, with what it printed; in that second process, it runs `body`.
pub fn in_own_process(path: &str, body: impl FnOnce()) {
    // libtest names a test by its path without the crate's name.
    let name = path.split_once("::").map_or(path, |(_, rest)| rest);
    if std::env::var(CHILD).as_deref() == Ok(name) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, name)
        .output()
        .expect("the test binary runs again");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{name} failed in its own process:\n{said}"
    );
    // A path that names no test would run nothing, and pass.
    assert!(said.contains(" 1 passed"), "{name} did not run:\n{said}");
}
