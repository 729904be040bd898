//! Builds the response to one DNS request. Pure: bytes in, bytes out.

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;

use super::records::DnsRecords;

/// The zone the server is authoritative for.
pub const ZONE: &str = "vm";

/// Time to live of `A` records in seconds. VMs come and go, so resolvers
/// should not keep an address for long.
pub const ANSWER_TTL: u32 = 5;

/// A response ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsResponse {
    pub bytes: Vec<u8>,
    pub code: ResponseCode,
}

/// Builds the response to the request in `request`:
///
/// - `A` (or `ANY`) for `<name>.vm` with `name` in `records`: the address;
/// - other types for a known name, and the zone apex `vm`: no records
///   (NOERROR);
/// - any name under `vm` that is not in `records`: NXDOMAIN;
/// - names outside `vm`, and classes other than IN: REFUSED;
/// - opcodes other than QUERY: NOTIMP;
/// - a request that does not decode, or that has no or several questions:
///   FORMERR.
///
/// Returns `None` for input that should get no response: responses, and
/// packets too short for a DNS header.
pub fn respond(request: &[u8], records: &DnsRecords) -> Option<DnsResponse> {
    let message = match Message::from_vec(request) {
        Ok(message) => message,
        Err(_) => {
            let header = Header::from_bytes(request).ok()?;
            if header.metadata.message_type != MessageType::Query {
                return None;
            }
            let response = Message::error_msg(
                header.metadata.id,
                header.metadata.op_code,
                ResponseCode::FormErr,
            );
            return encode(response);
        }
    };
    if message.metadata.message_type != MessageType::Query {
        return None;
    }

    let mut response = Message::response(message.metadata.id, message.metadata.op_code);
    response.metadata.recursion_desired = message.metadata.recursion_desired;
    response.metadata.checking_disabled = message.metadata.checking_disabled;
    // A request with an OPT record gets one back (RFC 6891, section 6.1.1).
    if message.edns.is_some() {
        response.set_edns(Edns::new());
    }

    if message.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return encode(response);
    }
    let [query] = message.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return encode(response);
    };
    response.add_query(query.clone());
    answer_query(query, records, &mut response);
    encode(response)
}

fn answer_query(query: &Query, records: &DnsRecords, response: &mut Message) {
    let name = query.name().to_lowercase();
    let text = name.to_ascii();
    let text = text.strip_suffix('.').unwrap_or(&text);
    let host = if text == ZONE {
        None
    } else if let Some(host) = text.strip_suffix(&format!(".{ZONE}")) {
        Some(host)
    } else {
        response.metadata.response_code = ResponseCode::Refused;
        return;
    };
    if query.query_class() != DNSClass::IN {
        response.metadata.response_code = ResponseCode::Refused;
        return;
    }

    response.metadata.authoritative = true;
    let Some(host) = host else {
        return;
    };
    let Some(address) = records.get(host) else {
        response.metadata.response_code = ResponseCode::NXDomain;
        return;
    };
    if matches!(query.query_type(), RecordType::A | RecordType::ANY) {
        let record = Record::from_rdata(query.name().clone(), ANSWER_TTL, RData::A(A(address)));
        response.add_answer(record);
    }
}

