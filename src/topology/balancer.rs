//! Reader choice: weighted power of two choices on in-flight queries among the readers that
//! are usable (healthy, not lagging) and not marked down. Two distinct candidates are drawn
//! with probability proportional to their effective weight (weight × slow-start ramp), and
//! the one with fewer in-flight queries per unit of weight wins. The random source is passed
//! in so tests are deterministic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Instance;

/// Weights are compared in thousandths, so a ramp to 10% keeps three significant digits.
const UNIT: u64 = 1000;
/// Where the slow-start ramp begins, in thousandths of the full weight.
const RAMP_FLOOR: u64 = 100;

/// The weight a reader competes with, in thousandths: `weight` × 1000, ramped linearly from
/// 10% to 100% over `window` for a reader that became usable `usable_for` ago (`None`: usable
/// since it was created, no ramp). Never 0.
pub fn effective_weight(weight: u32, usable_for: Option<Duration>, window: Duration) -> u64 {
    let full = u64::from(weight.max(1)) * UNIT;
    let Some(elapsed) = usable_for.filter(|e| *e < window) else {
        return full;
    };
    let progress = elapsed.as_secs_f64() / window.as_secs_f64();
    let share = RAMP_FLOOR as f64 + (UNIT - RAMP_FLOOR) as f64 * progress;
    ((full as f64 * share / UNIT as f64) as u64).clamp(1, full)
}

/// Picks a reader, or `None` when no reader is usable and up (reads then go to the writer).
/// `random(n)` returns a uniform index below `n`.
pub fn pick_reader(
    readers: &[Arc<Instance>],
    now: Instant,
    exclude: Option<&str>,
    mut random: impl FnMut(usize) -> usize,
) -> Option<Arc<Instance>> {
    let candidates: Vec<(&Arc<Instance>, u64)> = readers
        .iter()
        .filter(|r| {
            r.load.status().is_usable() && !r.load.is_down(now) && Some(r.addr.as_str()) != exclude
        })
        .map(|r| (r, r.effective_weight(now)))
        .collect();
    let (a, b) = match candidates.as_slice() {
        [] => return None,
        [(only, _)] => return Some(Arc::clone(only)),
        _ => {
            let a = draw(&candidates, None, &mut random);
            (a, draw(&candidates, Some(a), &mut random))
        }
    };
    let ((a, wa), (b, wb)) = (candidates[a], candidates[b]);
    // b.in_flight / wb < a.in_flight / wa, without division.
    let b_lighter =
        b.load.in_flight() as u128 * u128::from(wa) < a.load.in_flight() as u128 * u128::from(wb);
    Some(Arc::clone(if b_lighter { b } else { a }))
}

/// The reader a session attached to `current` should move to, so that sessions spread
/// over the readers in proportion to their (slow-start ramped) weights: the lightest other
/// usable reader by attached sessions per unit of weight, when moving there makes the spread
/// more even — that reader with this session is still lighter than `current` with it. The
/// move back is then never worth it, so sessions do not swing between readers; `None` when
/// no move evens the spread.
pub fn rebalance_target(
    current: &Instance,
    readers: &[Arc<Instance>],
    now: Instant,
) -> Option<Arc<Instance>> {
    let wc = u128::from(current.effective_weight(now));
    let here = current.load.attached() as u128;
    readers
        .iter()
        .filter(|r| {
            !std::ptr::eq(r.as_ref(), current)
                && r.load.status().is_usable()
                && !r.load.is_down(now)
        })
        .map(|r| {
            (
                r,
                u128::from(r.effective_weight(now)),
                r.load.attached() as u128 + 1,
            )
        })
        // with / w < here / wc, without division.
        .filter(|(_, w, with)| with * wc < here * w)
        .min_by(|(_, wa, a), (_, wb, b)| (a * wb).cmp(&(b * wa)))
        .map(|(r, _, _)| Arc::clone(r))
}

