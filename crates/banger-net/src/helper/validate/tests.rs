use std::net::Ipv4Addr;

use super::*;
use crate::error_chain;

fn config() -> HelperConfig {
    HelperConfig::new(1000)
}

fn check(json: &str) -> Result<Request, RequestError> {
    let request = parse_request(json.as_bytes())?;
    validate_request(&request, &config())?;
    Ok(request)
}

fn message(json: &str) -> String {
    error_chain(&check(json).unwrap_err())
}

#[test]
fn valid_requests_parse() {
    let request = check(
        r#"{"op_id": "1f2e3d4c", "operation": {"op": "create_tap", "name": "bgt0123456789ab"}}"#,
    )
    .unwrap();
    assert_eq!(
        request,
        Request::new(
            "1f2e3d4c",
            Operation::CreateTap {
                name: "bgt0123456789ab".into()
            }
        )
    );
    let request = check(r#"{"op_id": "a", "operation": {"op": "enable_nat", "vm_id": "0123456789ab", "address": "172.30.0.9"}}"#).unwrap();
    assert_eq!(
        request.operation,
        Operation::EnableNat {
            vm_id: "0123456789ab".into(),
            address: Ipv4Addr::new(172, 30, 0, 9)
        }
    );
    for json in [
        r#"{"op_id": "a", "operation": {"op": "ensure_bridge"}}"#,
        r#"{"op_id": "a", "operation": {"op": "delete_tap", "name": "bgt1"}}"#,
        r#"{"op_id": "a", "operation": {"op": "disable_nat", "vm_id": "0123456789ab"}}"#,
        r#"{"op_id": "a", "operation": {"op": "sweep_nat", "keep": []}}"#,
        r#"{"op_id": "a", "operation": {"op": "route_dns", "port": 42069}}"#,
        r#"{"op_id": "a", "operation": {"op": "unroute_dns"}}"#,
    ] {
        assert!(check(json).is_ok(), "{json}");
    }
}

#[test]
fn request_round_trips_through_json() {
    let request = Request::new(
        "op-1",
        Operation::SweepNat {
            keep: vec!["0123456789ab".into()],
        },
    );
    let json = serde_json::to_string(&request).unwrap();
    assert_eq!(
        json,
        r#"{"op_id":"op-1","operation":{"op":"sweep_nat","keep":["0123456789ab"]}}"#
    );
    assert_eq!(check(&json).unwrap(), request);
}

#[test]
fn tap_without_prefix_is_rejected() {
    let text = message(r#"{"op_id": "a", "operation": {"op": "create_tap", "name": "eth0"}}"#);
    assert_eq!(
        text,
        "invalid create_tap request: invalid tap name \"eth0\": it must start with \"bgt\""
    );
}

#[test]
fn too_long_tap_is_rejected() {
    let text =
        message(r#"{"op_id": "a", "operation": {"op": "delete_tap", "name": "bgt0123456789abc"}}"#);
    assert_eq!(
        text,
        "invalid delete_tap request: invalid device name \"bgt0123456789abc\": the name is longer than 15 bytes"
    );
}

#[test]
fn tap_with_odd_bytes_is_rejected() {
    for name in ["bgt x", "bgt/../x", "BGT1", "bgt1;rm"] {
        let json =
            serde_json::json!({"op_id": "a", "operation": {"op": "create_tap", "name": name}});
        let error = check(&json.to_string()).unwrap_err();
        assert!(
            matches!(
                error,
                RequestError::Name {
                    op: "create_tap",
                    ..
                }
            ),
            "{name}: {error}"
        );
    }
}

#[test]
fn address_outside_pool_is_rejected() {
    for address in [
        "10.0.0.5",
        "172.30.0.1",
        "172.30.0.0",
        "172.30.0.255",
        "172.30.1.5",
    ] {
        let json = format!(
            r#"{{"op_id": "a", "operation": {{"op": "enable_nat", "vm_id": "0123456789ab", "address": "{address}"}}}}"#
        );
        let error = check(&json).unwrap_err();
        assert!(
            matches!(error, RequestError::Address { .. }),
            "{address}: {error}"
        );
        let text = error_chain(&error);
        assert!(
            text.contains(&format!(
                "address {address} is not a VM address of pool 172.30.0.0/24"
            )),
            "{text}"
        );
        assert!(error.hint().unwrap().contains("configured pool"));
    }
}

#[test]
fn malformed_json_is_rejected() {
    let error = check(r#"{"op_id": "a", "operation": {"op": "ensure_bridge""#).unwrap_err();
    assert!(matches!(error, RequestError::Json(_)), "{error}");
    assert!(error_chain(&error).starts_with("invalid request JSON: EOF while parsing"));
    assert!(error.hint().unwrap().contains("send one JSON object"));
}

#[test]
fn unknown_operation_is_rejected() {
    let text = message(r#"{"op_id": "a", "operation": {"op": "flush_ruleset"}}"#);
    assert!(
        text.starts_with(
            "invalid request JSON: unknown variant `flush_ruleset`, expected one of `ensure_bridge`"
        ),
        "{text}"
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let text =
        message(r#"{"op_id": "a", "operation": {"op": "create_tap", "name": "bgt1", "owner": 0}}"#);
    assert!(text.contains("unknown field `owner`"), "{text}");
    let text = message(r#"{"op_id": "a", "uid": 0, "operation": {"op": "ensure_bridge"}}"#);
    assert!(text.contains("unknown field `uid`"), "{text}");
}

#[test]
fn bad_op_id_is_rejected() {
    for op_id in ["", "a b", "x\ny", &"a".repeat(65)] {
        let json = serde_json::json!({"op_id": op_id, "operation": {"op": "ensure_bridge"}});
        let error = check(&json.to_string()).unwrap_err();
        assert!(
            matches!(error, RequestError::OpId { .. }),
            "{op_id:?}: {error}"
        );
    }
}

#[test]
fn bad_vm_ids_are_rejected() {
    let text = message(
        r#"{"op_id": "a", "operation": {"op": "sweep_nat", "keep": ["0123456789ab", "x"]}}"#,
    );
    assert_eq!(
        text,
        "invalid sweep_nat request: invalid VM id \"x\": expected 12 lowercase hex digits"
    );
    let text = message(r#"{"op_id": "a", "operation": {"op": "disable_nat", "vm_id": "vm=1"}}"#);
    assert!(text.starts_with("invalid disable_nat request"), "{text}");
}

#[test]
fn port_zero_is_rejected() {
    let error =
        check(r#"{"op_id": "a", "operation": {"op": "route_dns", "port": 0}}"#).unwrap_err();
    assert!(matches!(error, RequestError::PortZero));
    let error =
        check(r#"{"op_id": "a", "operation": {"op": "route_dns", "port": 70000}}"#).unwrap_err();
    assert!(matches!(error, RequestError::Json(_)), "{error}");
}

#[test]
fn oversized_request_is_rejected() {
    let json = format!(r#"{{"op_id": "{}"}}"#, "a".repeat(MAX_REQUEST_BYTES));
    let error = check(&json).unwrap_err();
    assert!(matches!(error, RequestError::TooLarge { .. }), "{error}");
}

#[test]
fn config_validation() {
    assert!(config().validate().is_ok());
    let mut bad = config();
    bad.bridge = "br0".into();
    assert!(bad.validate().is_err());
    let mut bad = config();
    bad.uplink = Some("eth0\"".into());
    assert!(bad.validate().is_err());
}
