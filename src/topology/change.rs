//! From what a discovery round saw to the cluster's next snapshot: instances that stay keep
//! their `Arc` (and so their load counters and health), new ones join, missing ones are
//! dropped after `drain_after` rounds. Pure: the caller publishes and marks the retired.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Cluster, Instance, Role, Status};

/// One instance as a discovery round saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The label (`host:port` or `name:port`), which identifies the instance across rounds.
    pub addr: String,
    /// Where to connect (usually an IP address).
    pub host: String,
    pub port: u16,
    /// The name the instance's TLS certificate is verified against (see [`Instance::tls_name`]).
    pub tls_name: String,
    pub role: Role,
    /// The lag the source reports for it (Aurora); `None` when the source reports none.
    pub reported_lag: Option<Duration>,
}

/// A new snapshot of a cluster and the instances it no longer has.
#[derive(Debug)]
pub struct Change {
    pub cluster: Cluster,
    pub retired: Vec<Arc<Instance>>,
}

/// The cluster after a round that saw `seen`, or `None` when nothing changed. `missing`
/// counts, per reader, the rounds in a row it was not seen; it carries over between rounds.
/// With no writer in `seen` the current writer stays.
pub fn next_cluster(
    current: &Cluster,
    seen: &[Seen],
    missing: &mut BTreeMap<String, u32>,
    drain_after: u32,
) -> Option<Change> {
    let fresh = |s: &Seen| {
        Arc::new(
            Instance::new(
                &current.name,
                &s.addr,
                &s.host,
                s.port,
                s.role,
                Status::Joining,
            )
            .with_policy(&current.policy)
            .with_tls_name(&s.tls_name),
        )
    };
    let writer = match seen.iter().find(|s| s.role == Role::Writer) {
        Some(s) if s.addr == current.writer.addr => Arc::clone(&current.writer),
        Some(s) => fresh(s),
        None => Arc::clone(&current.writer),
    };

    let mut readers: Vec<Arc<Instance>> = Vec::new();
    let mut retired = Vec::new();
    for r in &current.readers {
        let still_reader = seen
            .iter()
            .any(|s| s.role == Role::Reader && s.addr == r.addr && s.addr != writer.addr);
        if still_reader {
            missing.remove(&r.addr);
            readers.push(Arc::clone(r));
            continue;
        }
        if r.addr == writer.addr {
            // Promoted: it is the writer now, as a new instance.
            missing.remove(&r.addr);
            retired.push(Arc::clone(r));
            continue;
        }
        let rounds = missing.entry(r.addr.clone()).or_insert(0);
        *rounds += 1;
        if *rounds >= drain_after {
            missing.remove(&r.addr);
            retired.push(Arc::clone(r));
        } else {
            readers.push(Arc::clone(r));
        }
    }
    for s in seen.iter().filter(|s| s.role == Role::Reader) {
        let known = s.addr == writer.addr || readers.iter().any(|r| r.addr == s.addr);
        if !known {
            readers.push(fresh(s));
        }
    }
    if !Arc::ptr_eq(&writer, &current.writer) {
        retired.push(Arc::clone(&current.writer));
    }
    missing.retain(|addr, _| readers.iter().any(|r| &r.addr == addr));

    let same_readers = readers.len() == current.readers.len()
        && readers
            .iter()
            .zip(&current.readers)
            .all(|(a, b)| Arc::ptr_eq(a, b));
    if same_readers && Arc::ptr_eq(&writer, &current.writer) {
        return None;
    }
    Some(Change {
        cluster: Cluster {
            name: current.name.clone(),
            writer,
            readers,
            tls_mode: current.tls_mode,
            tls: current.tls.clone(),
            policy: Arc::clone(&current.policy),
            superseded: Default::default(),
        },
        retired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendTlsMode;
    use crate::topology::ReadPolicy;

    fn seen(addr: &str, role: Role) -> Seen {
        Seen {
            addr: addr.into(),
            host: addr.into(),
            port: 5432,
            tls_name: addr.into(),
            role,
            reported_lag: None,
        }
    }

    fn cluster(writer: &str, readers: &[&str]) -> Cluster {
        let i = |a: &str, role| Arc::new(Instance::new("c", a, a, 5432, role, Status::Healthy));
        Cluster {
            superseded: Default::default(),
            name: "c".into(),
            writer: i(writer, Role::Writer),
            readers: readers.iter().map(|r| i(r, Role::Reader)).collect(),
            tls_mode: BackendTlsMode::Disable,
            tls: None,
            policy: Arc::new(ReadPolicy {
                slow_start: Duration::from_secs(30),
                weights: [("b".to_owned(), 3)].into_iter().collect(),
                ..ReadPolicy::default()
            }),
        }
    }

    fn addrs(c: &Cluster) -> Vec<&str> {
        c.readers.iter().map(|r| r.addr.as_str()).collect()
    }

    #[test]
    fn the_same_answer_changes_nothing() {
        let c = cluster("w", &["a", "b"]);
        let s = [
            seen("w", Role::Writer),
            seen("b", Role::Reader),
            seen("a", Role::Reader),
        ];
        assert!(next_cluster(&c, &s, &mut BTreeMap::new(), 3).is_none());
    }

    #[test]
    fn a_new_reader_joins_and_the_others_keep_their_counters() {
        let c = cluster("w", &["a"]);
        c.readers[0].load.begin();
        let s = [seen("a", Role::Reader), seen("b", Role::Reader)];
        let change = next_cluster(&c, &s, &mut BTreeMap::new(), 3).expect("changed");
        assert_eq!(addrs(&change.cluster), ["a", "b"]);
        assert!(Arc::ptr_eq(&change.cluster.readers[0], &c.readers[0]));
        assert_eq!(change.cluster.readers[0].load.in_flight(), 1);
        assert_eq!(change.cluster.readers[1].load.status(), Status::Joining);
        assert_eq!(
            change.cluster.readers[1].weight(),
            3,
            "its configured weight"
        );
        assert_eq!(
            change.cluster.readers[1].slow_start(),
            Duration::from_secs(30)
        );
        assert!(Arc::ptr_eq(&change.cluster.policy, &c.policy));
        assert!(Arc::ptr_eq(&change.cluster.writer, &c.writer));
        assert!(change.retired.is_empty());
    }

    #[test]
    fn a_missing_reader_is_dropped_after_drain_after_rounds() {
        let mut c = cluster("w", &["a", "b"]);
        let mut missing = BTreeMap::new();
        let s = [seen("a", Role::Reader)];
        for round in 1..3 {
            assert!(
                next_cluster(&c, &s, &mut missing, 3).is_none(),
                "round {round}"
            );
            assert_eq!(missing.get("b"), Some(&round));
        }
        let change = next_cluster(&c, &s, &mut missing, 3).expect("dropped");
        assert_eq!(addrs(&change.cluster), ["a"]);
        assert_eq!(change.retired.len(), 1);
        assert_eq!(change.retired[0].addr, "b");
        assert!(missing.is_empty());
        c = change.cluster;
        assert!(next_cluster(&c, &s, &mut missing, 3).is_none());
    }

    #[test]
    fn a_reader_seen_again_starts_its_count_over() {
        let c = cluster("w", &["a", "b"]);
        let mut missing = BTreeMap::new();
        let only_a = [seen("a", Role::Reader)];
        let both = [seen("a", Role::Reader), seen("b", Role::Reader)];
        next_cluster(&c, &only_a, &mut missing, 3);
        next_cluster(&c, &only_a, &mut missing, 3);
        next_cluster(&c, &both, &mut missing, 3);
        assert!(missing.is_empty());
        assert!(next_cluster(&c, &only_a, &mut missing, 3).is_none());
    }

    #[test]
    fn a_promoted_reader_becomes_a_new_writer() {
        let c = cluster("w", &["a", "b"]);
        let s = [
            seen("a", Role::Writer),
            seen("a", Role::Reader),
            seen("b", Role::Reader),
            seen("w", Role::Reader),
        ];
        let change = next_cluster(&c, &s, &mut BTreeMap::new(), 3).expect("changed");
        assert_eq!(change.cluster.writer.addr, "a");
        assert_eq!(change.cluster.writer.role, Role::Writer);
        assert_eq!(addrs(&change.cluster), ["b", "w"]);
        assert_eq!(change.cluster.readers[1].role, Role::Reader);
        let retired: Vec<_> = change.retired.iter().map(|i| i.addr.as_str()).collect();
        assert_eq!(retired, ["a", "w"]);
    }
}
