//! The results of one scenario, and their two outputs: a human table and
//! one JSON object per line (`--json`) for scripts.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;

/// Everything one scenario measured and found. `None` fields were not
/// measured by this scenario, or could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: String,
    /// `tls` or `plaintext`.
    pub transport: &'static str,
    /// Whether the bench started the server itself (`--spawn`).
    pub spawned: bool,
    pub clients: usize,
    pub senders: usize,
    pub message_bytes: usize,
    pub messages_sent: u64,
    /// Messages received, all clients together (duplicates included).
    pub deliveries: u64,
    /// Messages sent times clients: what a correct server delivers.
    pub expected_deliveries: u64,
    /// Length of the measured phase.
    pub seconds: f64,
    pub deliveries_per_s: Option<f64>,
    pub joins_per_s: Option<f64>,
    /// Send to receipt, over every delivery.
    pub latency_us: Option<Percentiles>,
    /// Connect to end of TLS handshake (TCP connect alone in plaintext).
    pub handshake_us: Option<Percentiles>,
    /// Connect to `Connected to server!`.
    pub join_us: Option<Percentiles>,
    pub resumed_handshakes: Option<usize>,
    pub server_rss_before_bytes: Option<u64>,
    pub server_rss_after_bytes: Option<u64>,
    pub server_rss_per_participant_bytes: Option<f64>,
    /// fanout with `--channels`: how many channels the clients were split
    /// into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// idle with `--channels-each`: the channels every client joined
    /// besides `#lobby`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels_each: Option<usize>,
    /// rejoin: how the connections were cut (`restart`, `connections`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<&'static str>,
    /// rejoin: from the cut until every client was back in the room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_s: Option<f64>,
    /// rejoin: each client's time from the cut to its own `joined!`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_us: Option<Percentiles>,
    /// rejoin: connection attempts, all clients together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    /// rejoin: attempts that were refused or failed, and tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried: Option<u64>,
    /// rejoin: of those, refused because the nickname was still held by
    /// the session that was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried_nick_taken: Option<u64>,
    /// rejoin, big: the room's size as `/list` told it at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_size: Option<usize>,
    /// big: the size the room was to reach, all bench processes together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_total: Option<usize>,
    /// big: from this process's first join until the room had
    /// `room_total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill_s: Option<f64>,
    /// big: from the sending of the one line until the last of this
    /// process's clients had it (the wall clock of this machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast_s: Option<f64>,
    /// Server CPU time (user + system) during the measured phase.
    pub server_cpu_s: Option<f64>,
    /// This bench process's CPU time during the measured phase: on a small
    /// machine it competes with the server for the same cores.
    pub bench_cpu_s: Option<f64>,
    /// False if any check failed: the figures above then mean nothing.
    pub ok: bool,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

impl ScenarioResult {
    pub fn new(scenario: String, transport: &'static str, spawned: bool) -> Self {
        ScenarioResult {
            scenario,
            transport,
            spawned,
            clients: 0,
            senders: 0,
            message_bytes: 0,
            messages_sent: 0,
            deliveries: 0,
            expected_deliveries: 0,
            seconds: 0.0,
            deliveries_per_s: None,
            joins_per_s: None,
            latency_us: None,
            handshake_us: None,
            join_us: None,
            resumed_handshakes: None,
            server_rss_before_bytes: None,
            server_rss_after_bytes: None,
            server_rss_per_participant_bytes: None,
            channels: None,
            channels_each: None,
            cut: None,
            back_s: None,
            back_us: None,
            attempts: None,
            retried: None,
            retried_nick_taken: None,
            room_size: None,
            room_total: None,
            fill_s: None,
            broadcast_s: None,
            server_cpu_s: None,
            bench_cpu_s: None,
            ok: true,
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A scenario that could not run at all.
    pub fn failed(scenario: String, transport: &'static str, spawned: bool, why: String) -> Self {
        let mut result = Self::new(scenario, transport, spawned);
        result.ok = false;
        result.problems.push(why);
        result
    }
}

/// A latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// Highest latency the histograms resolve; anything slower is clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The percentiles of `samples` (microseconds), through an HDR histogram
/// with three significant figures; `None` without samples.
pub fn percentiles<'a>(samples: impl IntoIterator<Item = &'a [u32]>) -> Option<Percentiles> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).ok()?;
    for chunk in samples {
        for &us in chunk {
            histogram.saturating_record(u64::from(us).max(1));
        }
    }
    (!histogram.is_empty()).then(|| Percentiles {
        count: histogram.len(),
        p50: histogram.value_at_quantile(0.50),
        p99: histogram.value_at_quantile(0.99),
        p999: histogram.value_at_quantile(0.999),
        max: histogram.max(),
    })
}

