//! Which server the client dials: one of the comma-separated `--addr`
//! nodes, picked at random so that clients spread over the nodes of a room
//! instead of all landing on the first, and the others in turn when it does
//! not answer. A name that does not resolve is told as such, without the
//! resolver's own wording.

use anyhow::{Result, bail};
use std::hash::{BuildHasher, Hasher};
use tokio::net::TcpStream;

/// The addresses given, and the one last connected to.
#[derive(Debug)]
pub(crate) struct Dialer {
    addrs: Vec<String>,
    /// Tried last when reconnecting: its node may be the one that is gone.
    last: Option<String>,
}

impl Dialer {
    pub(crate) fn new(addrs: &str) -> Dialer {
        Dialer {
            addrs: addrs
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
            last: None,
        }
    }

    /// The addresses in the order to try them: shuffled, the one last
    /// connected to (if any) at the end.
    fn order(&self) -> Vec<String> {
        let mut order = self.addrs.clone();
        shuffle(&mut order);
        if let Some(last) = &self.last
            && let Some(at) = order.iter().position(|a| a == last)
        {
            let last = order.remove(at);
            order.push(last);
        }
        order
    }

    /// Connects to one of the addresses, trying each once in
    /// [`Dialer::order`]. With `loud`, each failure is told on stderr as it
    /// happens (at start, before the chat is on screen).
    pub(crate) async fn connect(&mut self, loud: bool) -> Result<(TcpStream, String)> {
        let several = self.addrs.len() > 1;
        let mut tried = Vec::new();
        for addr in self.order() {
            match connect_one(&addr).await {
                Ok(tcp) => {
                    self.last = Some(addr.clone());
                    return Ok((tcp, addr));
                }
                Err(why) => {
                    if loud && several {
                        eprintln!("cannot connect to {addr}: {why}; trying the next address");
                    }
                    tried.push((addr, why));
                }
            }
        }
        match tried.as_slice() {
            [] => bail!("no server address given"),
            [(addr, Failure::Unknown)] => {
                bail!("cannot reach {addr}: is the server running there? (its name is not known)")
            }
            [(addr, why)] => {
                bail!("cannot connect to {addr} ({why}): is the server running there?")
            }
            all => bail!(
                "cannot connect to any of {}: are the servers running there?",
                all.iter()
                    .map(|(addr, why)| format!("{addr} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Why one address could not be reached.
#[derive(Debug)]
enum Failure {
    /// Its name does not resolve (the resolver's wording, which speaks of
    /// its own functions, is not shown).
    Unknown,
    /// Not `host:port`.
    Malformed,
    /// Every address it resolves to refused or failed; the last error.
    Connect(std::io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unknown => write!(f, "no such host name"),
            Failure::Malformed => write!(f, "not HOST:PORT"),
            Failure::Connect(e) => write!(f, "{e}"),
        }
    }
}

async fn connect_one(addr: &str) -> Result<TcpStream, Failure> {
    if addr
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(Failure::Malformed);
    }
    let resolved: Vec<_> = tokio::net::lookup_host(addr)
        .await
        .map_err(|_| Failure::Unknown)?
        .collect();
    let mut last = None;
    for socket in resolved {
        match TcpStream::connect(socket).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(Failure::Unknown, Failure::Connect))
}

/// A number no other client (nor this one a moment later) is likely to
/// share: the standard library's per-process random hash keys, over a
/// counter and the time. Good enough to spread clients and their retries,
/// not for anything secret.
pub(crate) fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

/// Fisher-Yates.
fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = (random_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_is_a_permutation_and_the_last_node_goes_last() {
        let mut dialer = Dialer::new("a:1, b:2,,c:3");
        assert_eq!(dialer.addrs, ["a:1", "b:2", "c:3"]);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut order = dialer.order();
            firsts.insert(order[0].clone());
            order.sort();
            assert_eq!(order, ["a:1", "b:2", "c:3"]);
        }
        assert_eq!(firsts.len(), 3, "each address comes first sometimes");
        dialer.last = Some("b:2".into());
        for _ in 0..50 {
            assert_eq!(dialer.order()[2], "b:2");
        }
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_told_plainly() {
        let mut dialer = Dialer::new("no-such-host.invalid:55555");
        let err = dialer
            .connect(false)
            .await
            .expect_err("unknown")
            .to_string();
        assert_eq!(
            err,
            "cannot reach no-such-host.invalid:55555: is the server running there? \
             (its name is not known)"
        );
        let err = Dialer::new("localhost")
            .connect(false)
            .await
            .expect_err("no port");
        assert!(
            err.to_string().contains("localhost (not HOST:PORT)"),
            "{err}"
        );
    }
}
