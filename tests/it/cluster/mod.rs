//! The room shared by several nodes through a real nats-server
//! (JetStream), each test with its own on a free loopback port.

mod auth;
mod channels;
mod forgery;
mod nodes;
mod outage;
mod permissions;
mod private;
mod room;
mod store;
mod store_channels;
