//! SQLSTATE codes the proxy itself returns, named as in PostgreSQL's errcodes.txt.

pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
/// A Parse of a statement name already in use.
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
pub const CONNECTION_FAILURE: &str = "08006";
pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
pub const INVALID_PASSWORD: &str = "28P01";
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
pub const INTERNAL_ERROR: &str = "XX000";
pub const QUERY_CANCELED: &str = "57014";
/// No usable writer within `failover_timeout`: PostgreSQL's own code while a server starts
/// up or recovers; the statement did not run, and a later try may work.
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// The writer died while a statement ran: whether it committed is unknown.
pub const TRANSACTION_RESOLUTION_UNKNOWN: &str = "08007";
/// The writer died under an open transaction, none of which committed: the class-40 code
/// that drivers and frameworks treat as "roll back and run the transaction again".
pub const SERIALIZATION_FAILURE: &str = "40001";
/// A statement in a transaction that already failed.
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
/// A right the user lacks (e.g. to signal another role's backend).
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// An argument out of its range.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// A WARNING that names no code of its own.
pub const WARNING: &str = "01000";
