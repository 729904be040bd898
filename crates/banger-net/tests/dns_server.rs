//! The DNS server on an ephemeral loopback port, queried over UDP with
//! messages encoded by hickory-proto. As root the test runs in its own
//! network namespace, and otherwise on the host's loopback. Loopback is the
//! only address it sends to either way.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use banger_net::dns::{DnsRecords, DnsServer};
use common::{block_on, is_root, run_isolated, run_ok};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

async fn ask(server: SocketAddr, name: &str, record_type: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_str(name).unwrap(), record_type));
    socket
        .send_to(&query.to_vec().unwrap(), server)
        .await
        .unwrap();

    let mut buffer = [0u8; 512];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
        .await
        .expect("the server responds within 5 s")
        .unwrap();
    assert_eq!(from, server);
    let response = Message::from_vec(&buffer[..len]).unwrap();
    assert_eq!(response.metadata.id, query.metadata.id);
    response
}

fn addresses(message: &Message) -> Vec<Ipv4Addr> {
    message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(A(address)) => Some(*address),
            _ => None,
        })
        .collect()
}

async fn exercise_server() {
    let records = DnsRecords::new();
    records.insert("web", Ipv4Addr::new(172, 30, 0, 5));
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), records.clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let task = tokio::spawn(server.serve());

    let known = ask(addr, "web.vm.", RecordType::A).await;
    assert_eq!(known.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&known), [Ipv4Addr::new(172, 30, 0, 5)]);

    let unknown = ask(addr, "db.vm.", RecordType::A).await;
    assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
    assert!(unknown.answers.is_empty());

    let other = ask(addr, "example.com.", RecordType::A).await;
    assert_eq!(other.metadata.response_code, ResponseCode::Refused);

    records.insert("db", Ipv4Addr::new(172, 30, 0, 6));
    records.insert("web", Ipv4Addr::new(172, 30, 0, 9));
    assert_eq!(
        addresses(&ask(addr, "db.vm.", RecordType::A).await),
        [Ipv4Addr::new(172, 30, 0, 6)]
    );
    assert_eq!(
        addresses(&ask(addr, "web.vm.", RecordType::A).await),
        [Ipv4Addr::new(172, 30, 0, 9)]
    );
    records.remove("db");
    let removed = ask(addr, "db.vm.", RecordType::A).await;
    assert_eq!(removed.metadata.response_code, ResponseCode::NXDomain);

    // A packet that is not DNS gets no response, and the server keeps going.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(b"hi", addr).await.unwrap();
    assert_eq!(
        addresses(&ask(addr, "web.vm.", RecordType::A).await),
        [Ipv4Addr::new(172, 30, 0, 9)]
    );
    assert!(!task.is_finished());
    task.abort();
}

#[test]
fn dns_server_answers_queries() {
    if !is_root() {
        eprintln!("not root: running dns_server_answers_queries on the host's loopback");
        block_on(exercise_server());
        return;
    }
    run_isolated("dns_server_answers_queries", 0, |_| {
        run_ok("ip", &["link", "set", "lo", "up"]);
        block_on(exercise_server());
    });
}

#[test]
fn dns_bind_conflict_names_address() {
    block_on(async {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = match DnsServer::bind(addr, DnsRecords::new()).await {
            Ok(_) => panic!("binding a taken port succeeded"),
            Err(error) => error,
        };
        assert_eq!(
            error.to_string(),
            format!("binding the DNS server to UDP {addr} failed; is another server on that port?")
        );
    });
}
