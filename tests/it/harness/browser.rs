//! A real browser: headless Chromium driven through WebDriver
//! (chromedriver, from Debian's `chromium-driver`), pinned to a server's
//! key by its SPKI hash (`--ignore-certificate-errors-spki-list`): the
//! browser accepts that key and no other, as a user who imported our CA
//! would accept our certificate. Every wait is a DOM condition watched by a
//! MutationObserver inside the page, under a deadline.

use super::WAIT;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The web address a `serve --web` in `serve` listens on, from its log.
pub async fn web_addr(serve: &mut super::Serve) -> String {
    let line = serve.wait_for_log("web client listening").await;
    line.split("web=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("web address")
        .to_owned()
}

/// The base64 SHA-256 of the server certificate's SubjectPublicKeyInfo in
/// `cert_pem`: what Chromium pins.
pub fn spki_hash(cert_pem: &Path) -> String {
    let der = chatroom::tls::load_certs(cert_pem).expect("server certificate")[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("X.509");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    data_encoding::BASE64.encode(digest.as_ref())
}

/// Debian's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";

/// One chromedriver and the browsers it runs; killed when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// A chromedriver; `None`, said on stderr, where Chromium or its
    /// driver is not installed (outside CI).
    pub async fn start() -> Option<Driver> {
        let installed = |name: &str| {
            std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| dir.join(name).is_file())
            })
        };
        if !installed("chromedriver") || !Path::new(CHROMIUM).is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install chromium and chromium-driver"
            );
            eprintln!("chromium or chromedriver not installed: browser test not run");
            return None;
        }
        let mut child = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // A group of its own, with the browsers it starts: see `Drop`.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (Debian: apt-get install chromium chromium-driver)");
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = tokio::time::timeout(WAIT, async {
            loop {
                let line = out
                    .next_line()
                    .await
                    .expect("read")
                    .expect("chromedriver starts");
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').to_owned();
                }
            }
        })
        .await
        .expect("chromedriver starts in time");
        // Keep reading its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        Some(Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// A new headless browser (its own profile), pinned to `spki`, at `url`.
    pub async fn open(&self, url: &str, spki: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-breakpad".to_owned(),
            "--disable-crash-reporter".to_owned(),
            "--window-size=820,560".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--ignore-certificate-errors-spki-list={spki}"),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            WAIT * 3,
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&self.url),
        )
        .await
        .expect("browser starts in time")
        .expect("browser session");
        // A page load starts a renderer process, as slow on a busy machine
        // as the browser itself: it gets the browser's time.
        let timeouts = fantoccini::wd::TimeoutConfiguration::new(Some(WAIT), Some(WAIT * 3), None);
        client.update_timeouts(timeouts).await.expect("timeouts");
        client.goto(url).await.expect("page loads");
        Browser {
            client,
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    /// A test that ends before closing its browsers (a failed assertion)
    /// would leave them running: the whole group goes with the driver.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: kill(2) on a process group this driver leads.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

/// One browser window on the chat page.
pub struct Browser {
    pub client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Waits until the JavaScript expression `condition` is truthy in the
    /// page (checked at once and at every change of the DOM); returns its
    /// value. Fails the test after [`WAIT`], saying what it waited for.
    pub async fn wait_for(&self, condition: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const check = () => {{ try {{ return ({condition}); }} catch (e) {{ return null; }} }};
             const first = check();
             if (first) {{ done(first); }} else {{
               const observer = new MutationObserver(() => {{
                 const value = check();
                 if (value) {{ observer.disconnect(); done(value); }}
               }});
               observer.observe(document, {{ subtree: true, childList: true,
                 characterData: true, attributes: true }});
             }}"
        );
        match self.client.execute_async(&script, vec![]).await {
            Ok(value) => value,
            Err(e) => panic!("not in time: {condition}: {e}"),
        }
    }

    /// Ends the browser (chromedriver stops it and waits for it).
    pub async fn close(self) {
        let _ = tokio::time::timeout(WAIT, self.client.close()).await;
    }

    /// The value of the JavaScript expression `expression`.
    pub async fn eval(&self, expression: &str) -> Value {
        self.client
            .execute(&format!("return ({expression});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// Types `text` and Enter into the element with id `id`, as a user
    /// at the keyboard would.
    pub async fn type_into(&self, id: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id}: {e}"));
        let enter: char = fantoccini::key::Key::Enter.into();
        field
            .send_keys(&format!("{text}{enter}"))
            .await
            .unwrap_or_else(|e| panic!("typing into #{id}: {e}"));
    }

    /// Joins as `nick` through the page's prompt.
    pub async fn join(&self, nick: &str) {
        self.wait_for("!document.getElementById('join').hidden && document.getElementById('status').dataset.state === 'online'")
            .await;
        self.type_into("nick", nick).await;
        self.wait_for("!document.getElementById('chat').hidden")
            .await;
    }

    /// The transcript's lines as the server sent them.
    pub async fn transcript(&self) -> Vec<String> {
        let lines = self
            .eval("[...document.querySelectorAll('#transcript .line')].map(l => l.dataset.raw)")
            .await;
        serde_json::from_value(lines).expect("lines")
    }

    /// The lines (as the server sent them) in the transcript of the tab of
    /// `channel`; none if there is no such tab.
    pub async fn tab_lines(&self, channel: &str) -> Vec<String> {
        let lines = self
            .eval(&format!(
                "[...({panel})?.querySelectorAll('.line') ?? []].map(l => l.dataset.raw)",
                panel = panel(channel)
            ))
            .await;
        serde_json::from_value(lines).expect("lines")
    }

    /// Waits until the tab of `channel` shows `line`.
    pub async fn until_in_tab(&self, channel: &str, line: &str) {
        let line = serde_json::to_string(line).expect("JSON");
        self.wait_for(&format!(
            "[...({panel})?.querySelectorAll('.line') ?? []].some(l => l.dataset.raw === {line})",
            panel = panel(channel)
        ))
        .await;
    }

    /// Waits until the tab of `channel` is the one on screen (and the
    /// only transcript shown).
    pub async fn until_on_tab(&self, channel: &str) {
        self.wait_for(&format!(
            "[...document.querySelectorAll('#transcript .panel')]
               .filter(p => !p.hidden).map(p => p.dataset.channel).join() === {channel}
             && {tab}?.querySelector('[role=tab]').getAttribute('aria-selected') === 'true'",
            channel = serde_json::to_string(channel).expect("JSON"),
            tab = tab(channel)
        ))
        .await;
    }

    /// Waits until the unread marker of the tab of `channel` says
    /// `count` (0: no marker).
    pub async fn until_unread(&self, channel: &str, count: u32) {
        self.wait_for(&format!(
            "(t => (t.classList.contains('unread') ? Number(t.querySelector('.unread-count').textContent) : 0) === {count}
               && t.querySelector('.unread-count').hidden === ({count} === 0))({}) || null",
            tab(channel)
        ))
        .await;
    }

    /// Keys pressed where the focus is (fantoccini's `Key`s as chars for
    /// modifiers and arrows; a modifier holds until the end of `keys`).
    pub async fn press(&self, keys: &str) {
        let focused = self.client.active_element().await.expect("focus");
        focused.send_keys(keys).await.expect("keys");
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Waits until the transcript shows `line`.
    pub async fn until_shown(&self, line: &str) {
        let line = serde_json::to_string(line).expect("JSON");
        self.wait_for(&format!(
            "[...document.querySelectorAll('#transcript .line')].some(l => l.dataset.raw === {line})"
        ))
        .await;
    }
}

/// A JavaScript expression: the transcript of the tab of `channel`, or
/// undefined.
fn panel(channel: &str) -> String {
    let channel = serde_json::to_string(channel).expect("JSON");
    format!(
        "[...document.querySelectorAll('#transcript .panel')].find(p => p.dataset.channel === {channel})"
    )
}

/// A JavaScript expression: the tab of `channel` in the tab bar, or
/// undefined.
fn tab(channel: &str) -> String {
    let channel = serde_json::to_string(channel).expect("JSON");
    format!(
        "[...document.querySelectorAll('#tabs .tab')].find(t => t.dataset.channel === {channel})"
    )
}
