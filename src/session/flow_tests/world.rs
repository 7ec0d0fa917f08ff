//! The world one case runs in: its scripted servers, the proxy's context over them (config
//! from TOML, the static topology, the routing state), a listener whose every connection is
//! served by `session::run`, and the driver of a case's steps: statements through the
//! client, events applied as discovery, health checks, a dying server or the cutover
//! controller would, and each outcome checked against the journal of received statements.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::client::{Answer, Client};
use super::server::{Journal, Server};
use super::{Case, Event, Expect, Proto, Step, Stmt, Where};
use crate::cutover::Routing;
use crate::session::Context;
use crate::shutdown::Trigger;
use crate::topology::{Cluster, Instance, Role, Status, Topology, TopologyHandle};

/// How long a step may take before the case fails as hung (a bound, not a measurement).
const HUNG: Duration = Duration::from_secs(30);

/// The servers and settings of a case.
#[derive(Debug, Clone, Copy)]
pub(super) struct Setup {
    /// Readers of cluster `old` (`r1`, `r2`), besides its writer `w`.
    pub readers: usize,
    /// A second cluster, `new`: writer `nw`, reader `nr`.
    pub new_cluster: bool,
    /// `read_your_writes = "1h"`: reads stay on the writer after a write; else `"0s"`.
    pub read_your_writes: bool,
    /// `failover_timeout = "300ms"`: a wait for a usable writer gives up soon.
    pub short_failover: bool,
}

/// Runs `case` with `proto`: panics with the step and everything the servers received
/// when an outcome is not the expected one.
pub(super) async fn run(proto: Proto, case: &Case) {
    run_in(proto, case, "session").await;
}

/// Runs `case` with its session in pool mode `mode` (`session`, `transaction`).
pub(super) async fn run_in(proto: Proto, case: &Case, mode: &str) {
    let mut world = World::start(proto, case.setup, mode).await;
    let client = Client::connect(proto, world.proxy).await;
    let mut sent: Option<(Stmt, usize, oneshot::Receiver<Answer>)> = None;
    for (n, step) in case.steps.iter().enumerate() {
        let at = format!("{} step {} {step:?}", proto.name(), n + 1);
        match *step {
            Step::Run(stmt, expect) => {
                let mark = world.journal.len();
                let answer = answer(client.send(proto.sql(stmt)), &at).await;
                world.check(stmt, expect, mark, answer, &at);
            }
            Step::Then(event) => world.apply(event).await,
            Step::Send(stmt) => {
                let mark = world.journal.len();
                sent = Some((stmt, mark, client.send(proto.sql(stmt))));
            }
            Step::Held => {
                let (stmt, mark, _) = sent.as_ref().expect("Held follows Send");
                world.held(proto.sql(*stmt), *mark, &at).await;
            }
            Step::Await(expect) => {
                let (stmt, mark, rx) = sent.take().expect("Await follows Send");
                let answer = answer(rx, &at).await;
                world.check(stmt, expect, mark, answer, &at);
            }
        }
    }
}

async fn answer(rx: oneshot::Receiver<Answer>, at: &str) -> Answer {
    match tokio::time::timeout(HUNG, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => panic!("{at}: the client task ended"),
        Err(_) => panic!("{at}: no answer within {HUNG:?}"),
    }
}

struct World {
    proto: Proto,
    journal: Arc<Journal>,
    servers: Vec<Server>,
    /// `old`'s readers by name.
    readers: Vec<&'static str>,
    /// The reader `AnyReader` found.
    reader: Option<&'static str>,
    /// Transaction mode, PostgreSQL: a plain BEGIN is answered by the proxy and reaches its
    /// server with the transaction's first statement.
    defers_begin: bool,
    /// The server a deferred BEGIN is to reach, with the next statement that runs.
    begin_owed: Option<&'static str>,
    ctx: Arc<Context>,
    proxy: SocketAddr,
    /// Ends the proxy's tasks when the case ends.
    _stop: Trigger,
}

