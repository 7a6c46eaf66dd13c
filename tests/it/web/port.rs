//! The web port's rules, from a program: only the page's own origin opens
//! the WebSocket, every response carries the security headers, plain HTTP
//! gets no answer, and a WebSocket participant is held to the TCP port's
//! rules in the same room.

use crate::harness::websocket::{self, get, line, register, send, web_tls};
use crate::harness::{TestCerts, TestServer, WAIT, loopback, tcp, tls_over};
use chatroom::server::web::WebSettings;
use futures_util::SinkExt;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message};

pub(super) async fn web_server(origins: &[&str]) -> (TestServer, SocketAddr) {
    let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
    let server = TestServer::start_with(|settings| {
        settings.web = Some(WebSettings {
            addr: loopback(),
            origins,
        })
    })
    .await;
    let web = server.server.web_addr.expect("web port");
    (server, web)
}

#[tokio::test]
async fn a_websocket_from_another_origin_is_refused_with_403_before_the_upgrade() {
    let (server, web) = web_server(&["https://allowed.example"]).await;
    let tls = web_tls(&server.client_tls);
    let refused = websocket::open(web, tls.clone(), Some("https://evil.example")).await;
    match refused {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        Err(other) => panic!("expected 403, got {other}"),
        Ok(_) => panic!("a foreign origin opened the WebSocket"),
    }
    // The page's own origin and the allowed one may.
    let own = format!("https://127.0.0.1:{}", web.port());
    for origin in [own.as_str(), "https://allowed.example"] {
        let mut ws = websocket::open(web, tls.clone(), Some(origin))
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        assert_eq!(line(&mut ws).await.as_deref(), Some("NICK"));
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let (server, web) = web_server(&[]).await;
    let tls = web_tls(&server.client_tls);
    for (path, status) in [
        ("/", 200),
        ("/app.js", 200),
        ("/style.css", 200),
        ("/nope", 404),
    ] {
        let (got, headers) = get(web, tls.clone(), path).await;
        assert_eq!(got, status, "{path}");
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{path}: no {name}"))
                .to_owned()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(header("strict-transport-security").starts_with("max-age="));
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
    }
}

#[tokio::test]
async fn plain_http_to_the_web_port_gets_no_http_answer() {
    let (_server, web) = web_server(&[]).await;
    let mut plain = tcp(web).await;
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server kept a plain HTTP connection open");
    assert!(!answer.starts_with(b"HTTP"), "{answer:?}");
    // Whatever came back is a TLS alert record (0x15), if anything.
    assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}");
}

#[tokio::test]
async fn a_websocket_participant_chats_with_a_tcp_one_in_the_same_room() {
    let (server, web) = web_server(&[]).await;
    let mut ws = websocket::open(web, web_tls(&server.client_tls), None)
        .await
        .expect("open");
    register(&mut ws, "webby").await;
    let mut tcp_client = server.join("tcpy").await;
    assert_eq!(line(&mut ws).await.as_deref(), Some("tcpy joined!"));
    send(&mut ws, "hello from the web").await;
    tcp_client.expect("webby: hello from the web").await;
    tcp_client.send("hello from tcp").await;
    assert_eq!(
        line(&mut ws).await.as_deref(),
        Some("webby: hello from the web")
    );
    assert_eq!(line(&mut ws).await.as_deref(), Some("tcpy: hello from tcp"));
    // Sanitized as on TCP: the terminal escape is gone.
    send(&mut ws, "red\u{1b}[31m text").await;
    assert_eq!(line(&mut ws).await.as_deref(), Some("webby: red[31m text"));
    send(&mut ws, "/list").await;
    assert_eq!(
        line(&mut ws).await.as_deref(),
        Some("[list] 2 here: tcpy, webby")
    );
}

#[tokio::test]
async fn websocket_frames_over_the_line_limit_or_not_utf8_are_answered_as_on_tcp() {
    let (server, web) = web_server(&[]).await;
    let tls = web_tls(&server.client_tls);
    let mut ws = websocket::open(web, tls.clone(), None).await.expect("open");
    register(&mut ws, "bytes").await;
    ws.send(Message::binary(vec![0xff, 0xfe]))
        .await
        .expect("send");
    assert_eq!(line(&mut ws).await.as_deref(), Some("ERROR invalid UTF-8"));
    // Exactly the limit passes; one byte more ends the session with the
    // TCP port's words.
    let max = chatroom::protocol::DEFAULT_MAX_LINE;
    send(&mut ws, &"a".repeat(max)).await;
    let echoed = line(&mut ws).await.expect("the longest line");
    assert_eq!(echoed.len(), "bytes: ".len() + max);
    send(&mut ws, &"a".repeat(max + 1)).await;
    assert_eq!(line(&mut ws).await.as_deref(), Some("ERROR line too long"));
    assert_eq!(line(&mut ws).await, None);
    // Far over the limit: refused before it is buffered whole, with the
    // same words, unless the rest of the frame the server never read turns
    // its close into a reset first (as it does on TCP).
    let mut ws = websocket::open(web, tls, None).await.expect("open");
    register(&mut ws, "huge").await;
    send(&mut ws, &"b".repeat(max * 64)).await;
    let mut said = Vec::new();
    while let Some(line) = line(&mut ws).await {
        said.push(line);
    }
    assert!(
        said.len() <= 1 && said.iter().all(|l| l == "ERROR line too long"),
        "{said:?}"
    );
    // The TCP side saw neither.
    let mut witness = server.join("witness").await;
    witness.send("/list").await;
    witness.expect("[list] 1 here: witness").await;
}

