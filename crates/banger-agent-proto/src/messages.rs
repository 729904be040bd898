use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of the message set; the agent reports it in `HelloAck`.
/// Version 2 added `StdinAck`.
pub const PROTOCOL_VERSION: u32 = 2;

/// Oldest agent protocol a host still talks to. Agents of version 1 send no
/// `StdinAck`, so a host sends them stdin without a window.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Standard input bytes a host may send to one stream before the agent
/// acknowledged them with `StdinAck` (protocol 2 and later).
pub const STDIN_WINDOW: usize = 4 << 20;

/// Bytes of a stream's standard input that the agent wrote to the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinAck {
    pub bytes: u64,
}

/// Opens a session. The agent echoes `nonce` so the host can tell the answer
/// to this `Hello` from a stale one left in the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub nonce: u64,
    pub host_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAck {
    pub nonce: u64,
    pub protocol: u32,
    pub agent_version: String,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
}

/// A command to run in the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up on `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// Variables added to (or replacing those in) the agent's base environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory; the agent uses `/root` when unset.
    #[serde(default)]
    pub cwd: Option<String>,
    /// When false the command's standard input is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Runs the command on a new pseudo-terminal of this size instead of
    /// pipes. Its standard output and error then both arrive as `Stdout`
    /// frames, and `Resize` frames change the size. Agents older than this
    /// field ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
}

/// Size of a terminal in character cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// Outcome of a command. Exactly one of `code` and `signal` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// Why the command could not be started, when it could not; `code` is
    /// then 127 (not found) or 126 (not executable).
    #[serde(default)]
    pub error: Option<String>,
}

impl ExitStatus {
    /// Returns the exit code a shell would report: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRequest {
    pub signal: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownAction {
    Poweroff,
    Reboot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    pub action: ShutdownAction,
}

pub fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("protocol messages always serialise")
}

pub fn decode_json<T: DeserializeOwned>(payload: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_code_for_signal() {
        let status = ExitStatus {
            signal: Some(9),
            ..Default::default()
        };
        assert_eq!(status.shell_code(), 137);
    }

    #[test]
    fn exec_request_defaults() {
        let request: ExecRequest = decode_json(br#"{"argv":["true"]}"#).unwrap();
        assert_eq!(request.argv, vec!["true"]);
        assert!(request.env.is_empty());
        assert_eq!(request.cwd, None);
        assert!(!request.stdin);
        assert_eq!(request.tty, None);
    }

    #[test]
    fn exec_request_without_tty_omits_the_field() {
        let request = ExecRequest {
            argv: vec!["true".into()],
            ..Default::default()
        };
        let json = String::from_utf8(encode_json(&request)).unwrap();
        assert!(!json.contains("tty"), "{json}");
    }

    #[test]
    fn exec_request_tty_round_trips() {
        let request = ExecRequest {
            argv: vec!["bash".into()],
            stdin: true,
            tty: Some(TtySize {
                rows: 40,
                cols: 120,
            }),
            ..Default::default()
        };
        let back: ExecRequest = decode_json(&encode_json(&request)).unwrap();
        assert_eq!(back, request);
    }
}