impl World {
    async fn start(proto: Proto, setup: Setup, mode: &str) -> World {
        let journal = Arc::new(Journal::default());
        let readers = ["r1", "r2"][..setup.readers].to_vec();
        let mut names = vec!["w"];
        names.extend(&readers);
        if setup.new_cluster {
            names.extend(["nw", "nr"]);
        }
        let mut servers = Vec::new();
        for name in names {
            servers.push(Server::start(proto, name, Arc::clone(&journal)).await);
        }
        let addr = |name: &str| {
            let server = servers.iter().find(|s| s.name() == name).expect("server");
            format!("\"{}\"", server.addr)
        };
        let old_readers: Vec<String> = readers.iter().map(|r| addr(r)).collect();
        let new = if setup.new_cluster {
            format!(
                "[clusters.new]\nwriter = {}\nreaders = [{}]\n",
                addr("nw"),
                addr("nr")
            )
        } else {
            String::new()
        };
        let failover = if setup.short_failover {
            "health_interval = \"100ms\"\nfailover_timeout = \"300ms\""
        } else {
            ""
        };
        let read_your_writes = if setup.read_your_writes { "1h" } else { "0s" };
        let text = format!(
            r#"
[server]
protocol = "{}"
listen = "127.0.0.1:0"
connect_timeout = "5s"
pool_mode = "{mode}"

[[users]]
name = "app"
password = "app-secret"

[clusters.old]
writer = {}
readers = [{}]
{failover}

{new}
[routing]
active = "old"
read_your_writes = "{read_your_writes}"
"#,
            proto.protocol(),
            addr("w"),
            old_readers.join(", "),
        );
        let raw = toml::from_str(&text).expect("the config parses");
        let config = crate::config::validate(raw, &|_| None).expect("the config is valid");
        let topology = Topology::from_config(&config).expect("static topology");
        let routing = Routing::from_config(&config, None).expect("routing state");
        let ctx = Arc::new(Context::new(
            Arc::new(config),
            Arc::new(TopologyHandle::new(topology)),
            Arc::new(routing),
            None,
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = listener.local_addr().expect("local addr");
        let (stop, shutdown) = crate::shutdown::channel();
        let sessions = Arc::clone(&ctx);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let session = crate::session::run(tcp, Arc::clone(&sessions), shutdown.clone());
                tokio::spawn(session);
            }
        });
        World {
            proto,
            journal,
            servers,
            readers,
            reader: None,
            // The MySQL variant in transaction mode sends its BEGIN as a prepared statement,
            // which goes to the server.
            defers_begin: mode == "transaction"
                && matches!(proto, Proto::Postgres | Proto::PostgresExtended),
            begin_owed: None,
            ctx,
            proxy,
            _stop: stop,
        }
    }

    fn server(&self, name: &str) -> &Server {
        let found = self.servers.iter().find(|s| s.name() == name);
        found.unwrap_or_else(|| panic!("no server {name} in this case"))
    }

    /// The server `at` names (`AnyReader` only in an expectation, where it is found).
    fn name(&self, at: Where) -> &'static str {
        match at {
            Where::W => "w",
            Where::R1 => "r1",
            Where::NW => "nw",
            Where::NR => "nr",
            Where::SameReader => self.reader.expect("a step found the session's reader"),
            Where::OtherReader => {
                let same = self.reader.expect("a step found the session's reader");
                let other = self.readers.iter().find(|r| **r != same);
                other.copied().expect("a second reader")
            }
            Where::AnyReader => panic!("AnyReader names no server before a statement ran"),
        }
    }

    /// `old`'s instance served by server `name`, in the current topology.
    fn instance(&self, cluster: &Cluster, name: &str) -> Arc<Instance> {
        let port = self.server(name).addr.port();
        let all = std::iter::once(&cluster.writer).chain(&cluster.readers);
        let found = all.into_iter().find(|i| i.port == port);
        Arc::clone(found.unwrap_or_else(|| panic!("{name} is not in cluster old")))
    }

    /// Publishes cluster `old` with `writer` and its readers but `gone`, as discovery does.
    fn publish(&self, writer: Arc<Instance>, gone: &Arc<Instance>) {
        let old = self.ctx.topology.cluster("old").expect("cluster old");
        let readers = old.readers.iter().filter(|r| !Arc::ptr_eq(r, gone));
        self.ctx.topology.replace_cluster(Arc::new(Cluster {
            superseded: Default::default(),
            name: old.name.clone(),
            writer,
            readers: readers.cloned().collect(),
            tls_mode: old.tls_mode,
            tls: old.tls.clone(),
            policy: Arc::clone(&old.policy),
        }));
    }

    async fn apply(&mut self, event: Event) {
        let routing = &self.ctx.routing;
        match event {
            Event::Break(at, fault) => self.server(self.name(at)).arm(fault),
            Event::Crash(at) => self.server(self.name(at)).kill().await,
            Event::Disconnect(at) => self.server(self.name(at)).disconnect().await,
            Event::Remove(at) => {
                let old = self.ctx.topology.cluster("old").expect("cluster old");
                let reader = self.instance(&old, self.name(at));
                reader.load.set_status(Status::Retired);
                self.publish(Arc::clone(&old.writer), &reader);
            }
            Event::Promote(at) => {
                self.server("w").kill().await;
                let old = self.ctx.topology.cluster("old").expect("cluster old");
                old.writer.load.set_status(Status::Unhealthy);
                let reader = self.instance(&old, self.name(at));
                reader.load.set_status(Status::Retired);
                let port = reader.port;
                let promoted = Instance::new(
                    "old",
                    &reader.addr,
                    "127.0.0.1",
                    port,
                    Role::Writer,
                    Status::Healthy,
                );
                self.publish(Arc::new(promoted), &reader);
            }
            Event::ReadOnly => {
                routing.set_read_only("old", true).expect("read-only");
            }
            Event::Pause => {
                routing.pause("old").expect("pause");
            }
            Event::Resume => {
                routing.resume("old").expect("resume");
            }
            Event::Cutover => {
                routing.pause("old").expect("pause");
                routing.fence("old").expect("fence");
                routing.switch("old", "new", 1).expect("switch");
            }
            Event::Switch => {
                routing.fence("old").expect("fence");
                routing.switch("old", "new", 1).expect("switch");
            }
        }
    }

    /// Waits until a statement is held by the pause, then checks no server received `sql`.
    async fn held(&self, sql: &str, mark: usize, at: &str) {
        let waited = tokio::time::timeout(HUNG, async {
            while self.ctx.routing.held_total() == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        waited
            .await
            .unwrap_or_else(|_| panic!("{at}: nothing was held within {HUNG:?}"));
        let seen = self.journal.since(mark);
        let reached = seen.iter().any(|r| r.sql == sql);
        assert!(
            !reached,
            "{at}: a held statement reached a server: {seen:?}"
        );
    }

    /// Checks the outcome of one statement: `answer` and what the servers received since
    /// the journal had `mark` entries.
    fn check(&mut self, stmt: Stmt, expect: Expect, mark: usize, answer: Answer, at: &str) {
        let sql = self.proto.sql(stmt);
        let seen = self.journal.since(mark);
        let ran: Vec<&'static str> = seen
            .iter()
            .filter(|r| r.sql == sql)
            .map(|r| r.server)
            .collect();
        let context = format!("{at}: the client saw {answer:?}; the servers received {seen:?}");
        if let Some(on) = self.begin_owed.filter(|_| !ran.is_empty()) {
            // The transaction's first statement: its BEGIN went first, to the same server.
            let first = seen.first().map(|r| (r.server, r.sql.as_str()));
            assert_eq!(
                first,
                Some((on, "BEGIN")),
                "the deferred BEGIN first: {context}"
            );
            self.begin_owed = None;
        }
        if let (Stmt::Begin, Expect::On(want), true) = (stmt, expect, self.defers_begin) {
            assert!(matches!(answer, Answer::Rows(_)), "{context}");
            assert!(ran.is_empty(), "answered by the proxy: {context}");
            self.begin_owed = Some(self.name(want));
            return;
        }
        let expect = match expect {
            Expect::ByDialect(postgres, mysql) => match self.proto {
                Proto::Postgres | Proto::PostgresExtended => *postgres,
                Proto::Mysql | Proto::MysqlPrepared => *mysql,
            },
            other => other,
        };
        match expect {
            Expect::On(want) | Expect::OnAfterSet(want) => {
                assert!(matches!(answer, Answer::Rows(_)), "{context}");
                assert_eq!(ran.len(), 1, "ran once: {context}");
                let on = self.found(want, ran[0], &context);
                self.came_from(stmt, &answer, on, &context);
                if let Expect::OnAfterSet(_) = expect {
                    // The replay may come in an earlier step: the extended protocol's Close
                    // of a statement, sent alone, opens the reader before the read.
                    let set = self.proto.sql(Stmt::Set);
                    let until = seen.iter().position(|r| r.sql == sql).unwrap_or_default();
                    let before = self.journal.since(0);
                    let replayed = before[..mark + until]
                        .iter()
                        .any(|r| r.server == on && r.sql.contains(set));
                    assert!(replayed, "SET replayed on {on} first: {context}");
                }
            }
            Expect::Retried { from, to } => {
                assert!(matches!(answer, Answer::Rows(_)), "{context}");
                assert_eq!(ran.len(), 2, "ran twice: {context}");
                assert_eq!(ran[0], self.name(from), "failed first: {context}");
                let on = self.found(to, ran[1], &context);
                self.came_from(stmt, &answer, on, &context);
            }
            Expect::Refused(error) | Expect::Fails(error) => {
                let Answer::Error { code, .. } = &answer else {
                    panic!("expected {error:?}: {context}");
                };
                if let Some(want) = self.proto.code(error) {
                    assert_eq!(code.as_deref(), Some(want), "{error:?}: {context}");
                }
                if let Expect::Refused(_) = expect {
                    assert!(ran.is_empty(), "no server received it: {context}");
                }
            }
            Expect::Succeeds => {
                assert!(matches!(answer, Answer::Rows(_)), "{context}");
            }
            Expect::ByDialect(..) => unreachable!("chosen above"),
        }
    }

    /// Checks that the statement ran on `on`, the server `want` names; `AnyReader` is any
    /// of `old`'s readers, remembered as the session's.
    fn found(&mut self, want: Where, on: &'static str, context: &str) -> &'static str {
        if want == Where::AnyReader {
            assert!(self.readers.contains(&on), "on a reader: {context}");
            self.reader = Some(on);
        } else {
            assert_eq!(on, self.name(want), "{context}");
        }
        on
    }

    /// A read's row names the server it ran on.
    fn came_from(&self, stmt: Stmt, answer: &Answer, on: &str, context: &str) {
        if matches!(stmt, Stmt::Read | Stmt::ReadOnWriter) {
            assert_eq!(answer, &Answer::Rows(vec![on.to_owned()]), "{context}");
        }
    }
}
