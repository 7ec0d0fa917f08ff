//! A reloaded config applied to the live topology: each cluster takes its new read policy
//! (weights, lag ceiling, slow start), and a cluster without discovery takes its new
//! `readers` list. Instances that stay keep their `Arc` (and so their sessions, load and
//! health); a reader no longer listed is retired, so sessions on it leave it at their next
//! transaction boundary, as after a discovery round.

use std::sync::Arc;
use std::time::Instant;

use super::{Cluster, Instance, ReadPolicy, Role, Status, Topology, TopologyHandle};
use crate::config::Validated;

impl TopologyHandle {
    /// Publishes the topology `config` describes, built from the current one. The set of
    /// clusters and their writers cannot change live (see [`crate::config::fixed_changes`]);
    /// a cluster the config does not name is kept as it is.
    pub fn reconfigure(&self, config: &Validated) {
        let previous = self.0.rcu(|current| reconfigured(current, config));
        let now = self.0.load();
        for (name, before) in &previous.clusters {
            let after = now.clusters.get(name);
            for reader in &before.readers {
                let kept = after.is_some_and(|c| c.readers.iter().any(|r| Arc::ptr_eq(r, reader)));
                if !kept {
                    reader.load.set_status(Status::Retired);
                }
            }
        }
    }
}

fn reconfigured(current: &Topology, config: &Validated) -> Topology {
    let protocol = config.raw.server.protocol;
    let epoch = Instant::now();
    let clusters = current
        .clusters
        .iter()
        .map(|(name, cluster)| {
            let Some(c) = config.raw.clusters.get(name) else {
                return (name.clone(), Arc::clone(cluster));
            };
            let policy = ReadPolicy::from_config(c, protocol);
            let readers: Vec<Arc<Instance>> = match &c.discovery {
                // Discovery owns the list; the restarted discovery task updates it.
                Some(_) => cluster.readers.clone(),
                None => c
                    .readers
                    .iter()
                    .map(|addr| {
                        cluster
                            .readers
                            .iter()
                            .find(|r| &r.addr == addr)
                            .cloned()
                            .unwrap_or_else(|| {
                                Arc::new(Instance::listed(name, addr, Role::Reader, &policy, epoch))
                            })
                    })
                    .collect(),
            };
            for instance in readers.iter().chain([&cluster.writer]) {
                instance.set_policy(&policy);
            }
            let next = Cluster {
                name: name.clone(),
                writer: Arc::clone(&cluster.writer),
                readers,
                tls_mode: cluster.tls_mode,
                tls: cluster.tls.clone(),
                policy: Arc::new(policy),
                superseded: Default::default(),
            };
            (name.clone(), Arc::new(next))
        })
        .collect();
    Topology { clusters }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, validate};

    fn validated(readers: &str) -> Validated {
        let text = format!(
            "[server]\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:1\"\n\
             [[users]]\nname = \"app\"\npassword = \"x\"\n\
             [clusters.main]\nwriter = \"10.0.0.1:5432\"\n{readers}\n\
             [routing]\nactive = \"main\"\n"
        );
        let raw: Config = toml::from_str(&text).expect("parses");
        validate(raw, &|_| None).expect("valid")
    }

    #[test]
    fn listed_readers_are_kept_added_retired_and_reweighted_in_place() {
        let before = validated("readers = [\"10.0.0.2:5432\", \"10.0.0.3:5432\"]");
        let handle = TopologyHandle::new(Topology::from_config(&before).expect("topology"));
        let old = handle.cluster("main").expect("cluster");
        old.readers[0].load.begin();

        handle.reconfigure(&validated(
            "readers = [\"10.0.0.2:5432\", \"10.0.0.4:5432\"]\nreader_weights = { \"10.0.0.2:5432\" = 5 }",
        ));
        let new = handle.cluster("main").expect("cluster");
        let addrs: Vec<_> = new.readers.iter().map(|r| r.addr.as_str()).collect();
        assert_eq!(addrs, ["10.0.0.2:5432", "10.0.0.4:5432"]);
        assert!(
            Arc::ptr_eq(&new.readers[0], &old.readers[0]),
            "kept with its load"
        );
        assert_eq!(new.readers[0].load.in_flight(), 1);
        assert_eq!(new.readers[0].weight(), 5);
        assert!(Arc::ptr_eq(&new.writer, &old.writer));
        assert_eq!(old.readers[1].load.status(), Status::Retired);
        assert_eq!(new.readers[1].load.status(), Status::Healthy);
    }
}
