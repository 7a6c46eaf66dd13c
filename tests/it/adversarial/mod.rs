//! Attacks on the real server (in process, real TLS on 127.0.0.1) while a
//! few honest clients chat: each attack must end the attacker's connection
//! alone (or slow the attacker alone), and every honest transcript must stay
//! complete and in the one global order. The honest clients are in
//! [`honest`]; the attacks, by theme, in the other modules.

mod honest;
mod hostile;
mod limits;
mod shutdown;
mod slow;

use crate::harness::{TestServer, TlsClient, stuck_reader};

/// A client registered as `stuck` whose kernel takes only a few KiB before
/// it stops reading: what a participant that never reads looks like.
async fn join_stuck_reader(server: &TestServer) -> TlsClient {
    let mut stuck = stuck_reader(server.addr(), server.client_tls.clone()).await;
    stuck.register("stuck").await;
    stuck
}