/// One JSON object, one line.
pub fn json_line(result: &ScenarioResult) -> String {
    serde_json::to_string(result).unwrap_or_else(|e| {
        format!(
            r#"{{"scenario":"{}","ok":false,"problems":["cannot encode: {e}"]}}"#,
            result.scenario
        )
    })
}

/// The human table of one scenario.
pub fn table(result: &ScenarioResult) -> String {
    let mut table = Table::default();
    table.heading(result);
    table.traffic(result);
    table.rates(result);
    table.distributions(result);
    table.room(result);
    table.resources(result);
    table.verdict(result);
    table.out
}

/// A table being written: a heading, rows of a name and a value in
/// aligned columns, then indented problems and notes.
#[derive(Default)]
struct Table {
    out: String,
}

impl Table {
    fn line(&mut self, text: std::fmt::Arguments) {
        // Writing into a String cannot fail.
        let _ = writeln!(self.out, "{text}");
    }

    fn row(&mut self, name: &str, value: String) {
        self.line(format_args!("  {name:<22} {value}"));
    }

    fn heading(&mut self, result: &ScenarioResult) {
        let origin = if result.spawned {
            "spawned server"
        } else {
            "running server"
        };
        self.line(format_args!(
            "== {} ({}, {origin}) ==",
            result.scenario, result.transport
        ));
    }

    /// Who took part and how many messages went round.
    fn traffic(&mut self, result: &ScenarioResult) {
        self.row(
            "clients",
            format!("{} ({} sending)", result.clients, result.senders),
        );
        if let Some(n) = result.channels {
            self.row("channels", format!("{n}, each client in one"));
        }
        if let Some(k) = result.channels_each {
            self.row(
                "channels",
                format!("{k} besides #lobby, every client in each"),
            );
        }
        if result.messages_sent == 0 {
            return;
        }
        self.row(
            "messages",
            format!(
                "{} sent, {} bytes each",
                group(result.messages_sent),
                result.message_bytes
            ),
        );
        // Only traffic scenarios time their deliveries; join and idle
        // time the joins, and deliver one check message.
        let timing = match result.deliveries_per_s {
            Some(_) => format!(" in {:.3} s", result.seconds),
            None => String::new(),
        };
        self.row(
            "deliveries",
            format!(
                "{} of {} expected{timing}",
                group(result.deliveries),
                group(result.expected_deliveries),
            ),
        );
    }

    fn rates(&mut self, result: &ScenarioResult) {
        if let Some(rate) = result.deliveries_per_s {
            self.row("deliveries/s", group(rate.round() as u64));
        }
        if let Some(rate) = result.joins_per_s {
            self.row("joins/s", format!("{rate:.0}"));
        }
    }

    /// The latency distributions, and how many joins resumed a session.
    fn distributions(&mut self, result: &ScenarioResult) {
        let named = [
            ("latency", &result.latency_us),
            ("handshake", &result.handshake_us),
            ("connect to joined", &result.join_us),
        ];
        for (name, percentiles) in named {
            if let Some(p) = percentiles {
                self.row(name, format_percentiles(p));
            }
        }
        if let Some(resumed) = result.resumed_handshakes {
            self.row(
                "resumed handshakes",
                format!("{resumed} of {}", result.clients),
            );
        }
    }

