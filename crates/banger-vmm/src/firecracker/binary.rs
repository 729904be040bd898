//! Finding the Firecracker binary and checking its version.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_process::{CommandError, CommandSpec};

use crate::qemu::find_on_path;
use crate::vmm::VmmError;

/// Version as (major, minor, patch).
pub type FirecrackerVersion = (u32, u32, u32);

/// Oldest Firecracker release banger accepts.
/// NOTE: banger is tested with v1.12.1 only.
pub const MIN_VERSION: FirecrackerVersion = (1, 5, 0);

/// Deadline for `firecracker --version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum number of characters of `--version` output quoted in errors.
const MAX_QUOTED_OUTPUT: usize = 200;

/// Formats a version as `1.12.1`.
pub fn format_version(version: FirecrackerVersion) -> String {
    format!("{}.{}.{}", version.0, version.1, version.2)
}

/// Parses the version out of `firecracker --version` output, whose first
/// line is `Firecracker v1.12.1`. A suffix such as `-dev` after the patch
/// number is ignored.
pub fn parse_version(output: &str) -> Option<FirecrackerVersion> {
    let start = output.find("Firecracker v")? + "Firecracker v".len();
    let token = output[start..].split_whitespace().next()?;
    let numbers = token.split(['-', '+']).next()?;
    let mut parts = numbers.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// Returns the path of an executable Firecracker: `binary` itself when it
/// contains a `/`, else the first match on `PATH`.
pub fn resolve_binary(binary: &Path) -> Result<PathBuf, VmmError> {
    if !binary.as_os_str().as_bytes().contains(&b'/') {
        let name = binary.to_string_lossy();
        return find_on_path(&name).ok_or_else(|| VmmError::FirecrackerNotFound {
            binary: binary.to_owned(),
            source: crate::vmm::not_found_source(None),
        });
    }
    let metadata = std::fs::metadata(binary).map_err(|source| VmmError::FirecrackerNotFound {
        binary: binary.to_owned(),
        source,
    })?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        return Err(VmmError::FirecrackerNotExecutable {
            binary: binary.to_owned(),
        });
    }
    Ok(binary.to_owned())
}

/// Runs `binary --version` and returns the version it prints.
pub async fn version(binary: &Path) -> Result<FirecrackerVersion, VmmError> {
    let resolved = resolve_binary(binary)?;
    let output = CommandSpec::new(&resolved)
        .arg("--version")
        .timeout(VERSION_TIMEOUT)
        .run_async()
        .await
        .map_err(|error| match error {
            CommandError::NotFound { source, .. } => VmmError::FirecrackerNotFound {
                binary: binary.to_owned(),
                source: crate::vmm::not_found_source(source),
            },
            other => VmmError::FirecrackerVersion {
                binary: binary.to_owned(),
                source: Box::new(other),
            },
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).ok_or_else(|| VmmError::FirecrackerVersionUnknown {
        binary: binary.to_owned(),
        output: text.trim().chars().take(MAX_QUOTED_OUTPUT).collect(),
    })
}

/// Returns the version of `binary` after checking that it is at least
/// [`MIN_VERSION`].
pub async fn check_version(binary: &Path) -> Result<FirecrackerVersion, VmmError> {
    let found = version(binary).await?;
    if found < MIN_VERSION {
        return Err(VmmError::FirecrackerTooOld {
            binary: binary.to_owned(),
            found: format_version(found),
            minimum: format_version(MIN_VERSION),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_version_cases() {
        let real = "Firecracker v1.12.1\n\n2026-12-04T20:39:17.154575393 [anonymous-instance:main] Firecracker exiting successfully. exit_code=0\n";
        assert_eq!(parse_version(real), Some((1, 12, 1)));
        assert_eq!(parse_version("Firecracker v1.4.0\n"), Some((1, 4, 0)));
        assert_eq!(parse_version("Firecracker v1.13.0-dev"), Some((1, 13, 0)));
        assert_eq!(parse_version("Firecracker v2.0.10+abc"), Some((2, 0, 10)));
        assert_eq!(parse_version("Firecracker v1.12"), None, "no patch");
        assert_eq!(parse_version("Firecracker v1.12.1.4"), None, "four parts");
        assert_eq!(parse_version("Firecracker vX.1.2"), None);
        assert_eq!(parse_version("firecracker 1.12.1"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn versions_compare_by_number() {
        assert!((1, 4, 9) < MIN_VERSION);
        assert!((1, 5, 0) >= MIN_VERSION);
        assert!((1, 12, 1) > (1, 5, 0), "12 > 5 as numbers, not text");
        assert_eq!(format_version((1, 12, 1)), "1.12.1");
    }

    fn write_script(path: &Path, body: &str, mode: u32) {
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[tokio::test]
    async fn too_old_binary_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("firecracker");
        write_script(&fake, "echo 'Firecracker v1.4.0'", 0o755);

        assert_eq!(version(&fake).await.unwrap(), (1, 4, 0));
        let error = check_version(&fake).await.unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, VmmError::FirecrackerTooOld { .. }),
            "{error:?}"
        );
        assert!(message.contains(&fake.display().to_string()), "{message}");
        assert!(message.contains("1.4.0"), "{message}");
        assert!(message.contains("1.5.0"), "{message}");
    }

    #[tokio::test]
    async fn binary_errors_name_path_and_fix() {
        let dir = tempfile::tempdir().unwrap();

        let missing = dir.path().join("missing-firecracker");
        let error = check_version(&missing).await.unwrap_err();
        assert!(
            matches!(error, VmmError::FirecrackerNotFound { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        assert!(message.contains("releases"), "{message}");
        assert!(message.contains("firecracker_bin"), "{message}");

        let not_executable = dir.path().join("firecracker");
        write_script(&not_executable, "echo 'Firecracker v1.12.1'", 0o644);
        let error = check_version(&not_executable).await.unwrap_err();
        assert!(
            matches!(error, VmmError::FirecrackerNotExecutable { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("chmod +x"), "{error}");

        let error = check_version(dir.path()).await.unwrap_err();
        assert!(
            matches!(error, VmmError::FirecrackerNotExecutable { .. }),
            "a directory: {error:?}"
        );

        let error = check_version(Path::new("banger-no-such-firecracker"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, VmmError::FirecrackerNotFound { .. }),
            "{error:?}"
        );

        let impostor = dir.path().join("impostor");
        write_script(&impostor, "echo 'QEMU emulator version 7.2.0'", 0o755);
        let error = check_version(&impostor).await.unwrap_err();
        assert!(
            matches!(error, VmmError::FirecrackerVersionUnknown { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("QEMU emulator"), "{error}");

        let failing = dir.path().join("failing");
        write_script(&failing, "echo broken >&2; exit 3", 0o755);
        let error = check_version(&failing).await.unwrap_err();
        assert!(
            matches!(error, VmmError::FirecrackerVersion { .. }),
            "{error:?}"
        );
        let chain = crate::error_chain(&error);
        assert!(chain.contains("broken"), "{chain}");
    }
}
