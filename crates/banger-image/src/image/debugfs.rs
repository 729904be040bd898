//! Editing ext4 images without mounting them, through batched `debugfs`
//! command files.
//!
//! debugfs (e2fsprogs 1.47) exits with status 0 even when a command in the
//! batch fails, and reports the failure on stderr. A batch therefore counts
//! as failed when stderr contains anything besides the version banner.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::ImageError;
use super::unpack::{EntryKind, ExpectedEntry};
use banger_process::{CommandOutput, CommandSpec, quote_output};

/// Time allowed for one debugfs batch. A batch for a full Debian tree run as
/// a normal user contains tens of thousands of commands.
const DEBUGFS_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// debugfs reads command files in lines of at most 8 KiB (BUFSIZ); longer
/// lines would be split.
const MAX_COMMAND_LEN: usize = 4096;

/// Quotes `path` for debugfs' command parser, where a `"` inside a quoted
/// string is written `""`. Line breaks and NUL cannot be represented.
pub fn quote(path: &str) -> Result<String, ImageError> {
    if path.contains(['\n', '\r', '\0']) {
        return Err(ImageError::UnquotablePath {
            path: path.to_string(),
            reason: "contains a line break or NUL byte",
        });
    }
    if path.len() > MAX_COMMAND_LEN / 2 {
        return Err(ImageError::UnquotablePath {
            path: path.to_string(),
            reason: "is longer than debugfs' command line",
        });
    }
    Ok(format!("\"{}\"", path.replace('"', "\"\"")))
}

/// Metadata of an entry as it landed in the staging tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActualMetadata {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl ActualMetadata {
    pub fn from_metadata(meta: &fs::Metadata) -> Self {
        ActualMetadata {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }
}

/// Returns the debugfs commands that give the image the ownership and modes
/// of `entries` and create their device nodes and FIFOs. `actual` is the
/// staging tree's metadata for each non-special entry, which `mkfs.ext4 -d`
/// copied into the image; only differences produce commands. The root
/// directory always gets explicit commands.
pub fn fixup_commands(
    entries: &[(ExpectedEntry, Option<ActualMetadata>)],
) -> Result<Vec<String>, ImageError> {
    let mut commands = Vec::new();
    for (expected, actual) in entries {
        let guest_path = format!("/{}", expected.path);
        let quoted = quote(&guest_path)?;
        let full_mode = expected.kind.type_bits() | expected.mode;
        match expected.kind {
            EntryKind::HardLink => continue,
            kind if kind.is_special() => {
                let (parent, name) = split_parent(&guest_path);
                commands.push(format!("cd {}", quote(parent)?));
                commands.push(match kind {
                    EntryKind::CharDevice { major, minor } => {
                        format!("mknod {} c {major} {minor}", quote(name)?)
                    }
                    EntryKind::BlockDevice { major, minor } => {
                        format!("mknod {} b {major} {minor}", quote(name)?)
                    }
                    _ => format!("mknod {} p", quote(name)?),
                });
                commands.push("cd \"/\"".to_string());
                commands.push(format!("sif {quoted} mode 0{full_mode:o}"));
                commands.push(format!("sif {quoted} uid {}", expected.uid));
                commands.push(format!("sif {quoted} gid {}", expected.gid));
            }
            _ if expected.path.is_empty() => {
                commands.push(format!("sif {quoted} mode 0{full_mode:o}"));
                commands.push(format!("sif {quoted} uid {}", expected.uid));
                commands.push(format!("sif {quoted} gid {}", expected.gid));
            }
            kind => {
                let Some(actual) = actual else {
                    return Err(ImageError::MissingStagedEntry {
                        path: guest_path.clone(),
                    });
                };
                // Symlink permission bits are always 0777 on Linux.
                if kind != EntryKind::Symlink && actual.mode != expected.mode {
                    commands.push(format!("sif {quoted} mode 0{full_mode:o}"));
                }
                if actual.uid != expected.uid {
                    commands.push(format!("sif {quoted} uid {}", expected.uid));
                }
                if actual.gid != expected.gid {
                    commands.push(format!("sif {quoted} gid {}", expected.gid));
                }
            }
        }
    }
    Ok(commands)
}

