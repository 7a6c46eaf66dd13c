//! `serve --web`: the chat page in a real browser (headless Chromium),
//! and the web port's rules checked from a program (the Origin check, the
//! security headers, TLS only, the TCP port's limits on WebSocket lines).

mod browser;
mod fanout;
mod memory;
mod p12;
mod port;
