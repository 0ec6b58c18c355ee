//! A DNS server for tests: answers `A` queries for the names it is given (TTL 0), nothing else,
//! over UDP on 127.0.0.1. A test re-points a name with [`DnsServer::set`] while a client runs,
//! as a DNS rebinding attacker would.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

#[derive(Clone)]
pub struct DnsServer {
    names: Arc<Mutex<HashMap<String, Ipv4Addr>>>,
    /// Where it listens (UDP).
    pub addr: SocketAddr,
}

impl DnsServer {
    pub async fn start() -> Result<Self> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let server = DnsServer {
            names: Arc::default(),
            addr: socket.local_addr()?,
        };
        let names = server.names.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(answer) = answer(&names, &buf[..n]) {
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        Ok(server)
    }

    /// Makes `name` resolve to `ip` from now on.
    pub fn set(&self, name: &str, ip: Ipv4Addr) {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.trim_end_matches('.').to_ascii_lowercase(), ip);
    }
}

fn answer(names: &Mutex<HashMap<String, Ipv4Addr>>, query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut resp = Message::response(q.metadata.id, q.metadata.op_code);
    resp.metadata.recursion_desired = q.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    resp.add_queries(q.queries.clone());
    let mut known = false;
    for query in &q.queries {
        let name = query.name().to_ascii();
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let ip = names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&name)
            .copied();
        if let Some(ip) = ip {
            known = true;
            if query.query_type() == RecordType::A {
                resp.add_answer(Record::from_rdata(query.name().clone(), 0, RData::A(A(ip))));
            }
        }
    }
    if !known {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    resp.to_vec().ok()
}