/// Splits `/a/b/c` into (`/a/b`, `c`) and `/c` into (`/`, `c`).
pub fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(index) => (&path[..index], &path[index + 1..]),
        None => ("/", path),
    }
}

/// Runs `commands` against `image` in one writable debugfs session.
pub fn run_batch(image: &Path, commands: &[String], scratch_dir: &Path) -> Result<(), ImageError> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut script = tempfile::Builder::new()
        .prefix("debugfs-")
        .suffix(".cmd")
        .tempfile_in(scratch_dir)
        .map_err(super::io_error(
            "create a debugfs command file in",
            scratch_dir,
        ))?;
    for command in commands {
        writeln!(script, "{command}").map_err(super::io_error("write", script.path()))?;
    }
    script
        .flush()
        .map_err(super::io_error("write", script.path()))?;

    let output = CommandSpec::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(script.path())
        .arg(image)
        .timeout(DEBUGFS_TIMEOUT)
        .run()?;
    check_stderr(image, &output)
}

/// Runs one read-only debugfs request and returns its stdout.
pub fn request(image: &Path, request: &str) -> Result<String, ImageError> {
    let output = CommandSpec::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .timeout(DEBUGFS_TIMEOUT)
        .run()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn check_stderr(image: &Path, output: &CommandOutput) -> Result<(), ImageError> {
    let text = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty() && !is_banner(line))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ImageError::Debugfs {
            image: image.to_path_buf(),
            errors: quote_output(errors.join("\n").as_bytes()),
        })
    }
}

/// Matches the version line debugfs prints first, e.g.
/// "debugfs 1.47.0 (5-Feb-2023)".
fn is_banner(line: &str) -> bool {
    line.strip_prefix("debugfs ")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()) && rest.ends_with(')'))
}

/// One entry of `ls -p` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub mode: u32,
}

impl DirEntry {
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170_000 == 0o040_000
    }
}

/// Lists directory `path` of `image`; returns `None` when it does not exist.
pub fn list_dir(image: &Path, path: &str) -> Result<Option<HashMap<String, DirEntry>>, ImageError> {
    let stdout = request(image, &format!("ls -p {}", quote(path)?))?;
    let entries = parse_ls_p(&stdout);
    // Every existing directory lists at least "." and "..".
    Ok(entries.contains_key(".").then_some(entries))
}

