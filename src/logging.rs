//! The log filter (`server.log_level`, `SWITCHYARD_LOG`), reloadable, decided per call site
//! instead of per span entry. tracing-subscriber's `EnvFilter` behind a reload layer takes
//! two read locks at every entry into and exit from a span, and each session's span is
//! entered and left at every poll of the session (several per statement): a few percent of
//! the proxy's CPU per statement. [`Levels`] takes levels per module (`info`,
//! `info,switchyard::topology=debug`), which is what `log_level` is written in; it answers
//! each call site once, and a reload makes every call site ask again. Directives that filter
//! by span or field (`[session{client=…}]=debug`) need `EnvFilter`, and get it.

use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};

/// A global filter of levels per module, shared with the hook that changes it.
#[derive(Clone)]
pub struct Levels(Arc<ArcSwap<Targets>>);

impl Levels {
    /// The filter for `directives`; `None` when they filter by span or field (or are not
    /// directives at all), which takes `EnvFilter`.
    pub fn parse(directives: &str) -> Option<Levels> {
        parse_targets(directives).map(|t| Levels(Arc::new(ArcSwap::from_pointee(t))))
    }

    /// Applies `directives` from now on, for every call site.
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let targets = parse_targets(directives).ok_or_else(|| {
            format!(
                "{directives:?}: filters by span or field take effect only at a restart \
                 (the running filter takes levels per module)"
            )
        })?;
        self.0.store(Arc::new(targets));
        tracing::callsite::rebuild_interest_cache();
        Ok(())
    }

    fn enables(&self, meta: &Metadata<'_>) -> bool {
        self.0.load().would_enable(meta.target(), meta.level())
    }
}

fn parse_targets(directives: &str) -> Option<Targets> {
    if directives.contains(['[', '{']) {
        return None;
    }
    // `EnvFilter` reads an empty filter as "error"; so does this one.
    let directives = match directives.trim() {
        "" => "error",
        d => d,
    };
    Targets::from_str(directives).ok()
}

impl<S: Subscriber> Layer<S> for Levels {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.enables(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.enables(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        <Targets as Layer<S>>::max_level_hint(&self.0.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn enabled(levels: &Levels, target: &str, level: Level) -> bool {
        levels.0.load().would_enable(target, &level)
    }

    #[test]
    fn levels_per_module_are_taken_and_changed() {
        let levels = Levels::parse("info,switchyard::topology=debug").expect("levels");
        assert!(enabled(&levels, "switchyard::session", Level::INFO));
        assert!(!enabled(&levels, "switchyard::session", Level::DEBUG));
        assert!(enabled(
            &levels,
            "switchyard::topology::aurora",
            Level::DEBUG
        ));
        levels.set("warn").expect("a plain level");
        assert!(!enabled(&levels, "switchyard::session", Level::INFO));
        assert!(enabled(&levels, "switchyard::session", Level::WARN));
        assert!(levels.set("debug,[session{client}]=trace").is_err());
        assert!(
            enabled(&levels, "switchyard::session", Level::WARN),
            "a refused change keeps the filter"
        );
    }

    #[test]
    fn span_and_field_filters_are_left_to_env_filter() {
        assert!(Levels::parse("info,[session]=debug").is_none());
        assert!(Levels::parse("[{client=1}]=debug").is_none());
        assert!(Levels::parse("info").is_some());
        assert!(
            Levels::parse("").is_some(),
            "empty: errors only, as EnvFilter"
        );
    }
}
