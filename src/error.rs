//! Error helpers every layer may use: nothing here imports the rest of the crate.

/// An error and its causes on one line (`connect to db:5432: tls: invalid certificate`),
/// for logs and for the messages clients and operators see.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("connect to db:5432")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_an_error_and_its_sources() {
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(chain(&e), "connect to db:5432: refused");
    }
}
