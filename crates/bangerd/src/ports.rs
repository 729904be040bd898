//! `banger vm ports`: the guest's listening sockets.
//!
//! The daemon runs `ss -Htulpn` in the guest through the agent's exec
//! stream. `ss` is in the image (iproute2) and already maps socket inodes
//! to processes through `/proc/*/fd`; doing the same in the agent would
//! need a new frame kind in the agent protocol for the same result.

use std::time::Duration;

use banger_agent_proto::{ExecRequest, ExitStatus, FrameKind, decode_json, encode_json};
use banger_api::network::ListeningPort;
use banger_model::VmRecord;

use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};

const SS_TIMEOUT: Duration = Duration::from_secs(20);

/// Parses `ss -Htulpn` output. Lines that do not have the expected columns
/// are skipped.
pub fn parse_ss(text: &str) -> Vec<ListeningPort> {
    let mut ports = Vec::new();
    for line in text.lines() {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.len() < 5 {
            continue;
        }
        let proto = columns[0];
        if proto != "tcp" && proto != "udp" {
            continue;
        }
        let Some((address, port)) = columns[4].rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        let address = address.trim_start_matches('[').trim_end_matches(']');
        let address = address.split('%').next().unwrap_or(address).to_owned();
        let process = columns[5..]
            .iter()
            .find_map(|column| column.strip_prefix("users:((\""))
            .and_then(|rest| rest.split('"').next())
            .map(str::to_owned);
        let entry = ListeningPort {
            proto: proto.to_owned(),
            address,
            port,
            process,
        };
        if !ports.contains(&entry) {
            ports.push(entry);
        }
    }
    ports.sort_by(|a, b| (a.port, &a.proto, &a.address).cmp(&(b.port, &b.proto, &b.address)));
    ports
}

impl Daemon {
    /// Runs `argv` in a running guest and returns its status and output.
    pub async fn guest_output(
        &self,
        vm: &VmRecord,
        argv: &[&str],
        timeout: Duration,
    ) -> ApiResult<(ExitStatus, Vec<u8>, Vec<u8>)> {
        let conn = self.connect_agent(vm).await?;
        let (stream, mut frames) = conn.open_stream().map_err(|e| {
            ApiError::from_error(banger_api::ErrorKind::Internal, &e)
                .context("failed to open an agent stream")
        })?;
        let request = ExecRequest {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            cwd: Some("/".to_owned()),
            ..ExecRequest::default()
        };
        let frame =
            banger_agent_proto::Frame::new(FrameKind::ExecStart, stream, encode_json(&request));
        let collect = async {
            conn.send(frame).map_err(|e| {
                ApiError::from_error(banger_api::ErrorKind::Internal, &e)
                    .context(format!("failed to start {argv:?} in the guest"))
            })?;
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            while let Some(frame) = frames.recv().await {
                match frame.kind {
                    FrameKind::Stdout => stdout.extend_from_slice(&frame.payload),
                    FrameKind::Stderr => stderr.extend_from_slice(&frame.payload),
                    FrameKind::Exit => {
                        let status: ExitStatus = decode_json(&frame.payload).map_err(|e| {
                            ApiError::from_error(banger_api::ErrorKind::Internal, &e)
                                .context("the agent sent an invalid exit status")
                        })?;
                        return Ok((status, stdout, stderr));
                    }
                    FrameKind::Error => {
                        return Err(ApiError::new(
                            banger_api::ErrorKind::Internal,
                            format!(
                                "the agent failed to run {argv:?}: {}",
                                String::from_utf8_lossy(&frame.payload)
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            Err(ApiError::new(
                banger_api::ErrorKind::Internal,
                "lost the connection to the guest agent".to_owned(),
            ))
        };
        let result = tokio::time::timeout(timeout, collect).await;
        conn.close_stream(stream);
        result.map_err(|_| {
            ApiError::new(
                banger_api::ErrorKind::Internal,
                format!(
                    "{argv:?} did not finish in the guest within {} s",
                    timeout.as_secs()
                ),
            )
        })?
    }

    /// The guest's listening TCP and UDP sockets.
    pub async fn listening_ports(&self, name: &str) -> ApiResult<Vec<ListeningPort>> {
        let vm = self.running_vm(name)?;
        let (status, stdout, stderr) = self
            .guest_output(&vm, &["ss", "-Htulpn"], SS_TIMEOUT)
            .await?;
        if status.code != Some(0) {
            return Err(ApiError::new(
                banger_api::ErrorKind::Internal,
                format!(
                    "`ss -Htulpn` failed in VM {name:?} ({}): {}",
                    status.shell_code(),
                    String::from_utf8_lossy(&stderr).trim()
                ),
            )
            .hint("the image needs iproute2 for `ss`"));
        }
        Ok(parse_ss(&String::from_utf8_lossy(&stdout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
udp   UNCONN 0      0          127.0.0.54:53         0.0.0.0:*    users:((\"systemd-resolve\",pid=200,fd=20))
tcp   LISTEN 0      128           0.0.0.0:22         0.0.0.0:*    users:((\"sshd\",pid=300,fd=3))
tcp   LISTEN 0      128              [::]:22            [::]:*    users:((\"sshd\",pid=300,fd=4))
tcp   LISTEN 0      4096    127.0.0.1%lo:8080        0.0.0.0:*
garbage line
";

    #[test]
    fn ss_lines_are_parsed() {
        let ports = parse_ss(SAMPLE);
        assert_eq!(ports.len(), 4, "{ports:?}");
        assert_eq!(ports[0].port, 22);
        assert_eq!(ports[0].process.as_deref(), Some("sshd"));
        assert!(ports.iter().any(|p| p.address == "::" && p.port == 22));
        let dns = ports.iter().find(|p| p.port == 53).unwrap();
        assert_eq!(dns.proto, "udp");
        assert_eq!(dns.process.as_deref(), Some("systemd-resolve"));
        let web = ports.iter().find(|p| p.port == 8080).unwrap();
        assert_eq!(web.address, "127.0.0.1");
        assert_eq!(web.process, None);
    }

    #[test]
    fn empty_output_has_no_ports() {
        assert!(parse_ss("").is_empty());
    }
}