#[tokio::test]
async fn with_a_client_ca_the_web_port_asks_for_a_certificate_and_binds_the_nickname() {
    use chatroom::server::access::{Access, AccessFiles};
    use chatroom::server::{RunningServer, Settings};
    let certs = TestCerts::new();
    let access = Access::load(AccessFiles {
        client_ca: Some(certs.ca()),
        ..AccessFiles::default()
    })
    .expect("access policy");
    let (config, _) = chatroom::tls::reloadable_server_config_with(
        &certs.path(chatroom::certs::SERVER_CERT),
        &certs.path(chatroom::certs::SERVER_KEY),
        access.client_verifier(),
        chatroom::tls::TlsVersion::Any,
    )
    .expect("server TLS config");
    let mut settings = Settings::new(Some(config));
    settings.access = Some(access);
    settings.web = Some(WebSettings {
        addr: loopback(),
        origins: Vec::new(),
    });
    let server = RunningServer::start(loopback(), settings)
        .await
        .expect("server starts");
    let web = server.web_addr.expect("web port");
    // No certificate: no WebSocket.
    let anonymous = websocket::open(web, web_tls(&certs.client_tls()), None).await;
    assert!(anonymous.is_err(), "opened without a client certificate");
    // alice's certificate: the nickname is alice's, as on the TCP port.
    let (cert, key) = certs.client("alice");
    let tls = web_tls(&certs.client_tls_as(&cert, &key));
    let mut ws = websocket::open(web, tls, None).await.expect("open");
    assert_eq!(line(&mut ws).await.as_deref(), Some("NICK"));
    send(&mut ws, "mallory").await;
    assert_eq!(
        line(&mut ws).await.as_deref(),
        Some("ERROR nickname must be \"alice\" (from your certificate)")
    );
    assert_eq!(line(&mut ws).await.as_deref(), Some("NICK"));
    send(&mut ws, "alice").await;
    assert_eq!(line(&mut ws).await.as_deref(), Some("alice joined!"));
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn the_web_port_presents_the_certificate_a_reload_installs() {
    use chatroom::server::{RunningServer, Settings};
    let certs = TestCerts::new();
    let cert_path = certs.path(chatroom::certs::SERVER_CERT);
    let (config, certificate) = chatroom::tls::reloadable_server_config_with(
        &cert_path,
        &certs.path(chatroom::certs::SERVER_KEY),
        None,
        chatroom::tls::TlsVersion::Any,
    )
    .expect("config");
    let mut settings = Settings::new(Some(config));
    settings.web = Some(WebSettings {
        addr: loopback(),
        origins: Vec::new(),
    });
    let server = RunningServer::start(loopback(), settings)
        .await
        .expect("starts");
    let web = server.web_addr.expect("web port");
    // A client config of its own each time: a resumed session would show
    // the certificate it was made with.
    let presented = || async {
        let stream = tls_over(tcp(web).await, web_tls(&certs.client_tls()))
            .await
            .expect("TLS");
        let certs = stream.get_ref().1.peer_certificates().expect("certificate");
        certs[0].clone()
    };
    let first = presented().await;
    chatroom::certs::generate(&chatroom::certs::GenOptions {
        dir: certs.dir.path().to_path_buf(),
        extra_sans: vec!["chat.lan".into()],
        force: true,
    })
    .expect("gen-certs --force");
    // What SIGHUP does: one reload for both ports.
    certificate.reload().expect("reload");
    let on_disk = chatroom::tls::load_certs(&cert_path).expect("new cert")[0].clone();
    assert_ne!(first, on_disk);
    assert_eq!(presented().await, on_disk);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn web_and_tcp_connections_count_together_against_their_address() {
    let server = TestServer::start_with(|settings| {
        settings.exempt = Vec::new();
        settings.max_per_ip = 1;
        settings.web = Some(WebSettings {
            addr: loopback(),
            origins: Vec::new(),
        });
    })
    .await;
    let web = server.server.web_addr.expect("web port");
    let mut ws = websocket::open(web, web_tls(&server.client_tls), None)
        .await
        .expect("open");
    register(&mut ws, "webby").await;
    // The address's one connection is the WebSocket: TCP is told so.
    let mut tcp_client = server.connect().await;
    tcp_client
        .expect("ERROR too many connections from your address")
        .await;
    // And a second WebSocket is closed at accept.
    let second = websocket::open(web, web_tls(&server.client_tls), None).await;
    assert!(
        second.is_err(),
        "a second connection from the address opened"
    );
}

#[tokio::test]
async fn a_websocket_participant_counts_as_web_in_the_metrics() {
    let mut counted = None;
    let server = TestServer::start_with(|settings| {
        settings.web = Some(WebSettings {
            addr: loopback(),
            origins: Vec::new(),
        });
        counted = Some(settings.metrics.clone());
    })
    .await;
    let web = server.server.web_addr.expect("web port");
    let metrics = counted.expect("the settings were made");
    let participants = |transport: &str| {
        let text = metrics.encode().expect("metrics encode");
        let name = format!("chatroom_participants{{transport=\"{transport}\"}} ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&name))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .to_owned();
        line[name.len()..].trim().parse::<f64>().expect("a number")
    };
    let mut ws = websocket::open(web, web_tls(&server.client_tls), None)
        .await
        .expect("open");
    register(&mut ws, "webby").await;
    let mut tcp_client = server.join("tcpy").await;
    assert_eq!(line(&mut ws).await.as_deref(), Some("tcpy joined!"));
    tcp_client.send("/list").await;
    tcp_client.expect("[list] 2 here: tcpy, webby").await;
    assert_eq!(participants("web"), 1.0);
    assert_eq!(participants("tcp"), 1.0);
}
