//! `serve --metrics`' endpoint as a scraper sees it: plain HTTP GETs with
//! hyper's client, and the Prometheus text format read back into samples.

use super::{Serve, WAIT};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// A GET of `path` on `addr`, within [`WAIT`]: its status and its body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the metrics port");
        let io = hyper_util::rt::TokioIo::new(tcp);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.expect("body");
        let body = String::from_utf8(body.to_bytes().to_vec()).expect("UTF-8 body");
        (status, body)
    })
    .await
    .unwrap_or_else(|_| panic!("GET {path} took over {WAIT:?}"))
}

/// Where a `serve --metrics` process says it serves them.
pub fn metrics_addr(serve: &Serve) -> SocketAddr {
    let log = serve.log_so_far();
    let rest = log
        .split("metrics_addr=")
        .nth(1)
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
    let addr = rest.split_whitespace().next().expect("an address");
    addr.parse().expect("a socket address")
}

/// One scrape's samples, by name with labels (`name{label="value"}`).
#[derive(Debug)]
pub struct Samples(pub BTreeMap<String, f64>);

impl Samples {
    /// A sample's value; fails the test if it is missing.
    pub fn get(&self, key: &str) -> f64 {
        *self
            .0
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in {:#?}", self.0))
    }
}

/// `GET /metrics`, checked as the Prometheus (OpenMetrics) text format:
/// every sample belongs to a family with a `# TYPE`, values are numbers,
/// and the text ends with `# EOF`.
pub async fn scrape(addr: SocketAddr) -> Samples {
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    parse(&text)
}

/// Reads the Prometheus text format (the subset without timestamps and
/// exemplars that the server writes).
pub fn parse(text: &str) -> Samples {
    let mut families = BTreeSet::new();
    let mut samples = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "text after # EOF:\n{text}");
            return Samples(samples);
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().expect("a family name");
            families.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name = key.split('{').next().expect("a name");
        let family = name
            .strip_suffix("_total")
            .filter(|family| families.contains(*family))
            .unwrap_or(name);
        assert!(families.contains(family), "no # TYPE for {line:?}:\n{text}");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        assert!(
            samples.insert(key.to_owned(), value).is_none(),
            "{line:?} twice"
        );
    }
    panic!("no # EOF at the end:\n{text}")
}
