//! Wire protocols: framing and the few messages the proxy must read or write itself.
//! Nothing here knows about routing, sessions or pools.

pub mod mysql;
pub mod postgres;
