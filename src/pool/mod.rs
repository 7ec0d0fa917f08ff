//! Backend connections for each protocol: connect, TLS, authenticate. In session mode a
//! session owns its connections; pooling across sessions comes later.

pub mod mysql;
pub mod postgres;

use std::sync::Arc;

use crate::protocol::postgres::scram_client::SaltedPasswords;

/// Who to log in as on the backend.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Option<String>,
    /// PostgreSQL SCRAM: salted passwords computed by earlier logins, shared process-wide.
    pub salted: Arc<SaltedPasswords>,
}