    /// rejoin's way back and big's room.
    fn room(&mut self, result: &ScenarioResult) {
        if let Some(cut) = result.cut {
            self.row("cut", cut.to_owned());
        }
        if let Some(back) = result.back_s {
            self.row("all back after", format!("{back:.3} s"));
        }
        if let Some(p) = &result.back_us {
            self.row("each back after", format_percentiles(p));
        }
        if let (Some(attempts), Some(retried)) = (result.attempts, result.retried) {
            let taken = result.retried_nick_taken.unwrap_or(0);
            self.row(
                "attempts",
                format!("{attempts} ({retried} refused or failed and retried, {taken} of them for a nickname still held)"),
            );
        }
        match (result.room_size, result.room_total) {
            (Some(size), Some(total)) => {
                self.row("room", format!("{size} here of {total} expected"))
            }
            (Some(size), None) => self.row("room", format!("{size} here")),
            (None, Some(total)) => self.row(
                "room",
                format!("{total} expected, full when the line was sent"),
            ),
            (None, None) => {}
        }
        if let Some(fill) = result.fill_s {
            self.row("room full after", format!("{fill:.3} s"));
        }
        if let Some(broadcast) = result.broadcast_s {
            self.row("line reached all in", format!("{broadcast:.3} s"));
        }
    }

    /// Memory and CPU time of the server, and CPU time of the bench.
    fn resources(&mut self, result: &ScenarioResult) {
        if let (Some(before), Some(after)) = (
            result.server_rss_before_bytes,
            result.server_rss_after_bytes,
        ) {
            self.row("server RSS", format!("{} -> {}", mib(before), mib(after)));
        }
        if let Some(per) = result.server_rss_per_participant_bytes {
            self.row("RSS per participant", format!("{:.1} KiB", per / 1024.0));
        }
        self.row(
            "server CPU",
            result
                .server_cpu_s
                .map_or("n/a (needs --spawn or --server-pid)".into(), |s| {
                    format!("{s:.2} s")
                }),
        );
        if let Some(cpu) = result.bench_cpu_s {
            self.row("bench CPU", format!("{cpu:.2} s"));
        }
    }

    /// The check's verdict, each problem, and the notes.
    fn verdict(&mut self, result: &ScenarioResult) {
        let verdict = if result.ok && result.scenario == "search" {
            "OK: every search was answered, and found what the store holds".to_string()
        } else if result.ok && result.scenario == "rejoin" {
            "OK: every client came back once, and got every message once".to_string()
        } else if result.ok {
            "OK: every client got every message once, intact, in one order".to_string()
        } else {
            format!("FAILED ({} problem(s))", result.problems.len())
        };
        self.row("check", verdict);
        for problem in &result.problems {
            self.line(format_args!("    ! {problem}"));
        }
        for note in &result.notes {
            self.line(format_args!("  note: {note}"));
        }
    }
}

fn format_percentiles(p: &Percentiles) -> String {
    format!(
        "p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        duration(p.p50),
        duration(p.p99),
        duration(p.p999),
        duration(p.max),
        group(p.count)
    )
}

