//! The MySQL client/server protocol: packet framing (16 MiB continuation), compression, the
//! handshake, password authentication on both sides, the packets the proxy writes
//! itself, client commands, and the response bookkeeping the relay needs.
//! Nothing here knows about routing, sessions or pools.

pub mod auth;
pub mod command;
pub mod compress;
pub mod constants;
pub mod handshake;
pub mod messages;
pub mod packet;
pub mod response;
