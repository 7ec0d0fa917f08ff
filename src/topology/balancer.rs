//! Reader choice: power of two choices on in-flight queries among the readers that are
//! healthy and not marked down. The random source is passed in so tests are deterministic.

use std::sync::Arc;
use std::time::Instant;

use super::Instance;

/// Picks a reader, or `None` when no reader is healthy and up (reads then go to the writer).
/// `random(n)` returns a uniform index below `n`.
pub fn pick_reader(
    readers: &[Arc<Instance>],
    now: Instant,
    exclude: Option<&str>,
    mut random: impl FnMut(usize) -> usize,
) -> Option<Arc<Instance>> {
    let mut usable: [Option<&Arc<Instance>>; 2] = [None, None];
    let candidates: Vec<&Arc<Instance>> = readers
        .iter()
        .filter(|r| {
            r.load.status().is_usable() && !r.load.is_down(now) && Some(r.addr.as_str()) != exclude
        })
        .collect();
    match candidates.len() {
        0 => return None,
        1 => return Some(Arc::clone(candidates[0])),
        n => {
            let a = random(n);
            let mut b = random(n - 1);
            if b >= a {
                b += 1;
            }
            usable[0] = Some(candidates[a]);
            usable[1] = Some(candidates[b]);
        }
    }
    let [Some(a), Some(b)] = usable else {
        return None;
    };
    Some(Arc::clone(if b.load.in_flight() < a.load.in_flight() {
        b
    } else {
        a
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Load, Role};
    use std::time::Duration;

    fn reader(addr: &str, epoch: Instant) -> Arc<Instance> {
        Arc::new(Instance {
            cluster: "c".into(),
            addr: addr.into(),
            host: "h".into(),
            port: 1,
            role: Role::Reader,
            load: Load::new(epoch),
        })
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
        let rs = vec![reader("a", now), reader("b", now), reader("c", now)];
        rs[0].load.set_status(crate::topology::Status::Unhealthy);
        rs[1].load.set_status(crate::topology::Status::Joining);
        for _ in 0..5 {
            let picked = pick_reader(&rs, now, None, |n| n - 1).unwrap();
            assert_eq!(picked.addr, "c");
        }
        rs[2].load.set_status(crate::topology::Status::Retired);
        assert!(pick_reader(&rs, now, None, |_| 0).is_none());
        rs[2].load.set_health(crate::topology::Status::Healthy);
        assert!(
            pick_reader(&rs, now, None, |_| 0).is_none(),
            "retired stays retired"
        );
    }

    #[test]
    fn spreads_over_readers_with_equal_load() {
        let now = Instant::now();
        let rs = vec![reader("a", now), reader("b", now), reader("c", now)];
        let mut seen = std::collections::HashSet::new();
        let mut i = 0;
        for _ in 0..9 {
            let p = pick_reader(&rs, now, None, |n| {
                i += 1;
                i % n
            })
            .unwrap();
            seen.insert(p.addr.clone());
        }
        assert_eq!(seen.len(), 3);
    }
}
