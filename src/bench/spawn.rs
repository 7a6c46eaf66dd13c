//! The server the bench starts itself (`--spawn`), and what /proc says about
//! a server process (resident memory, CPU time).
//!
//! The child is this same executable running `serve` on an ephemeral
//! loopback port, with its defaults except the rate limit (off), in a
//! private temporary folder holding fresh certificates. Its port comes
//! from its own log line, so nothing has to guess or race for a free port.

use anyhow::{Context, Result, anyhow, bail};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the child may take to start listening.
const STARTUP: Duration = Duration::from_secs(15);

/// Log lines of the child kept for an error report.
const LOG_TAIL: usize = 20;

/// The child's log filter: the listening line and warnings, but not one
/// line per join and leave, which would cost the server time we measure.
const SERVER_LOG_FILTER: &str = "warn,chatroom=info,chatroom::server::session=warn";

/// A private temporary folder, removed with everything in it when dropped.
#[derive(Debug)]
pub struct Workdir {
    path: PathBuf,
}

impl Workdir {
    pub fn create() -> Result<Workdir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..16u32 {
            let path = base.join(format!(
                "chatroom-bench-{}-{}",
                std::process::id(),
                stamp.wrapping_add(attempt)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Workdir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create a temporary folder in {}", base.display())
                    });
                }
            }
        }
        bail!(
            "cannot find a free temporary folder name in {}",
            base.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running child server; killed when stopped or dropped.
pub struct SpawnedServer {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    log_tail: Arc<Mutex<VecDeque<String>>>,
    drain: tokio::task::JoinHandle<()>,
    /// How it was started, to start it again.
    how: Launch,
}

/// Where and how a spawned server runs.
#[derive(Debug, Clone)]
struct Launch {
    workdir: PathBuf,
    plaintext: bool,
    data: Option<PathBuf>,
}

impl SpawnedServer {
    /// Starts `serve` in `workdir` (whose `certs/` must already hold the
    /// server's certificate unless `plaintext`) and waits until it listens.
    /// With `data`, the server keeps its history store in that folder.
    pub async fn start(
        workdir: &Path,
        plaintext: bool,
        data: Option<&Path>,
    ) -> Result<SpawnedServer> {
        let how = Launch {
            workdir: workdir.to_owned(),
            plaintext,
            data: data.map(Path::to_owned),
        };
        Self::launch(how, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Kills it (SIGKILL: its connections end as in a crash) and waits
    /// until it is gone.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        self.drain.abort();
    }

    /// Starts it again, killed or not, on the same address, in the same
    /// folder (the same certificates and store) and with the same options;
    /// returns once the new one listens.
    pub async fn start_again(&mut self) -> Result<()> {
        self.kill().await;
        *self = Self::launch(self.how.clone(), self.addr)
            .await
            .context("cannot start the server again")?;
        Ok(())
    }

    async fn launch(how: Launch, addr: SocketAddr) -> Result<SpawnedServer> {
        let exe = std::env::current_exe()
            .context("cannot find this program's executable to spawn the server")?;
        let mut command = Command::new(&exe);
        command
            .args(["serve", "--rate-limit", "off", "--addr"])
            .arg(addr.to_string())
            .current_dir(&how.workdir)
            .env("RUST_LOG", SERVER_LOG_FILTER)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if how.plaintext {
            command.arg("--plaintext");
        }
        if let Some(dir) = &how.data {
            command.arg("--data").arg(dir);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {} serve", exe.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the spawned server exited at once"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("the spawned server's stderr is not a pipe"))?;
        let mut lines = BufReader::new(stderr).lines();
        let log_tail = Arc::new(Mutex::new(VecDeque::new()));

        let listening = tokio::time::timeout(STARTUP, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = listening_addr(&line) {
                    return Ok(Some(addr));
                }
                keep(&log_tail, &line);
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let addr = match listening {
            Ok(Ok(Some(addr))) => addr,
            Ok(Ok(None)) => bail!(
                "the spawned server exited before listening; it said:\n{}",
                tail_text(&log_tail)
            ),
            Ok(Err(e)) => return Err(e).context("cannot read the spawned server's log"),
            Err(_) => bail!(
                "the spawned server did not listen within {STARTUP:?}; it said:\n{}",
                tail_text(&log_tail)
            ),
        };
        // The child blocks once a full pipe stops being read: keep reading,
        // keeping only the last lines for a post-mortem.
        let tail = log_tail.clone();
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&tail, &line);
            }
        });
        Ok(SpawnedServer {
            child,
            addr,
            pid,
            log_tail,
            drain,
            how,
        })
    }

    /// `Some(why)` if the server is no longer running.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "the spawned server exited ({status}); its last words:\n{}",
                tail_text(&self.log_tail)
            )),
            Ok(None) => None,
            Err(e) => Some(format!("cannot check the spawned server: {e}")),
        }
    }

    pub async fn stop(mut self) {
        self.kill().await;
    }
}

/// Removes whatever a previous server left in `dir`, so the next one's
/// store starts empty (the server makes the folder itself).
pub fn fresh_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot empty {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// What a stopped server's store in `dir` holds, as a report note: lines,
/// bytes per line, and lines stored per second over a run of `seconds`.
pub fn store_note(dir: &Path, seconds: f64) -> String {
    let stats = crate::room::store::Store::open(dir, crate::room::store::Options::default())
        .and_then(|store| store.stats());
    match stats {
        Ok(stats) => {
            let per_line = stats.bytes.checked_div(stats.lines).unwrap_or(0);
            let rate = if seconds > 0.0 {
                format!("{:.0}", stats.lines as f64 / seconds)
            } else {
                "n/a".to_owned()
            };
            format!(
                "history store: {} lines, {} bytes ({per_line} bytes/line), {rate} lines stored/s",
                stats.lines, stats.bytes
            )
        }
        Err(e) => format!("history store: cannot read its stats: {e:#}"),
    }
}

/// The address in the server's `listening addr=...` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening addr=").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn keep(tail: &Mutex<VecDeque<String>>, line: &str) {
    let mut tail = crate::sync::lock(tail);
    if tail.len() == LOG_TAIL {
        tail.pop_front();
    }
    tail.push_back(crate::protocol::sanitize(line).into_owned());
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = crate::sync::lock(tail);
    tail.iter()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A process's resident memory (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("{path} has no readable VmRSS line"))?;
    Ok(kib * 1024)
}

/// A process's CPU time so far (user + system), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from the last ')'. utime and stime are fields 14 and 15.
    let after_name = stat
        .rfind(')')
        .map(|end| &stat[end + 1..])
        .ok_or_else(|| anyhow!("{path} is not in the expected format"))?;
    let mut fields = after_name.split_whitespace().skip(11);
    let mut tick_field = || -> Result<u64> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("{path} is not in the expected format"))
    };
    let (utime, stime) = (tick_field()?, tick_field()?);
    Ok((utime + stime) as f64 / clock_ticks())
}

/// Clock ticks per second for /proc times: `getconf CLK_TCK`, asked once,
/// or Linux's usual 100.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_port_in_the_log_line() {
        let line =
            "2025-01-01T00:00:00Z  INFO chatroom: listening addr=127.0.0.1:40185 mode=\"TLS\"";
        assert_eq!(
            listening_addr(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 40185)))
        );
        assert_eq!(listening_addr("INFO chatroom: open-files limit"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).expect("VmRSS") > 0);
        assert!(cpu_seconds(me).expect("CPU time") >= 0.0);
    }
}
