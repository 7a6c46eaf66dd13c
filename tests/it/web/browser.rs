//! The chat page in headless Chromium against the built `serve --web`:
//! browsers and a terminal client in one room, the nickname prompt's
//! errors, hostile text shown as text, and reconnection after a restart.

use crate::harness::Serve;
use crate::harness::browser::{Browser, Driver, spki_hash, web_addr};
use crate::harness::cli::Running;
use std::path::Path;

/// `serve --web` on `web` in `dir`; the web address it listens on.
async fn serve_web(dir: &Path, web: &str) -> (Serve, String) {
    let mut serve = Serve::start(dir, &["--web", web]).await;
    let addr = web_addr(&mut serve).await;
    (serve, addr)
}

/// The page's URL and the pin of the server's key.
fn page(dir: &Path, web: &str) -> (String, String) {
    let spki = spki_hash(&dir.join("certs/server.pem"));
    (format!("https://{web}/"), spki)
}

/// `chatroom connect` as `nick`, joined.
async fn terminal(dir: &Path, serve: &Serve, nick: &str) -> Running {
    let mut client = Running::start(
        dir,
        &[
            "connect",
            "--addr",
            &serve.addr,
            "--ca",
            "certs/ca.pem",
            "--nick",
            nick,
        ],
    );
    assert_eq!(client.line().await, format!("{nick} joined!"));
    assert_eq!(client.line().await, "Connected to server!");
    client
}

/// The lines from `from` on, up to and including `to`.
fn between(lines: &[String], from: &str, to: &str) -> Vec<String> {
    let start = lines.iter().position(|l| l == from).expect("first line");
    let end = lines.iter().position(|l| l == to).expect("last line");
    lines[start..=end].to_vec()
}

#[tokio::test]
async fn two_browsers_and_a_terminal_client_share_one_transcript_and_hostile_text_stays_text() {
    let dir = tempfile::tempdir().expect("dir");
    let (serve, web) = serve_web(dir.path(), "127.0.0.1:0").await;
    let (url, spki) = page(dir.path(), &web);
    let Some(driver) = Driver::start().await else {
        return;
    };
    let (alice, bob) = tokio::join!(driver.open(&url, &spki), driver.open(&url, &spki));
    alice.join("alice").await;
    bob.join("bob").await;
    let mut carol = terminal(dir.path(), &serve, "carol").await;
    alice.until_shown("carol joined!").await;
    bob.until_shown("carol joined!").await;

    let mut heard = Vec::new();
    alice
        .type_into("line", "hi! the page works from here")
        .await;
    heard.push(carol.line().await);
    bob.type_into("line", "/me waves from a phone-sized window")
        .await;
    heard.push(carol.line().await);
    carol.type_line("and I am in a terminal").await;
    heard.push(carol.line().await);
    assert_eq!(
        heard,
        [
            "alice: hi! the page works from here",
            "* bob waves from a phone-sized window",
            "carol: and I am in a terminal",
        ]
    );
    alice.type_into("line", "/msg bob see you at the lab").await;
    // A private line reaches bob and alice only (not carol); bob's page
    // marks it.
    bob.wait_for(
        "[...document.querySelectorAll('#transcript .line.private')]
          .some(l => l.dataset.raw === '[private] alice -> bob: see you at the lab')",
    )
    .await;
    screenshot(&bob).await;

    let payloads = [
        "<img src=x onerror=alert(1)>",
        "</script><script>alert(2)</script>",
    ];
    for payload in payloads {
        alice.type_into("line", payload).await;
        heard.push(carol.line().await);
    }
    carol.type_line("bye").await;
    heard.push(carol.line().await);
    assert_eq!(heard.last().map(String::as_str), Some("carol: bye"));

    let mut expected = vec!["carol joined!".to_owned()];
    expected.extend(heard);
    for browser in [&alice, &bob] {
        browser.until_shown("carol: bye").await;
        let shown = browser.transcript().await;
        let public: Vec<String> = between(&shown, "carol joined!", "carol: bye")
            .into_iter()
            .filter(|line| !line.starts_with("[private] "))
            .collect();
        assert_eq!(public, expected);
        // Shown as text: no new element, no alert.
        let images = browser
            .eval("document.querySelectorAll('img').length")
            .await;
        assert_eq!(images, 0);
        let scripts = browser.eval("document.scripts.length").await;
        assert_eq!(scripts, 1);
        let text = browser
            .eval("[...document.querySelectorAll('#transcript .line')].map(l => l.textContent).join('\\n')")
            .await;
        for payload in payloads {
            assert!(text.as_str().expect("text").contains(payload), "{text}");
        }
        assert!(
            browser.client.get_alert_text().await.is_err(),
            "an alert opened"
        );
    }
    alice.close().await;
    bob.close().await;
    let (ok, said) = carol.end().await;
    assert!(ok, "{said}");
}

