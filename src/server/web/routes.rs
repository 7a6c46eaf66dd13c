//! The web port's routes: the chat page (`/`, `/app.js`, `/style.css`,
//! embedded in the binary) and `/chat`, the WebSocket, open only to the
//! page's own origin and the `--web-origin` ones; and the security headers
//! every response carries.

use super::{Conn, Gate, Socket};
use crate::connection::BATCH_BYTES;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use tracing::Instrument;

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// The WebSocket's read buffer, kept between frames, like the framer's: a
/// longer frame grows it for as long as it needs. Its default (128 KiB),
/// or even 4 KiB, would make an idle browser participant cost more than
/// one and a half TCP ones (docs/performance.md).
const READ_BUFFER: usize = 512;

/// The Content-Security-Policy of every response: the page's own files
/// only, no inline script or style, never in a frame.
pub(crate) const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The headers every response carries.
const SECURITY_HEADERS: [(HeaderName, &str); 6] = [
    (header::CONTENT_SECURITY_POLICY, CSP),
    (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CACHE_CONTROL, "no-cache"),
];

pub(super) fn router(gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/", get(|| file(PAGE, "text/html; charset=utf-8")))
        .route(
            "/app.js",
            get(|| file(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route("/style.css", get(|| file(STYLE, "text/css; charset=utf-8")))
        .route("/chat", get(chat))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::map_response(secure))
        .with_state(gate)
}

async fn file(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `/chat`: the upgrade to a WebSocket participant, if its origin may.
async fn chat(
    State(gate): State<Arc<Gate>>,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &gate.origins) {
        tracing::info!(peer = %conn.peer, "web: refused a WebSocket from another origin");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let Some(held) = conn.take() else {
        return (StatusCode::CONFLICT, "connection already upgraded\n").into_response();
    };
    let max_line = gate.limits.max_line;
    let span = tracing::info_span!("conn", peer = %conn.peer, transport = "web");
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(BATCH_BYTES)
        .max_message_size(max_line + 1)
        .max_frame_size(max_line + 1)
        .on_upgrade(move |ws| {
            gate.participant(Socket::new(ws, max_line), held)
                .instrument(span)
        })
}

/// Whether a WebSocket with these headers may open: a browser sends its
/// page's origin, which must be this server's own (`https://` and the Host
/// the browser reached, which TLS vouches for: the certificate names it)
/// or one of `allowed`. Without an Origin the client is no browser, and
/// could send any Origin it liked: there is no page to protect.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let own = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(|host| format!("https://{host}"));
    own.iter()
        .chain(allowed)
        .any(|ok| ok.eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn only_the_pages_own_origin_and_the_allowed_ones_may_open_the_websocket() {
        let host = (header::HOST, "chat.example:8443");
        let allowed = ["https://other.example".to_owned()];
        let own = headers(&[host.clone(), (header::ORIGIN, "https://chat.example:8443")]);
        assert!(origin_allowed(&own, &allowed));
        let listed = headers(&[host.clone(), (header::ORIGIN, "https://other.example")]);
        assert!(origin_allowed(&listed, &allowed));
        for foreign in [
            "https://evil.example",
            "http://chat.example:8443",
            "https://chat.example",
            "null",
        ] {
            let request = headers(&[host.clone(), (header::ORIGIN, foreign)]);
            assert!(!origin_allowed(&request, &allowed), "{foreign}");
        }
        let no_host = headers(&[(header::ORIGIN, "https://chat.example:8443")]);
        assert!(!origin_allowed(&no_host, &[]));
    }
}
