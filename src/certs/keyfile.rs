//! The checks a private key file passes before anything uses it: the CA key
//! `gen-certs` reuses, the server key `serve` loads, and the client key
//! `connect --key` presents.
//!
//! They look at the file itself with `lstat` (never through a symlink):
//! a symlink could point anywhere, at any time, so it is refused; so is a
//! key owned by another user, or one that group or others may read. Each
//! refusal says how to fix it.

use anyhow::{Context, Result, bail};
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The file's metadata, from `lstat`, refusing a symlink.
pub fn check_not_symlink(path: &Path) -> Result<Metadata> {
    let meta = path
        .symlink_metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symlink: refusing to use it; copy the real file into its place \
             (`cp --remove-destination \"$(readlink -f {p})\" {p}`)",
            path.display(),
            p = path.display()
        );
    }
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(meta)
}

/// Refuses a private key file that is a symlink, belongs to another user,
/// or can be read (or written) by group or others.
pub fn check_private_key(path: &Path) -> Result<()> {
    let meta = check_not_symlink(path)?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "private key {} belongs to user id {}, not to this user ({me}): refusing to use \
             a key another user controls; run `chown {me} {}` if it is really yours",
            path.display(),
            meta.uid(),
            path.display()
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "private key {} has mode {mode:04o}: group or others may read it; \
             run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// The permission bits of a file, from `lstat`.
pub fn mode_of(path: &Path) -> Result<u32> {
    let meta = path
        .symlink_metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(meta.permissions().mode() & 0o7777)
}

/// For each private key in `keys` that lies in a git work tree without
/// being ignored, a warning that `git add .` would commit it. A student's
/// `gen-certs --dir other` inside a clone of the repository makes a CA key
/// that nothing else stops from being committed.
///
/// Asks git itself (`git check-ignore`), so every `.gitignore` and the
/// user's own excludes count. Without git, or outside a work tree, there
/// is nothing to say.
pub fn unignored_in_git(keys: &[&Path]) -> Vec<String> {
    keys.iter()
        .filter(|key| is_unignored_in_git(key))
        .map(|key| {
            format!(
                "warning: {} is in a git work tree and not ignored: `git add .` would commit \
                 this private key; add its folder to .gitignore, or keep certificates outside \
                 the repository",
                key.display()
            )
        })
        .collect()
}

fn is_unignored_in_git(key: &Path) -> bool {
    let (Some(folder), Some(file)) = (key.parent(), key.file_name()) else {
        return false;
    };
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    let checked = std::process::Command::new("git")
        .arg("-C")
        .arg(folder)
        .args(["check-ignore", "-q", "--"])
        .arg(file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    // 0: ignored; 1: in a work tree and not ignored; anything else (128:
    // not a work tree) or no git at all: nothing to warn about.
    matches!(checked.map(|status| status.code()), Ok(Some(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn key_file(dir: &Path, mode: u32) -> std::path::PathBuf {
        let path = dir.join("key.pem");
        fs::write(&path, "key").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn owner_only_keys_pass_and_others_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("temp");
        let path = key_file(dir.path(), 0o600);
        check_private_key(&path).expect("0600 is fine");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = check_private_key(&path).expect_err("0640 is refused");
        assert!(err.to_string().contains("mode 0640"), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");

        let link = dir.path().join("link.pem");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let err = check_private_key(&link).expect_err("a symlink is refused");
        assert!(err.to_string().contains("symlink"), "{err}");
    }
}