fn encode(response: Message) -> Option<DnsResponse> {
    let code = response.metadata.response_code;
    let bytes = response.to_vec().ok()?;
    Some(DnsResponse { bytes, code })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    use hickory_proto::rr::Name;

    use super::*;

    fn records() -> DnsRecords {
        let records = DnsRecords::new();
        records.insert("web", Ipv4Addr::new(172, 30, 0, 5));
        records
    }

    fn query(name: &str, record_type: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x4242;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_str(name).unwrap(), record_type));
        message.to_vec().unwrap()
    }

    fn ask(request: &[u8]) -> Message {
        let response = respond(request, &records()).expect("a response");
        let message = Message::from_vec(&response.bytes).unwrap();
        assert_eq!(message.metadata.response_code, response.code);
        message
    }

    #[test]
    fn known_name_gets_address() {
        let message = ask(&query("web.vm.", RecordType::A));
        assert_eq!(message.metadata.id, 0x4242);
        assert_eq!(message.metadata.message_type, MessageType::Response);
        assert_eq!(message.metadata.response_code, ResponseCode::NoError);
        assert!(message.metadata.authoritative);
        assert!(message.metadata.recursion_desired);
        assert_eq!(message.queries.len(), 1);
        assert_eq!(message.answers.len(), 1);
        assert_eq!(
            message.answers[0].data,
            RData::A(A(Ipv4Addr::new(172, 30, 0, 5)))
        );
        assert_eq!(message.answers[0].ttl, ANSWER_TTL);
    }

    #[test]
    fn name_match_ignores_case() {
        let message = ask(&query("WeB.Vm.", RecordType::A));
        assert_eq!(message.answers.len(), 1);
        assert_eq!(&message.answers[0].name, message.queries[0].name());
    }

    #[test]
    fn known_name_other_type_is_nodata() {
        let message = ask(&query("web.vm.", RecordType::AAAA));
        assert_eq!(message.metadata.response_code, ResponseCode::NoError);
        assert!(message.answers.is_empty());
    }

    #[test]
    fn unknown_name_is_nxdomain() {
        for name in ["db.vm.", "a.web.vm."] {
            let message = ask(&query(name, RecordType::A));
            assert_eq!(
                message.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
            assert!(message.metadata.authoritative);
        }
    }

    #[test]
    fn zone_apex_is_nodata() {
        let message = ask(&query("vm.", RecordType::A));
        assert_eq!(message.metadata.response_code, ResponseCode::NoError);
        assert!(message.answers.is_empty());
    }

    #[test]
    fn other_zone_is_refused() {
        for name in ["example.com.", "vm.example.", "web.vmx.", "."] {
            let message = ask(&query(name, RecordType::A));
            assert_eq!(
                message.metadata.response_code,
                ResponseCode::Refused,
                "{name}"
            );
            assert!(message.answers.is_empty());
        }
    }

    #[test]
    fn other_opcode_is_notimp() {
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Status;
        let response = respond(&message.to_vec().unwrap(), &records()).unwrap();
        assert_eq!(response.code, ResponseCode::NotImp);
    }

    #[test]
    fn question_count_must_be_one() {
        let mut message = Message::query();
        let empty = respond(&message.to_vec().unwrap(), &records()).unwrap();
        assert_eq!(empty.code, ResponseCode::FormErr);

        let name = Name::from_str("web.vm.").unwrap();
        message.add_query(Query::query(name.clone(), RecordType::A));
        message.add_query(Query::query(name, RecordType::AAAA));
        let two = respond(&message.to_vec().unwrap(), &records()).unwrap();
        assert_eq!(two.code, ResponseCode::FormErr);
    }

    #[test]
    fn truncated_request_is_formerr() {
        let request = query("web.vm.", RecordType::A);
        let response = respond(&request[..request.len() - 3], &records()).unwrap();
        assert_eq!(response.code, ResponseCode::FormErr);
        let message = Message::from_vec(&response.bytes).unwrap();
        assert_eq!(message.metadata.id, 0x4242);
    }

    #[test]
    fn garbage_and_responses_get_nothing() {
        assert_eq!(respond(b"\x01\x02", &records()), None);
        let mut message = Message::response(7, OpCode::Query);
        message.add_query(Query::query(
            Name::from_str("web.vm.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(respond(&message.to_vec().unwrap(), &records()), None);
    }

    #[test]
    fn edns_request_gets_edns_response() {
        let mut message = Message::query();
        message.add_query(Query::query(
            Name::from_str("web.vm.").unwrap(),
            RecordType::A,
        ));
        message.set_edns(Edns::new());
        let response = respond(&message.to_vec().unwrap(), &records()).unwrap();
        let decoded = Message::from_vec(&response.bytes).unwrap();
        assert!(decoded.edns.is_some());
    }
}
