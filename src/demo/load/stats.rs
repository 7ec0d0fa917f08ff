//! What the load measured, shared by every session without locks on the hot path: statement
//! counts, errors with their texts, read-your-writes checks, and latency histograms.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sub-buckets per power of two: a bucket spans at most a quarter of its lower bound.
const SUB_BUCKETS: u64 = 4;
const BUCKETS: usize = 256;
/// How many distinct error texts are shown as they happen (all are counted).
const SHOWN_ERROR_TEXTS: usize = 10;

/// A latency histogram in microseconds: exact below 8 µs, then four buckets per power of
/// two (about 19 % wide), so a percentile is read as its bucket's upper bound.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
}

fn bucket(us: u64) -> usize {
    if us < 2 * SUB_BUCKETS {
        return us as usize;
    }
    let msb = 63 - u64::from(us.leading_zeros()); // >= 3
    let sub = (us >> (msb - 2)) & (SUB_BUCKETS - 1);
    (2 * SUB_BUCKETS + (msb - 3) * SUB_BUCKETS + sub) as usize
}

/// The largest value that falls in `index`.
fn upper_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < 2 * SUB_BUCKETS {
        return index;
    }
    let i = index - 2 * SUB_BUCKETS;
    let (msb, sub) = (i / SUB_BUCKETS + 3, i % SUB_BUCKETS);
    ((SUB_BUCKETS + sub + 1) << (msb - 2)) - 1
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(us).min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile (0.99 for p99), or `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        quantile_of(&counts, q)
    }

    /// Moves everything recorded so far into `total` (so this holds one interval's worth).
    pub fn drain_into(&self, total: &Histogram) {
        for (mine, theirs) in self.buckets.iter().zip(&total.buckets) {
            theirs.fetch_add(mine.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

fn quantile_of(counts: &[u64], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (index, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(Duration::from_micros(upper_bound(index)));
        }
    }
    None
}

/// Everything the sessions count.
pub struct Stats {
    started: Instant,
    pub statements: AtomicU64,
    pub errors: AtomicU64,
    error_texts: Mutex<BTreeMap<String, u64>>,
    pub write_transactions: AtomicU64,
    pub read_your_writes_checks: AtomicU64,
    pub read_your_writes_misses: AtomicU64,
    /// Latencies since the last progress line; drained into `total` every second.
    pub interval: Histogram,
    pub total: Histogram,
    /// Microseconds since `started` when the cutover began and ended (`u64::MAX`: not yet).
    cutover_from: AtomicU64,
    cutover_to: AtomicU64,
    /// The slowest statement that ran while the cutover did, in microseconds.
    slowest_during_cutover: AtomicU64,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            statements: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_texts: Mutex::new(BTreeMap::new()),
            write_transactions: AtomicU64::new(0),
            read_your_writes_checks: AtomicU64::new(0),
            read_your_writes_misses: AtomicU64::new(0),
            interval: Histogram::new(),
            total: Histogram::new(),
            cutover_from: AtomicU64::new(u64::MAX),
            cutover_to: AtomicU64::new(u64::MAX),
            slowest_during_cutover: AtomicU64::new(0),
        }
    }

    fn micros_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_micros()).unwrap_or(u64::MAX)
    }

    /// One statement that succeeded after running from `start` until now.
    pub fn statement(&self, start: Instant) {
        self.record(start, Instant::now());
    }

    fn record(&self, start: Instant, end: Instant) {
        let latency = end.saturating_duration_since(start);
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.interval.record(latency);
        let (from, to) = (
            self.cutover_from.load(Ordering::Relaxed),
            self.cutover_to.load(Ordering::Relaxed),
        );
        if self.micros_since_start(start) < to && self.micros_since_start(end) > from {
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.slowest_during_cutover.fetch_max(us, Ordering::Relaxed);
        }
    }

    /// Counts an error; `true` the first time its text is seen, for the first
    /// [`SHOWN_ERROR_TEXTS`] texts.
    pub fn error(&self, text: String) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut texts = self
            .error_texts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = texts.entry(text).or_default();
        *count += 1;
        *count == 1 && texts.len() <= SHOWN_ERROR_TEXTS
    }

    /// Each distinct error text with how often it occurred.
    pub fn error_texts(&self) -> BTreeMap<String, u64> {
        self.error_texts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn cutover_started(&self, at: Instant) {
        let at = self.micros_since_start(at);
        self.cutover_from.store(at, Ordering::Relaxed);
    }

    pub fn cutover_ended(&self, at: Instant) {
        let at = self.micros_since_start(at);
        self.cutover_to.store(at, Ordering::Relaxed);
    }

    /// The slowest statement that overlapped the cutover, if one did.
    pub fn slowest_during_cutover(&self) -> Option<Duration> {
        match self.slowest_during_cutover.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bounded() {
        let mut last = 0;
        for us in 0..100_000u64 {
            let index = bucket(us);
            assert!(index >= last, "{us} µs went back to bucket {index}");
            assert!(upper_bound(index) >= us, "{us} µs above its bucket's bound");
            if index > 0 {
                assert!(upper_bound(index - 1) < us, "{us} µs belongs lower");
            }
            last = index;
        }
        assert!(bucket(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.99), None);
        for _ in 0..99 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_millis(50));
        let p50 = h.quantile(0.5).unwrap();
        assert!((100..=120).contains(&p50.as_micros()), "{p50:?}");
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99.as_micros() <= 120, "{p99:?}");
        let max = h.quantile(1.0).unwrap();
        assert!((50_000..=60_000).contains(&max.as_micros()), "{max:?}");

        let total = Histogram::new();
        h.drain_into(&total);
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(total.quantile(1.0), Some(max));
    }

    #[test]
    fn only_statements_overlapping_the_cutover_count_as_slowest_during_it() {
        let stats = Stats::new();
        let t = |ms| stats.started + Duration::from_millis(ms);
        stats.record(t(1), t(2));
        assert_eq!(stats.slowest_during_cutover(), None, "no cutover yet");
        stats.cutover_started(t(10));
        stats.record(t(5), t(9));
        assert_eq!(stats.slowest_during_cutover(), None, "ended before it");
        stats.record(t(8), t(11));
        stats.cutover_ended(t(20));
        stats.record(t(19), t(40));
        stats.record(t(21), t(90));
        assert_eq!(
            stats.slowest_during_cutover(),
            Some(Duration::from_millis(21)),
            "the longest of those that overlapped"
        );
        assert_eq!(Stats::count(&stats.statements), 5);
    }
}