fn duration(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// 1234567 as "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_formatting() {
        let samples: Vec<u32> = (1..=1000).collect();
        let p = percentiles([samples.as_slice()]).expect("samples");
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, 500);
        assert_eq!(p.max, 1000);
        assert_eq!(percentiles(std::iter::empty()), None);
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(12), "12");
        assert_eq!(duration(1500), "1.50 ms");
    }

    /// Every row the table can have, in order, and the smallest table.
    #[test]
    fn table_layout() {
        let p = Percentiles {
            count: 1500,
            p50: 800,
            p99: 2500,
            p999: 1_200_000,
            max: 3_000_000,
        };
        let mut full = ScenarioResult::new("fanout".into(), "tls", true);
        full.clients = 100;
        full.senders = 100;
        full.message_bytes = 64;
        full.messages_sent = 20_000;
        full.deliveries = 1_999_999;
        full.expected_deliveries = 2_000_000;
        full.seconds = 1.5;
        full.deliveries_per_s = Some(1_333_332.6);
        full.joins_per_s = Some(812.4);
        full.latency_us = Some(p);
        full.handshake_us = Some(p);
        full.join_us = Some(p);
        full.resumed_handshakes = Some(99);
        full.server_rss_before_bytes = Some(10 * 1024 * 1024);
        full.server_rss_after_bytes = Some(15 * 1024 * 1024 + 512 * 1024);
        full.server_rss_per_participant_bytes = Some(5734.4);
        full.server_cpu_s = Some(1.234);
        full.bench_cpu_s = Some(2.5);
        full.ok = false;
        full.problems = vec!["loss: client 3".into(), "incomplete: stalled".into()];
        full.notes = vec!["first note".into(), "second note".into()];
        assert_eq!(
            table(&full),
            "== fanout (tls, spawned server) ==
  clients                100 (100 sending)
  messages               20,000 sent, 64 bytes each
  deliveries             1,999,999 of 2,000,000 expected in 1.500 s
  deliveries/s           1,333,333
  joins/s                812
  latency                p50 800 µs  p99 2.50 ms  p99.9 1.20 s  max 3.00 s  (1,500 samples)
  handshake              p50 800 µs  p99 2.50 ms  p99.9 1.20 s  max 3.00 s  (1,500 samples)
  connect to joined      p50 800 µs  p99 2.50 ms  p99.9 1.20 s  max 3.00 s  (1,500 samples)
  resumed handshakes     99 of 100
  server RSS             10.0 MiB -> 15.5 MiB
  RSS per participant    5.6 KiB
  server CPU             1.23 s
  bench CPU              2.50 s
  check                  FAILED (2 problem(s))
    ! loss: client 3
    ! incomplete: stalled
  note: first note
  note: second note
"
        );

        let mut rejoin = ScenarioResult::new("rejoin".into(), "tls", true);
        rejoin.clients = 20;
        rejoin.senders = 1;
        rejoin.cut = Some("restart");
        rejoin.back_s = Some(0.75);
        rejoin.attempts = Some(23);
        rejoin.retried = Some(3);
        rejoin.retried_nick_taken = Some(1);
        rejoin.room_size = Some(20);
        let text = table(&rejoin);
        for row in [
            "  cut                    restart\n",
            "  all back after         0.750 s\n",
            "  attempts               23 (3 refused or failed and retried, 1 of them for a \
             nickname still held)\n",
            "  room                   20 here\n",
            "  check                  OK: every client came back once, and got every message once\n",
        ] {
            assert!(text.contains(row), "{row:?} in:\n{text}");
        }
        let mut big = ScenarioResult::new("big".into(), "tls", false);
        big.room_total = Some(50_000);
        big.fill_s = Some(61.5);
        big.broadcast_s = Some(0.25);
        let text = table(&big);
        assert!(
            text.contains("  room                   50000 expected, full when the line was sent\n"),
            "{text}"
        );
        assert!(
            text.contains("  room full after        61.500 s\n"),
            "{text}"
        );
        assert!(
            text.contains("  line reached all in    0.250 s\n"),
            "{text}"
        );

        let mut bare = ScenarioResult::new("join".into(), "plaintext", false);
        bare.clients = 5;
        bare.senders = 1;
        assert_eq!(
            table(&bare),
            "== join (plaintext, running server) ==
  clients                5 (1 sending)
  server CPU             n/a (needs --spawn or --server-pid)
  check                  OK: every client got every message once, intact, in one order
"
        );
    }
}
