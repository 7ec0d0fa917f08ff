//! The PostgreSQL frontend/backend protocol (v3): framing, startup, authentication,
//! the messages routing needs, and SQLSTATE codes.

pub mod extended;
pub mod frame;
pub mod md5;
pub mod messages;
pub mod scram;
pub mod scram_client;
pub mod sqlstate;
pub mod startup;
