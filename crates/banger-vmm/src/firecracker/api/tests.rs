use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use super::*;

/// One request as the fake server received it.
#[derive(Debug)]
struct Received {
    request_line: String,
    headers: Vec<String>,
    body: String,
}

/// Serves HTTP/1.1 on a Unix socket. It responds to each connection's
/// request with `status` and `body`, or never when `status` is 0, and
/// reports each request it received.
fn fake_server(
    socket: PathBuf,
    status: u16,
    body: &'static str,
) -> mpsc::UnboundedReceiver<Received> {
    let listener = UnixListener::bind(&socket).unwrap();
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let received = read_request(&mut stream).await;
            let _ = sender.send(received);
            if status == 0 {
                // Keep the connection open without a response.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    drop(stream);
                });
                continue;
            }
            let reason = if status < 300 { "OK" } else { "Bad Request" };
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
        }
    });
    receiver
}

async fn read_request(stream: &mut tokio::net::UnixStream) -> Received {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 1024];
    let header_end = loop {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "connection closed inside the request head");
        bytes.extend_from_slice(&buffer[..read]);
        if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
    };
    let head = String::from_utf8(bytes[..header_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap().to_owned();
    let headers: Vec<String> = lines.map(str::to_ascii_lowercase).collect();
    let length: usize = headers
        .iter()
        .find_map(|header| header.strip_prefix("content-length: "))
        .map(|value| value.parse().unwrap())
        .unwrap_or(0);
    let mut body = bytes[header_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "connection closed inside the request body");
        body.extend_from_slice(&buffer[..read]);
    }
    Received {
        request_line,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

#[test]
fn request_bodies_are_exact() {
    let cases = [
        (
            json(&MachineConfig {
                vcpu_count: 2,
                mem_size_mib: 512,
            }),
            r#"{"vcpu_count":2,"mem_size_mib":512}"#,
        ),
        (
            json(&BootSource {
                kernel_image_path: "/k/vmlinux".into(),
                initrd_path: Some("/k/initrd.cpio".into()),
                boot_args: "console=ttyS0 reboot=k".to_owned(),
            }),
            r#"{"kernel_image_path":"/k/vmlinux","initrd_path":"/k/initrd.cpio","boot_args":"console=ttyS0 reboot=k"}"#,
        ),
        (
            json(&BootSource {
                kernel_image_path: "/k/vmlinux".into(),
                initrd_path: None,
                boot_args: String::new(),
            }),
            r#"{"kernel_image_path":"/k/vmlinux","boot_args":""}"#,
        ),
        (
            json(&Drive {
                drive_id: "disk1".to_owned(),
                path_on_host: "/vm/work.img".into(),
                is_root_device: false,
                is_read_only: true,
                cache_type: CacheType::Writeback,
            }),
            r#"{"drive_id":"disk1","path_on_host":"/vm/work.img","is_root_device":false,"is_read_only":true,"cache_type":"Writeback"}"#,
        ),
        (
            json(&NetworkInterface {
                iface_id: "net0".to_owned(),
                host_dev_name: "bgtap0".to_owned(),
                guest_mac: "02:00:00:00:00:01".to_owned(),
            }),
            r#"{"iface_id":"net0","host_dev_name":"bgtap0","guest_mac":"02:00:00:00:00:01"}"#,
        ),
        (
            json(&Vsock {
                guest_cid: 3,
                uds_path: "/run/vm/vsock.sock".into(),
            }),
            r#"{"guest_cid":3,"uds_path":"/run/vm/vsock.sock"}"#,
        ),
        (
            json(&Logger {
                log_path: "/run/vm/vmm.log".into(),
                level: LogLevel::Info,
            }),
            r#"{"log_path":"/run/vm/vmm.log","level":"Info"}"#,
        ),
        (
            json(&Metrics {
                metrics_path: "/run/vm/metrics.json".into(),
            }),
            r#"{"metrics_path":"/run/vm/metrics.json"}"#,
        ),
        (
            json(&InstanceAction {
                action_type: ActionType::InstanceStart,
            }),
            r#"{"action_type":"InstanceStart"}"#,
        ),
        (
            json(&InstanceAction {
                action_type: ActionType::SendCtrlAltDel,
            }),
            r#"{"action_type":"SendCtrlAltDel"}"#,
        ),
        (
            json(&InstanceAction {
                action_type: ActionType::FlushMetrics,
            }),
            r#"{"action_type":"FlushMetrics"}"#,
        ),
        (
            json(&VmStateUpdate {
                state: VmState::Paused,
            }),
            r#"{"state":"Paused"}"#,
        ),
        (
            json(&VmStateUpdate {
                state: VmState::Resumed,
            }),
            r#"{"state":"Resumed"}"#,
        ),
    ];
    for (actual, expected) in cases {
        assert_eq!(actual, expected);
    }
}

#[test]
fn non_utf8_path_fails_to_serialize() {
    use std::os::unix::ffi::OsStrExt;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/k/\xff"));
    let boot_source = BootSource {
        kernel_image_path: path,
        initrd_path: None,
        boot_args: String::new(),
    };
    assert!(serde_json::to_string(&boot_source).is_err());
}

#[test]
fn parse_fault_cases() {
    assert_eq!(
        parse_fault(br#"{"fault_message":"Boot source error: The kernel file cannot be opened"}"#),
        "Boot source error: The kernel file cannot be opened"
    );
    assert_eq!(parse_fault(b"upstream broke\n"), "upstream broke");
    assert_eq!(parse_fault(b""), "(empty body)");
    assert_eq!(parse_fault(br#"{"other":1}"#), r#"{"other":1}"#);
}

#[tokio::test]
async fn put_sends_method_path_headers_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let mut received = fake_server(socket.clone(), 204, "");
    let client = ApiClient::new(&socket, Duration::from_secs(5));

    client
        .put_drive(&Drive {
            drive_id: "disk0".to_owned(),
            path_on_host: "/vm/root.img".into(),
            is_root_device: false,
            is_read_only: false,
            cache_type: CacheType::Writeback,
        })
        .await
        .unwrap();
    let request = received.recv().await.unwrap();
    assert_eq!(request.request_line, "PUT /drives/disk0 HTTP/1.1");
    assert!(
        request
            .headers
            .contains(&"content-type: application/json".to_owned()),
        "{:?}",
        request.headers
    );
    assert!(
        request.headers.contains(&"host: localhost".to_owned()),
        "{:?}",
        request.headers
    );
    assert_eq!(
        request.body,
        r#"{"drive_id":"disk0","path_on_host":"/vm/root.img","is_root_device":false,"is_read_only":false,"cache_type":"Writeback"}"#
    );

    client.set_vm_state(VmState::Paused).await.unwrap();
    let request = received.recv().await.unwrap();
    assert_eq!(request.request_line, "PATCH /vm HTTP/1.1");
    assert_eq!(request.body, r#"{"state":"Paused"}"#);

    client.action(ActionType::InstanceStart).await.unwrap();
    let request = received.recv().await.unwrap();
    assert_eq!(request.request_line, "PUT /actions HTTP/1.1");
    assert_eq!(request.body, r#"{"action_type":"InstanceStart"}"#);
}

#[tokio::test]
async fn fault_carries_status_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let _received = fake_server(
        socket.clone(),
        400,
        r#"{"fault_message":"Machine config error: The number of vCPUs must be greater than 0"}"#,
    );
    let client = ApiClient::new(&socket, Duration::from_secs(5));

    let error = client
        .put_machine_config(&MachineConfig {
            vcpu_count: 0,
            mem_size_mib: 128,
        })
        .await
        .unwrap_err();
    assert_eq!(
        error.fault_message(),
        Some("Machine config error: The number of vCPUs must be greater than 0")
    );
    let ApiError::Fault { status, .. } = &error else {
        panic!("expected a fault, got {error:?}");
    };
    assert_eq!(*status, StatusCode::BAD_REQUEST);
    let message = error.to_string();
    assert!(message.contains("PUT /machine-config"), "{message}");
    assert!(message.contains("400"), "{message}");
    assert!(message.contains("number of vCPUs"), "{message}");
}

#[tokio::test]
async fn instance_info_parses_and_rejects_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.sock");
    let _good = fake_server(
        good.clone(),
        200,
        r#"{"id":"vm-1","state":"Running","vmm_version":"1.12.1","app_name":"Firecracker"}"#,
    );
    let info = ApiClient::new(&good, Duration::from_secs(5))
        .instance_info()
        .await
        .unwrap();
    assert_eq!(
        info,
        InstanceInfo {
            id: "vm-1".to_owned(),
            state: "Running".to_owned(),
            vmm_version: "1.12.1".to_owned(),
            app_name: "Firecracker".to_owned(),
        }
    );

    let bad = dir.path().join("bad.sock");
    let _bad = fake_server(bad.clone(), 200, "not json");
    let error = ApiClient::new(&bad, Duration::from_secs(5))
        .instance_info()
        .await
        .unwrap_err();
    assert!(
        matches!(error, ApiError::InvalidResponse { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("not json"), "{error}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let _received = fake_server(socket.clone(), 0, "");
    let client = ApiClient::new(&socket, Duration::from_millis(300));

    let started = Instant::now();
    let error = client.instance_info().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(error, ApiError::TimedOut { .. }), "{error:?}");
    assert!(error.to_string().contains("GET /"), "{error}");
}

#[tokio::test]
async fn missing_socket_fails_to_connect() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing.sock");
    let error = ApiClient::new(&socket, Duration::from_secs(5))
        .instance_info()
        .await
        .unwrap_err();
    assert!(matches!(error, ApiError::Connect { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&socket.display().to_string()),
        "{error}"
    );
}
