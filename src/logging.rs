//! The log filter (`server.log_level`, `SWITCHYARD_LOG`), reloadable, decided per call site
//! instead of per span entry. tracing-subscriber's `EnvFilter` behind a reload layer takes
//! two read locks at every entry into and exit from a span, and each session's span is
//! entered and left at every poll of the session (several per statement): a few percent of
//! the proxy's CPU per statement. [`Levels`] takes levels per module (`info`,
//! `info,switchyard::topology=debug`), which is what `log_level` is written in; it answers
//! each call site once, and a reload makes every call site ask again. Directives that filter
//! by span or field (`[session{client=…}]=debug`) need `EnvFilter`, and get it.
//!
//! A session's span is entered only when something is logged ([`InSpan`], [`Deferred`]):
//! entering and leaving it at every poll, as `Instrument` does, cost 4–5 % of the proxy's
//! instructions per statement, for log lines that are rare.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::Poll;

use arc_swap::ArcSwap;
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Span, Subscriber};
use tracing_core::span::Current;
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

thread_local! {
    /// The span of the task being polled on this thread, by [`InSpan`] (its id as a u64;
    /// 0: none): what [`Deferred`] enters for a log line or span made meanwhile.
    static POLLED: Cell<u64> = const { Cell::new(0) };
}

/// Sets [`POLLED`] for as long as it lives, then puts back what was there.
struct Polling(u64);

impl Polling {
    fn set(span: &Span) -> Polling {
        let id = span.id().map_or(0, |id| id.into_u64());
        Polling(POLLED.replace(id))
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        POLLED.set(self.0);
    }
}

/// A future whose log lines carry `span`'s fields, as with `Instrument::instrument`, but
/// with the span entered only for a line (or a span) made while it is polled, by
/// [`Deferred`], rather than at every poll.
pub struct InSpan<F> {
    span: Span,
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> InSpan<F> {
    pub fn new(span: Span, inner: F) -> InSpan<F> {
        InSpan {
            span,
            inner: Some(Box::pin(inner)),
        }
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _polling = Polling::set(&this.span);
        match this.inner.as_mut() {
            Some(inner) => inner.as_mut().poll(cx),
            // Only after drop, which polls nothing.
            None => Poll::Pending,
        }
    }
}

impl<F> Drop for InSpan<F> {
    fn drop(&mut self) {
        // What the future logs as it is dropped carries the span too.
        let _polling = Polling::set(&self.span);
        self.inner = None;
    }
}

/// The global subscriber, wrapped: while an [`InSpan`] future is polled, a log line or a
/// span made with no span entered gets that future's span, entered around it. Everything
/// else is passed through.
pub struct Deferred<S>(pub S);

impl<S: Subscriber> Deferred<S> {
    /// Runs `f` with the polled future's span entered, when there is one and no other span
    /// is (a span entered within the poll already has it as an ancestor).
    fn within<R>(&self, contextual: bool, f: impl FnOnce() -> R) -> R {
        let polled = POLLED.get();
        if !contextual || polled == 0 || self.0.current_span().id().is_some() {
            return f();
        }
        let id = Id::from_u64(polled);
        self.0.enter(&id);
        let result = f();
        self.0.exit(&id);
        result
    }
}

impl<S: Subscriber> Subscriber for Deferred<S> {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        self.0.register_callsite(meta)
    }

    // A filter by span (`EnvFilter`'s `[session]=debug`) looks at the spans entered.
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.within(true, || self.0.enabled(meta))
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.within(span.is_contextual(), || self.0.new_span(span))
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.0.record(span, values);
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.0.record_follows_from(span, follows);
    }

    fn event_enabled(&self, event: &Event<'_>) -> bool {
        self.within(event.is_contextual(), || self.0.event_enabled(event))
    }

    fn event(&self, event: &Event<'_>) {
        self.within(event.is_contextual(), || self.0.event(event));
    }

    fn enter(&self, span: &Id) {
        self.0.enter(span);
    }

    fn exit(&self, span: &Id) {
        self.0.exit(span);
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.0.clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.0.try_close(id)
    }

    fn current_span(&self) -> Current {
        let current = self.0.current_span();
        if current.id().is_some() || POLLED.get() == 0 {
            return current;
        }
        self.within(true, || self.0.current_span())
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

    /// Log lines, as a fmt subscriber writes them.
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn taken(&self) -> Vec<String> {
            let bytes = std::mem::take(&mut *self.0.lock().expect("lines"));
            String::from_utf8(bytes)
                .expect("utf-8")
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// Runs `body` with a text log written to `lines`, filtered by `filter`, the way
    /// `main` installs it (behind [`Deferred`]).
    fn logged<L>(filter: L, body: impl FnOnce(&Lines))
    where
        L: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        let lines = Lines::default();
        let writer = lines.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone());
        let subscriber = Deferred(tracing_subscriber::registry().with(filter).with(fmt));
        tracing::subscriber::with_default(subscriber, || body(&lines));
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn lines_logged_while_a_session_is_polled_carry_its_span() {
        let levels = Levels::parse("info").expect("levels");
        logged(levels, |lines| {
            let span = tracing::info_span!("session", session = 7, peer = "10.0.0.1:5000");
            let session = InSpan::new(span, async {
                tracing::info!("one");
                tokio::task::yield_now().await;
                let child = tracing::info_span!("reset", conn = 3);
                child.in_scope(|| tracing::warn!("two"));
                tracing::debug!("filtered out");
            });
            block_on(session);
            tracing::info!("outside");
            let lines = lines.taken();
            assert_eq!(lines.len(), 3, "{lines:?}");
            assert!(
                lines[0].contains("session{session=7 peer=\"10.0.0.1:5000\"}: one"),
                "{lines:?}"
            );
            assert!(
                lines[1].contains("session{session=7 peer=\"10.0.0.1:5000\"}:reset{conn=3}: two"),
                "a span made within the session is its child: {lines:?}"
            );
            assert!(
                lines[2].ends_with("outside") && !lines[2].contains("session"),
                "{lines:?}"
            );
        });
    }

    #[test]
    fn a_filter_by_span_sees_the_session_span() {
        let filter = tracing_subscriber::EnvFilter::new("info,[session]=debug");
        logged(filter, |lines| {
            let span = tracing::info_span!("session", session = 8);
            block_on(InSpan::new(span, async {
                tracing::debug!("inside");
            }));
            tracing::debug!("outside");
            let lines = lines.taken();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].contains("session{session=8}: inside"), "{lines:?}");
        });
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