/// Parses `ls -p` lines of the form `/inode/mode/uid/gid/name/size/`.
pub fn parse_ls_p(stdout: &str) -> HashMap<String, DirEntry> {
    let mut entries = HashMap::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix('/') else {
            continue;
        };
        let fields: Vec<&str> = rest.split('/').collect();
        if fields.len() < 6 {
            continue;
        }
        let Ok(mode) = u32::from_str_radix(fields[1], 8) else {
            continue;
        };
        entries.insert(fields[4].to_string(), DirEntry { mode });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, mode: u32, uid: u32, gid: u32) -> ExpectedEntry {
        ExpectedEntry {
            path: path.to_string(),
            kind,
            mode,
            uid,
            gid,
        }
    }

    fn actual(mode: u32, uid: u32, gid: u32) -> Option<ActualMetadata> {
        Some(ActualMetadata { mode, uid, gid })
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote("/etc/a b").unwrap(), "\"/etc/a b\"");
        assert_eq!(quote("/x\"y").unwrap(), "\"/x\"\"y\"");
        assert!(quote("/bad\nname").is_err());
    }

    #[test]
    fn matching_entries_need_no_commands() {
        let entries = vec![
            (
                entry("etc", EntryKind::Directory, 0o755, 0, 0),
                actual(0o755, 0, 0),
            ),
            (
                entry("etc/passwd", EntryKind::File, 0o644, 0, 0),
                actual(0o644, 0, 0),
            ),
            (
                entry("bin", EntryKind::Symlink, 0o777, 0, 0),
                actual(0o777, 0, 0),
            ),
            (entry("bin2", EntryKind::HardLink, 0, 0, 0), None),
        ];
        assert!(fixup_commands(&entries).unwrap().is_empty());
    }

    #[test]
    fn differences_become_sif_commands() {
        let entries = vec![
            (
                entry("usr/bin/sudo", EntryKind::File, 0o4755, 0, 0),
                actual(0o755, 1000, 1000),
            ),
            (
                entry("var/log/journal", EntryKind::Directory, 0o2755, 0, 101),
                actual(0o2755, 1000, 1000),
            ),
            // A symlink's mode is never compared; only its owner.
            (
                entry("lib", EntryKind::Symlink, 0o777, 0, 0),
                actual(0o777, 1000, 0),
            ),
        ];
        let commands = fixup_commands(&entries).unwrap();
        assert_eq!(
            commands,
            [
                "sif \"/usr/bin/sudo\" mode 0104755",
                "sif \"/usr/bin/sudo\" uid 0",
                "sif \"/usr/bin/sudo\" gid 0",
                "sif \"/var/log/journal\" uid 0",
                "sif \"/var/log/journal\" gid 101",
                "sif \"/lib\" uid 0",
            ]
        );
    }

    #[test]
    fn devices_are_created_with_mknod() {
        let entries = vec![
            (
                entry(
                    "dev/null",
                    EntryKind::CharDevice { major: 1, minor: 3 },
                    0o666,
                    0,
                    0,
                ),
                None,
            ),
            (
                entry(
                    "dev/loop0",
                    EntryKind::BlockDevice { major: 7, minor: 0 },
                    0o660,
                    0,
                    6,
                ),
                None,
            ),
            (entry("run/initctl", EntryKind::Fifo, 0o600, 0, 0), None),
        ];
        let commands = fixup_commands(&entries).unwrap();
        assert_eq!(
            commands[..6],
            [
                "cd \"/dev\"",
                "mknod \"null\" c 1 3",
                "cd \"/\"",
                "sif \"/dev/null\" mode 020666",
                "sif \"/dev/null\" uid 0",
                "sif \"/dev/null\" gid 0",
            ]
        );
        assert_eq!(commands[7], "mknod \"loop0\" b 7 0");
        assert_eq!(commands[9], "sif \"/dev/loop0\" mode 060660");
        assert_eq!(commands[11], "sif \"/dev/loop0\" gid 6");
        assert_eq!(commands[13], "mknod \"initctl\" p");
        assert_eq!(commands[15], "sif \"/run/initctl\" mode 010600");
    }

    #[test]
    fn root_always_gets_commands() {
        let entries = vec![(
            entry("", EntryKind::Directory, 0o755, 0, 0),
            actual(0o755, 0, 0),
        )];
        assert_eq!(
            fixup_commands(&entries).unwrap(),
            [
                "sif \"/\" mode 040755",
                "sif \"/\" uid 0",
                "sif \"/\" gid 0"
            ]
        );
    }

    #[test]
    fn missing_staged_entry_is_an_error() {
        let entries = vec![(entry("etc/x", EntryKind::File, 0o644, 0, 0), None)];
        assert!(matches!(
            fixup_commands(&entries),
            Err(ImageError::MissingStagedEntry { .. })
        ));
    }

    #[test]
    fn ls_p_output_parses() {
        let stdout = "/2/040755/0/0/.//\n/2/040755/0/0/..//\n/15/040700/0/0/q\"uote//\n/16/100644/1000/1000/f1/5/\n\n";
        let entries = parse_ls_p(stdout);
        assert!(entries["q\"uote"].is_dir());
        assert_eq!(entries["f1"].mode, 0o100_644);
        assert!(!entries["f1"].is_dir());
        assert_eq!(entries.len(), 4);
    }

    #[test]
    fn banner_is_not_an_error() {
        assert!(is_banner("debugfs 1.47.0 (5-Feb-2023)"));
        assert!(!is_banner("sif: File not found by ext2_lookup"));
    }

    #[test]
    fn split_parent_cases() {
        assert_eq!(split_parent("/dev/null"), ("/dev", "null"));
        assert_eq!(split_parent("/init"), ("/", "init"));
    }
}
