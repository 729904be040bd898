use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use super::*;

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One scripted exchange: the command the fake server expects, and the lines
/// it sends back, where `{id}` is replaced by the request's id.
struct Exchange {
    command: &'static str,
    replies: Vec<String>,
}

fn exchange(command: &'static str, replies: &[&str]) -> Exchange {
    Exchange {
        command,
        replies: replies.iter().map(|reply| (*reply).to_owned()).collect(),
    }
}

/// Starts a fake QMP server that sends `greeting`, then plays `script` and
/// returns the requests it received.
fn fake_server(
    dir: &tempfile::TempDir,
    greeting: &str,
    script: Vec<Exchange>,
) -> (PathBuf, JoinHandle<Vec<Value>>) {
    let path = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let greeting = greeting.to_owned();
    let handle = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read_half, mut write_half) = stream.into_split();
        let mut lines = BufReader::new(read_half).lines();
        write_half
            .write_all(format!("{greeting}\r\n").as_bytes())
            .await
            .unwrap();

        let mut requests = Vec::new();
        for step in script {
            let Some(line) = lines.next_line().await.unwrap() else {
                break;
            };
            let request: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(request["execute"], step.command, "request {request}");
            let id = request["id"].to_string();
            requests.push(request);
            for reply in step.replies {
                let reply = reply.replace("{id}", &id);
                write_half
                    .write_all(format!("{reply}\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        }
        requests
    });
    (path, handle)
}

fn capabilities() -> Exchange {
    exchange("qmp_capabilities", &[r#"{"return": {}, "id": {id}}"#])
}

#[test]
fn parse_greeting_message() {
    let message = parse_message(GREETING.as_bytes()).unwrap();
    let QmpMessage::Greeting(version) = message else {
        panic!("expected a greeting, got {message:?}");
    };
    assert_eq!((version.major, version.minor, version.micro), (7, 2, 22));
    assert_eq!(version.package, "Debian 1:7.2+dfsg-7+deb12u18+b3");
}

#[test]
fn parse_return_error_event() {
    let message = parse_message(br#"{"return": {"status": "running"}, "id": 3}"#).unwrap();
    assert_eq!(
        message,
        QmpMessage::Return {
            id: Some(json!(3)),
            value: json!({"status": "running"})
        }
    );

    let message = parse_message(br#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#).unwrap();
    assert_eq!(
        message,
        QmpMessage::Error {
            id: None,
            class: "CommandNotFound".to_owned(),
            desc: "The command nope has not been found".to_owned()
        }
    );

    let message =
        parse_message(br#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#)
            .unwrap();
    assert_eq!(
        message,
        QmpMessage::Event {
            name: "STOP".to_owned(),
            data: Value::Null
        }
    );
}

#[test]
fn parse_rejects_invalid_messages() {
    for line in [
        &b"not json"[..],
        b"[1, 2]",
        b"{\"other\": 1}",
        br#"{"error": {"class": "GenericError"}}"#,
        br#"{"QMP": {"capabilities": []}}"#,
    ] {
        let result = parse_message(line);
        assert!(
            matches!(result, Err(QmpError::InvalidMessage { .. })),
            "line {:?} gave {result:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[tokio::test]
async fn client_negotiates_and_queries_status() {
    let dir = tempfile::tempdir().unwrap();
    let script = vec![
        capabilities(),
        exchange(
            "query-status",
            &[
                r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": {id}}"#,
            ],
        ),
    ];
    let (path, server) = fake_server(&dir, GREETING, script);

    let mut client = QmpClient::connect(&path, TIMEOUT).await.unwrap();
    assert_eq!(client.version().major, 7);
    let status = client.query_status().await.unwrap();
    assert_eq!(
        status,
        QmpStatus {
            running: true,
            status: "running".to_owned()
        }
    );
    drop(client);

    let requests = server.await.unwrap();
    assert_eq!(requests.len(), 2);
    assert_ne!(requests[0]["id"], requests[1]["id"], "ids must differ");
}

#[tokio::test]
async fn client_skips_event_before_return() {
    let dir = tempfile::tempdir().unwrap();
    let script = vec![
        capabilities(),
        exchange(
            "system_powerdown",
            &[
                r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}"#,
                r#"{"return": {}, "id": {id}}"#,
            ],
        ),
    ];
    let (path, server) = fake_server(&dir, GREETING, script);

    let mut client = QmpClient::connect(&path, TIMEOUT).await.unwrap();
    let value = client.execute("system_powerdown", None).await.unwrap();
    assert_eq!(value, json!({}));
    let events = client.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "POWERDOWN");
    assert!(client.take_events().is_empty(), "events are drained");
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn client_error_carries_desc() {
    let dir = tempfile::tempdir().unwrap();
    let script = vec![
        capabilities(),
        exchange(
            "cont",
            &[
                r#"{"error": {"class": "GenericError", "desc": "Resetting the Virtual Machine is required"}, "id": {id}}"#,
            ],
        ),
    ];
    let (path, server) = fake_server(&dir, GREETING, script);

    let mut client = QmpClient::connect(&path, TIMEOUT).await.unwrap();
    let error = client.execute("cont", None).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, QmpError::Command { .. }), "{error:?}");
    assert!(
        message.contains("Resetting the Virtual Machine is required"),
        "{message}"
    );
    assert!(message.contains("cont"), "{message}");
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn client_sends_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let script = vec![
        capabilities(),
        exchange(
            "human-monitor-command",
            &[r#"{"return": "ok\r\n", "id": {id}}"#],
        ),
    ];
    let (path, server) = fake_server(&dir, GREETING, script);

    let mut client = QmpClient::connect(&path, TIMEOUT).await.unwrap();
    let arguments = json!({"command-line": "info status"});
    let value = client
        .execute("human-monitor-command", Some(arguments.clone()))
        .await
        .unwrap();
    assert_eq!(value, json!("ok\r\n"));
    drop(client);
    let requests = server.await.unwrap();
    assert_eq!(requests[1]["arguments"], arguments);
}

#[tokio::test]
async fn client_quit_accepts_closed_connection() {
    let dir = tempfile::tempdir().unwrap();
    // The server reads the quit request and closes without replying.
    let script = vec![capabilities(), exchange("quit", &[])];
    let (path, server) = fake_server(&dir, GREETING, script);

    let mut client = QmpClient::connect(&path, TIMEOUT).await.unwrap();
    let (quit, requests) = tokio::join!(client.quit(), server);
    quit.unwrap();
    assert_eq!(requests.unwrap().len(), 2);
}

#[tokio::test]
async fn client_rejects_missing_greeting() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _server) = fake_server(&dir, r#"{"return": {}}"#, vec![]);
    let error = QmpClient::connect(&path, TIMEOUT).await.unwrap_err();
    assert!(matches!(error, QmpError::Unexpected { .. }), "{error:?}");
}

#[tokio::test]
async fn client_times_out_on_silent_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    let error = QmpClient::connect(&path, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(error, QmpError::TimedOut { .. }), "{error:?}");
    assert!(error.to_string().contains("the greeting"), "{error}");
}

#[tokio::test]
async fn client_connect_missing_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let error = QmpClient::connect(&path, TIMEOUT).await.unwrap_err();
    assert!(matches!(error, QmpError::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains("absent.sock"), "{error}");
}