/// The index of a candidate drawn with probability proportional to its weight, leaving out
/// `skip`.
fn draw(
    candidates: &[(&Arc<Instance>, u64)],
    skip: Option<usize>,
    random: &mut impl FnMut(usize) -> usize,
) -> usize {
    let weights = || {
        candidates
            .iter()
            .enumerate()
            .filter(move |(i, _)| Some(*i) != skip)
            .map(|(i, (_, w))| (i, *w))
    };
    let total: u64 = weights().map(|(_, w)| w).sum();
    let mut point = random(usize::try_from(total).unwrap_or(usize::MAX)) as u64;
    let mut last = 0;
    for (i, w) in weights() {
        if point < w {
            return i;
        }
        point -= w;
        last = i;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Attachment, Load, Role, Status};

    fn reader(addr: &str, epoch: Instant) -> Arc<Instance> {
        weighted(addr, 1, epoch)
    }

    fn weighted(addr: &str, weight: u32, epoch: Instant) -> Arc<Instance> {
        Arc::new(Instance {
            cluster: "c".into(),
            addr: addr.into(),
            host: "h".into(),
            port: 1,
            tls_name: "h".into(),
            role: Role::Reader,
            weight: weight.into(),
            slow_start_ms: 30_000.into(),
            load: Load::new(epoch),
        })
    }

    /// A deterministic uniform source (xorshift64).
    fn uniform(seed: u64) -> impl FnMut(usize) -> usize {
        let mut x = seed;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        }
    }

    /// How many of `picks` picks went to each reader, in the order of `rs`.
    fn shares(rs: &[Arc<Instance>], now: Instant, picks: usize) -> Vec<usize> {
        let mut random = uniform(0x9e37_79b9_7f4a_7c15);
        let mut counts = vec![0; rs.len()];
        for _ in 0..picks {
            let p = pick_reader(rs, now, None, &mut random).unwrap();
            counts[rs.iter().position(|r| Arc::ptr_eq(r, &p)).unwrap()] += 1;
        }
        counts
    }

    /// Lets each session (an attachment) move while `rebalance_target` says so, round after
    /// round; returns the sessions per reader and how many moves it took.
    fn settle(
        rs: &[Arc<Instance>],
        mut sessions: Vec<Attachment>,
        now: Instant,
    ) -> (Vec<usize>, usize) {
        let mut moves = 0;
        for _ in 0..10 {
            for s in sessions.iter_mut() {
                if let Some(to) = rebalance_target(&s.0, rs, now) {
                    *s = Attachment::new(&to);
                    moves += 1;
                }
            }
        }
        (rs.iter().map(|r| r.load.attached()).collect(), moves)
    }

    #[test]
    fn sessions_spread_over_a_new_reader_by_weight_and_then_stay() {
        let now = Instant::now();
        let rs = vec![reader("a", now), reader("b", now)];
        let sessions = (0..10).map(|_| Attachment::new(&rs[0])).collect();
        assert_eq!(settle(&rs, sessions, now), (vec![5, 5], 5));

        let rs = vec![weighted("a", 1, now), weighted("b", 3, now)];
        let sessions: Vec<_> = (0..8).map(|_| Attachment::new(&rs[0])).collect();
        assert_eq!(settle(&rs, sessions, now), (vec![2, 6], 6));

        // Balanced within one session: nobody moves back and forth.
        let rs = vec![reader("a", now), reader("b", now)];
        let mut sessions: Vec<_> = (0..3).map(|_| Attachment::new(&rs[0])).collect();
        sessions.extend((0..2).map(|_| Attachment::new(&rs[1])));
        assert_eq!(settle(&rs, sessions, now), (vec![3, 2], 0));
    }

    #[test]
    fn sessions_leave_nothing_for_an_unusable_reader() {
        let now = Instant::now();
        let rs = vec![reader("a", now), reader("b", now)];
        rs[1].load.set_status(Status::Unhealthy);
        let sessions = (0..4).map(|_| Attachment::new(&rs[0])).collect();
        assert_eq!(settle(&rs, sessions, now), (vec![4, 0], 0));
    }

    #[test]
    fn prefers_the_less_loaded_of_two() {
        let now = Instant::now();
        let rs = vec![reader("a", now), reader("b", now)];
        rs[0].load.begin();
        rs[0].load.begin();
        let picked = pick_reader(&rs, now, None, |_| 0).unwrap();
        assert_eq!(picked.addr, "b");
    }

    #[test]
    fn compares_in_flight_queries_per_unit_of_weight() {
        let now = Instant::now();
        let rs = vec![weighted("big", 2, now), weighted("small", 1, now)];
        // big: 1 in flight over weight 2 beats small: 1 over 1, whichever is drawn first.
        rs[0].load.begin();
        rs[1].load.begin();
        for first in [0, 2999] {
            let picked = pick_reader(&rs, now, None, |n| first.min(n - 1)).unwrap();
            assert_eq!(picked.addr, "big", "first draw {first}");
        }
        // big: 3 over 2 loses to small: 1 over 1.
        rs[0].load.begin();
        rs[0].load.begin();
        for first in [0, 2999] {
            let picked = pick_reader(&rs, now, None, |n| first.min(n - 1)).unwrap();
            assert_eq!(picked.addr, "small", "first draw {first}");
        }
    }

    #[test]
    fn skips_down_and_excluded_readers() {
        let now = Instant::now();
        let rs = vec![reader("a", now), reader("b", now), reader("c", now)];
        rs[0].load.mark_down(now, Duration::from_secs(5));
        let picked = pick_reader(&rs, now, Some("b"), |_| 0).unwrap();
        assert_eq!(picked.addr, "c");
        rs[2].load.mark_down(now, Duration::from_secs(5));
        assert!(pick_reader(&rs, now, Some("b"), |_| 0).is_none());
        // Once the back-off has passed the reader is used again.
        let later = now + Duration::from_secs(6);
        assert!(pick_reader(&rs, later, Some("b"), |_| 0).is_some());
    }

    #[test]
    fn skips_readers_that_are_not_healthy() {
        let now = Instant::now();
        let rs = vec![
            reader("a", now),
            reader("b", now),
            reader("c", now),
            reader("d", now),
        ];
        rs[0].load.set_status(Status::Unhealthy);
        rs[1].load.set_status(Status::Joining);
        rs[3].load.set_status(Status::Lagging);
        for first in [0, 999] {
            let picked = pick_reader(&rs, now, None, |n| first.min(n - 1)).unwrap();
            assert_eq!(picked.addr, "c");
        }
        rs[2].load.set_status(Status::Retired);
        assert!(pick_reader(&rs, now, None, |_| 0).is_none());
        rs[2].load.set_health(Status::Healthy, now);
        assert!(
            pick_reader(&rs, now, None, |_| 0).is_none(),
            "retired stays retired"
        );
    }

    #[test]
    fn spreads_over_readers_with_equal_load() {
        let now = Instant::now();
        let rs = vec![reader("a", now), reader("b", now), reader("c", now)];
        for count in shares(&rs, now, 3000) {
            assert!((900..=1100).contains(&count), "{count} of 3000");
        }
    }

    #[test]
    fn idle_readers_get_reads_in_proportion_to_their_weight() {
        let now = Instant::now();
        let rs = vec![weighted("big", 3, now), weighted("small", 1, now)];
        let counts = shares(&rs, now, 4000);
        assert!((2850..=3150).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn slow_start_ramps_a_new_reader_from_a_tenth_of_its_weight() {
        assert_eq!(effective_weight(1, None, Duration::from_secs(30)), 1000);
        assert_eq!(effective_weight(3, None, Duration::from_secs(30)), 3000);
        let ramp = |secs: f64, weight| {
            effective_weight(
                weight,
                Some(Duration::from_secs_f64(secs)),
                Duration::from_secs(30),
            )
        };
        assert_eq!(ramp(0.0, 1), 100);
        assert_eq!(ramp(15.0, 1), 550);
        assert_eq!(ramp(15.0, 2), 1100);
        assert_eq!(ramp(29.999, 1), 999);
        assert_eq!(ramp(30.0, 1), 1000);
        assert_eq!(ramp(3600.0, 1), 1000);
        // "0s" turns the ramp off.
        assert_eq!(
            effective_weight(2, Some(Duration::ZERO), Duration::ZERO),
            2000
        );
    }

    #[test]
    fn a_reader_that_became_usable_takes_a_growing_share() {
        let start = Instant::now();
        let rs = vec![reader("old", start), reader("new", start)];
        rs[1].load.set_status(Status::Joining);
        rs[1].load.set_health(Status::Healthy, start);
        // At first 100 against 1000: about 1 in 11 reads.
        let counts = shares(&rs, start, 2200);
        assert!((120..=280).contains(&counts[1]), "{counts:?}");
        // Half way: 550 against 1000.
        let counts = shares(&rs, start + Duration::from_secs(15), 3100);
        assert!((1000..=1200).contains(&counts[1]), "{counts:?}");
        // After the window: an equal share.
        let counts = shares(&rs, start + Duration::from_secs(30), 2000);
        assert!((900..=1100).contains(&counts[1]), "{counts:?}");
        // Staying healthy does not restart the ramp; recovering does.
        rs[1]
            .load
            .set_health(Status::Healthy, start + Duration::from_secs(40));
        assert_eq!(
            rs[1].effective_weight(start + Duration::from_secs(40)),
            1000
        );
        rs[1]
            .load
            .set_health(Status::Lagging, start + Duration::from_secs(41));
        rs[1]
            .load
            .set_health(Status::Healthy, start + Duration::from_secs(42));
        assert_eq!(rs[1].effective_weight(start + Duration::from_secs(42)), 100);
    }
}