/// The page with a short conversation, for the docs. Kept in docs/ when
/// `CHATROOM_SCREENSHOT=1` (the times in it change at every run).
async fn screenshot(browser: &Browser) {
    let png = browser.client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if std::env::var_os("CHATROOM_SCREENSHOT").is_some_and(|v| v == "1") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/web-client.png");
        std::fs::write(&path, png).expect("write the screenshot");
    }
}

#[tokio::test]
async fn the_nickname_prompt_shows_the_servers_refusal_and_takes_another_name_and_fits_a_phone() {
    let dir = tempfile::tempdir().expect("dir");
    let (serve, web) = serve_web(dir.path(), "127.0.0.1:0").await;
    let (url, spki) = page(dir.path(), &web);
    let mut bob = terminal(dir.path(), &serve, "bob").await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let browser = driver.open(&url, &spki).await;
    browser
        .wait_for("document.getElementById('status').dataset.state === 'online'")
        .await;
    browser.type_into("nick", "bob").await;
    let error = browser
        .wait_for("document.getElementById('join-error').textContent")
        .await;
    assert_eq!(error, "nickname \"bob\" is taken");
    // The prompt is still there, its field focused: a new name and Enter.
    let field = browser
        .client
        .find(fantoccini::Locator::Id("nick"))
        .await
        .expect("field");
    field.clear().await.expect("clear");
    browser.type_into("nick", "bobby").await;
    browser
        .wait_for("!document.getElementById('chat').hidden")
        .await;
    assert_eq!(bob.line().await, "bobby joined!");
    // At a phone's width: nothing wider than the screen, the member list
    // above the transcript, the input line on screen.
    browser
        .client
        .set_window_size(390, 740)
        .await
        .expect("resize");
    let fits = browser
        .wait_for(
            "window.innerWidth <= 400 &&
             document.documentElement.scrollWidth <= window.innerWidth &&
             document.getElementById('members').getBoundingClientRect().bottom <=
               document.getElementById('transcript').getBoundingClientRect().top + 1 &&
             document.getElementById('line').getBoundingClientRect().bottom <= window.innerHeight",
        )
        .await;
    assert_eq!(fits, true);
    browser.close().await;
    let (ok, said) = bob.end().await;
    assert!(ok, "{said}");
}

#[tokio::test]
async fn the_page_reconnects_after_the_server_restarts() {
    let dir = tempfile::tempdir().expect("dir");
    let (serve, web) = serve_web(dir.path(), "127.0.0.1:0").await;
    let (url, spki) = page(dir.path(), &web);
    let Some(driver) = Driver::start().await else {
        return;
    };
    let browser = driver.open(&url, &spki).await;
    browser.join("alice").await;
    let _ = serve.kill_and_log().await;
    browser
        .wait_for("document.getElementById('status').dataset.state === 'reconnecting'")
        .await;
    let shown = browser
        .wait_for("document.getElementById('status').textContent")
        .await;
    assert!(
        shown.as_str().expect("text").starts_with("reconnecting"),
        "{shown}"
    );
    // The same port again: the page comes back by itself, as alice.
    let (serve, _) = serve_web(dir.path(), &web).await;
    browser
        .wait_for(
            "document.getElementById('status').dataset.state === 'online' &&
             [...document.querySelectorAll('#transcript .line')]
               .filter(l => l.dataset.raw === 'alice joined!').length === 2",
        )
        .await;
    let mut carol = terminal(dir.path(), &serve, "carol").await;
    browser.until_shown("carol joined!").await;
    browser.type_into("line", "back again").await;
    assert_eq!(carol.line().await, "alice: back again");
    browser.close().await;
    let (ok, said) = carol.end().await;
    assert!(ok, "{said}");
}

#[tokio::test]
async fn the_browser_trusts_the_pinned_key_only() {
    let dir = tempfile::tempdir().expect("dir");
    let (_serve, web) = serve_web(dir.path(), "127.0.0.1:0").await;
    let (url, _) = page(dir.path(), &web);
    let Some(driver) = Driver::start().await else {
        return;
    };
    // Another key's pin: the certificate is an error again, as without
    // the pin, and the page never runs.
    let other = tempfile::tempdir().expect("dir");
    crate::harness::cli::ok(other.path(), &["gen-certs"]).await;
    let wrong = spki_hash(&other.path().join("certs/server.pem"));
    let browser = driver.open(&url, &wrong).await;
    let page = browser
        .eval("document.getElementById('join') === null && !document.title.includes('chatroom')")
        .await;
    assert_eq!(page, true, "the page loaded under another key's pin");
    browser.close().await;
}
