//! An in-process DNS server (hickory-server) on a free UDP port of 127.0.0.1, serving one
//! in-memory zone whose A records a test changes while the server runs: the cluster names
//! that switchyard's `dns` and `aurora` discovery resolve.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::UdpSocket;

const SERIAL: u32 = 1;
/// Answers may be cached this long; switchyard's resolver caches nothing anyway.
const TTL: u32 = 1;

/// A running DNS server; it stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    _server: Server<Catalog>,
}

impl DnsServer {
    /// Serves the zone `origin` (e.g. `cluster.test.`) with no records but its SOA.
    pub async fn start(origin: &str) -> DnsServer {
        let origin = Name::from_ascii(origin).expect("zone origin is a DNS name");
        let soa = SOA::new(
            Name::from_ascii("ns.test.").expect("name"),
            Name::from_ascii("admin.test.").expect("name"),
            SERIAL,
            3600,
            600,
            86400,
            TTL,
        );
        let mut soa_set = RecordSet::new(origin.clone(), RecordType::SOA, SERIAL);
        soa_set.insert(
            Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)),
            SERIAL,
        );
        let mut records = BTreeMap::new();
        records.insert(
            RrKey::new(LowerName::new(&origin), RecordType::SOA),
            soa_set,
        );
        let zone =
            InMemoryZoneHandler::new(origin.clone(), records, ZoneType::Primary, AxfrPolicy::Deny)
                .expect("in-memory zone");
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        let handler: Arc<dyn ZoneHandler> = zone.clone();
        catalog.upsert(LowerName::new(&origin), vec![handler]);
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind DNS socket");
        let addr = socket.local_addr().expect("DNS socket address");
        let mut server = Server::new(catalog);
        server.register_socket(socket);
        DnsServer {
            addr,
            zone,
            _server: server,
        }
    }

    /// Makes `name` (fully qualified, e.g. `reader.cluster.test.`) answer exactly `ips`;
    /// no addresses removes the name.
    pub async fn set(&self, name: &str, ips: &[Ipv4Addr]) {
        let name = Name::from_ascii(name).expect("record name is a DNS name");
        let key = RrKey::new(LowerName::new(&name), RecordType::A);
        let mut records = self.zone.records_mut().await;
        if ips.is_empty() {
            records.remove(&key);
            return;
        }
        let mut set = RecordSet::new(name.clone(), RecordType::A, SERIAL);
        for &ip in ips {
            set.insert(
                Record::from_rdata(name.clone(), TTL, RData::A(A(ip))),
                SERIAL,
            );
        }
        records.insert(key, Arc::new(set));
    }
}
