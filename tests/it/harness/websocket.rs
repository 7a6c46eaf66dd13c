//! The web port from a program: a WebSocket client (tokio-tungstenite over
//! our own TLS client, pinned to the test CA) and one HTTPS request (hyper's
//! client), for what a browser would not show a test.

use super::{WAIT, tcp, tls_over};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

pub type Ws = WebSocketStream<super::client::TlsStream>;

/// The test CA's client config for the web port: HTTP/1.1 by ALPN rather
/// than the chat protocol.
pub fn web_tls(chat: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut config = (**chat).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Opens `/chat` on `addr`, sending `origin` as the Origin if given.
pub async fn open(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    origin: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let stream = tls_over(tcp(addr).await, tls).await?;
    let mut request = format!("wss://127.0.0.1:{}/chat", addr.port())
        .into_client_request()
        .expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("origin header"));
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("WebSocket handshake in time")?;
    Ok(ws)
}

/// The next text frame; `None` once the server closed. Fails the test
/// after [`WAIT`].
pub async fn line(ws: &mut Ws) -> Option<String> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time");
        match message {
            None | Some(Ok(Message::Close(_))) | Some(Err(_)) => return None,
            Some(Ok(Message::Text(text))) => return Some(text.to_string()),
            Some(Ok(_)) => continue,
        }
    }
}

/// Sends `text` as one text frame.
pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Answers NICK with `nick` and reads the join lines.
pub async fn register(ws: &mut Ws, nick: &str) {
    assert_eq!(line(ws).await.as_deref(), Some("NICK"));
    send(ws, nick).await;
    assert_eq!(line(ws).await, Some(format!("{nick} joined!")));
    assert_eq!(line(ws).await.as_deref(), Some("Connected to server!"));
}

/// `GET path` over HTTPS; the response's status and headers.
pub async fn get(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
) -> (u16, axum::http::HeaderMap) {
    let stream = tls_over(tcp(addr).await, tls).await.expect("TLS");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", format!("127.0.0.1:{}", addr.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("response in time")
        .expect("response");
    (response.status().as_u16(), response.headers().clone())
}
