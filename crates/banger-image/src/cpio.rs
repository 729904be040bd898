//! Writer for cpio archives in the "newc" format (magic `070701`), the format
//! the Linux kernel unpacks as an initramfs.
//!
//! Every entry gets uid 0, gid 0 and mtime 0 so that equal inputs give
//! byte-identical archives.

use std::collections::HashSet;
use std::io::{self, Write};

const MAGIC: &str = "070701";
const HEADER_LEN: usize = 110;
const TRAILER_NAME: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Errors from building a cpio archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("invalid cpio entry path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("cpio entry {path:?} has no parent directory in the archive; add the directory first")]
    MissingParent { path: String },
    #[error("cpio entry {path:?} was already added")]
    Duplicate { path: String },
    #[error("cpio entry {path:?} is too large ({size} bytes; the newc format stores 32-bit sizes)")]
    TooLarge { path: String, size: u64 },
    #[error("failed to write cpio entry {path:?}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

struct Header {
    mode: u32,
    nlink: u32,
    file_size: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

/// Streams a newc archive into `W`. Paths are absolute (`/dev/console`) or
/// relative to the archive root, and each parent directory must be added
/// before its entries, because the kernel does not create missing parents.
pub struct CpioWriter<W: Write> {
    out: W,
    next_inode: u32,
    paths: HashSet<String>,
    directories: HashSet<String>,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        let mut directories = HashSet::new();
        directories.insert(String::new());
        CpioWriter {
            out,
            next_inode: 1,
            paths: HashSet::new(),
            directories,
        }
    }

    /// Adds a directory with permission bits `mode` (for example `0o755`).
    pub fn add_directory(&mut self, path: &str, mode: u32) -> Result<(), CpioError> {
        let name = self.claim(path)?;
        let header = Header {
            mode: S_IFDIR | (mode & 0o7777),
            nlink: 2,
            file_size: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.write_entry(&name, &header, &[])?;
        self.directories.insert(name);
        Ok(())
    }

    /// Adds a regular file with permission bits `mode`.
    pub fn add_file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), CpioError> {
        let file_size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
            path: path.to_string(),
            size: data.len() as u64,
        })?;
        let name = self.claim(path)?;
        let header = Header {
            mode: S_IFREG | (mode & 0o7777),
            nlink: 1,
            file_size,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.write_entry(&name, &header, data)
    }

    /// Adds a symbolic link whose content is `target`.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let file_size = u32::try_from(target.len()).map_err(|_| CpioError::TooLarge {
            path: path.to_string(),
            size: target.len() as u64,
        })?;
        let name = self.claim(path)?;
        let header = Header {
            mode: S_IFLNK | 0o777,
            nlink: 1,
            file_size,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.write_entry(&name, &header, target.as_bytes())
    }

    /// Adds a character device node such as `/dev/console` (5, 1).
    pub fn add_char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let name = self.claim(path)?;
        let header = Header {
            mode: S_IFCHR | (mode & 0o7777),
            nlink: 1,
            file_size: 0,
            rdev_major: major,
            rdev_minor: minor,
        };
        self.write_entry(&name, &header, &[])
    }

    /// Writes the `TRAILER!!!` entry and returns the inner writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        let header = Header {
            mode: 0,
            nlink: 1,
            file_size: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.write_raw(TRAILER_NAME, 0, &header, &[])?;
        self.out.flush().map_err(|source| CpioError::Write {
            path: TRAILER_NAME.to_string(),
            source,
        })?;
        Ok(self.out)
    }

    /// Validates `path`, checks that its parent exists and that it is new,
    /// and returns the archive name (no leading `/`).
    fn claim(&mut self, path: &str) -> Result<String, CpioError> {
        let name = normalize(path)?;
        let parent = match name.rfind('/') {
            Some(index) => &name[..index],
            None => "",
        };
        if !self.directories.contains(parent) {
            return Err(CpioError::MissingParent {
                path: path.to_string(),
            });
        }
        if !self.paths.insert(name.clone()) {
            return Err(CpioError::Duplicate {
                path: path.to_string(),
            });
        }
        Ok(name)
    }

    fn write_entry(&mut self, name: &str, header: &Header, data: &[u8]) -> Result<(), CpioError> {
        let inode = self.next_inode;
        self.next_inode += 1;
        self.write_raw(name, inode, header, data)
    }

    fn write_raw(
        &mut self,
        name: &str,
        inode: u32,
        header: &Header,
        data: &[u8],
    ) -> Result<(), CpioError> {
        // The name size counts the terminating NUL.
        let name_size = name.len() + 1;
        let fields = [
            inode,
            header.mode,
            0, // uid
            0, // gid
            header.nlink,
            0, // mtime
            header.file_size,
            0, // devmajor
            0, // devminor
            header.rdev_major,
            header.rdev_minor,
            name_size as u32,
            0, // check
        ];
        let mut record = String::with_capacity(HEADER_LEN);
        record.push_str(MAGIC);
        for field in fields {
            record.push_str(&format!("{field:08x}"));
        }
        debug_assert_eq!(record.len(), HEADER_LEN);

        let mut bytes = record.into_bytes();
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.resize(bytes.len() + padding(HEADER_LEN + name_size), 0);
        let result = self
            .out
            .write_all(&bytes)
            .and_then(|()| self.out.write_all(data))
            .and_then(|()| self.out.write_all(&[0u8; 3][..padding(data.len())]));
        result.map_err(|source| CpioError::Write {
            path: name.to_string(),
            source,
        })
    }
}

/// Bytes needed to pad `len` to a multiple of 4.
fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn normalize(path: &str) -> Result<String, CpioError> {
    let invalid = |reason| CpioError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        return Err(invalid("empty path"));
    }
    let mut parts = Vec::new();
    for part in trimmed.split('/') {
        match part {
            "" | "." => return Err(invalid("contains an empty or `.` component")),
            ".." => return Err(invalid("contains a `..` component")),
            _ => parts.push(part),
        }
    }
    let name = parts.join("/");
    if name == TRAILER_NAME {
        return Err(invalid("collides with the archive trailer"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed newc record.
    #[derive(Debug)]
    struct Record {
        fields: Vec<u32>,
        name: String,
        data: Vec<u8>,
    }

    fn parse(archive: &[u8]) -> Vec<Record> {
        let mut records = Vec::new();
        let mut offset = 0;
        loop {
            assert_eq!(offset % 4, 0, "each header starts 4-byte aligned");
            let header = std::str::from_utf8(&archive[offset..offset + HEADER_LEN]).unwrap();
            assert_eq!(&header[..6], MAGIC);
            let fields: Vec<u32> = (0..13)
                .map(|i| u32::from_str_radix(&header[6 + i * 8..14 + i * 8], 16).unwrap())
                .collect();
            let name_size = fields[11] as usize;
            let name_start = offset + HEADER_LEN;
            let name = &archive[name_start..name_start + name_size];
            assert_eq!(name.last(), Some(&0), "name ends with NUL");
            let name = String::from_utf8(name[..name_size - 1].to_vec()).unwrap();
            let data_start = name_start + name_size + padding(HEADER_LEN + name_size);
            let data_len = fields[6] as usize;
            let data = archive[data_start..data_start + data_len].to_vec();
            offset = data_start + data_len + padding(data_len);
            let done = name == TRAILER_NAME;
            records.push(Record { fields, name, data });
            if done {
                assert_eq!(offset, archive.len(), "nothing follows the trailer");
                return records;
            }
        }
    }

    fn sample_archive() -> Vec<u8> {
        let mut writer = CpioWriter::new(Vec::new());
        writer.add_directory("/dev", 0o755).unwrap();
        writer.add_char_device("/dev/console", 0o600, 5, 1).unwrap();
        writer.add_file("/init", 0o755, b"#!/bin/sh\n").unwrap();
        writer.add_directory("etc", 0o700).unwrap();
        writer.add_file("/etc/abc", 0o644, b"abc").unwrap();
        writer.add_symlink("/etc/link", "abc").unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn headers_and_padding() {
        let archive = sample_archive();
        assert_eq!(archive.len() % 4, 0);
        let records = parse(&archive);
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "etc",
                "etc/abc",
                "etc/link",
                TRAILER_NAME
            ]
        );

        let dev = &records[0];
        assert_eq!(dev.fields[1], 0o040_755, "directory mode");
        assert_eq!(dev.fields[4], 2, "directory nlink");

        let console = &records[1];
        assert_eq!(console.fields[1], 0o020_600, "char device mode");
        assert_eq!((console.fields[9], console.fields[10]), (5, 1), "rdev");

        let init = &records[2];
        assert_eq!(init.fields[1], 0o100_755);
        assert_eq!(init.data, b"#!/bin/sh\n");
        assert_eq!(init.fields[2..4], [0, 0], "uid and gid are 0");
        assert_eq!(init.fields[5], 0, "mtime is 0");

        let abc = &records[4];
        assert_eq!(abc.data, b"abc", "3-byte data is padded separately");

        let link = &records[5];
        assert_eq!(link.fields[1], 0o120_777);
        assert_eq!(link.data, b"abc");

        let trailer = &records[6];
        assert_eq!(trailer.fields[0], 0, "trailer inode");
        assert_eq!(trailer.fields[6], 0, "trailer size");

        let inodes: HashSet<u32> = records[..6].iter().map(|r| r.fields[0]).collect();
        assert_eq!(inodes.len(), 6, "inodes are unique");
    }

    #[test]
    fn rejects_bad_paths() {
        let mut writer = CpioWriter::new(Vec::new());
        assert!(matches!(
            writer.add_file("/missing/file", 0o644, b""),
            Err(CpioError::MissingParent { .. })
        ));
        assert!(matches!(
            writer.add_file("/a/../b", 0o644, b""),
            Err(CpioError::InvalidPath { .. })
        ));
        assert!(matches!(
            writer.add_directory("/", 0o755),
            Err(CpioError::InvalidPath { .. })
        ));
        assert!(matches!(
            writer.add_file("TRAILER!!!", 0o644, b""),
            Err(CpioError::InvalidPath { .. })
        ));
        writer.add_file("/x", 0o644, b"").unwrap();
        assert!(matches!(
            writer.add_file("x", 0o644, b""),
            Err(CpioError::Duplicate { .. })
        ));
        assert!(matches!(
            writer.add_file("/x/y", 0o644, b""),
            Err(CpioError::MissingParent { .. })
        ));
    }

    #[test]
    fn cpio_tool_lists_archive() {
        let Some(cpio) = banger_process::find_in_path("cpio", std::env::var_os("PATH").as_deref())
        else {
            banger_test_support::skip("`cpio` is not installed");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let archive_path = dir.path().join("test.cpio");
        std::fs::write(&archive_path, sample_archive()).unwrap();

        let output = std::process::Command::new(cpio)
            .args(["-itv", "-F"])
            .arg(&archive_path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let listing = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 6, "{listing}");
        let expected = [
            ("drwxr-xr-x", " dev"),
            ("crw-------", " dev/console"),
            ("-rwxr-xr-x", " init"),
            ("drwx------", " etc"),
            ("-rw-r--r--", " etc/abc"),
            ("lrwxrwxrwx", " etc/link -> abc"),
        ];
        for (line, (mode, name)) in lines.iter().zip(expected) {
            assert!(line.starts_with(mode), "{line:?} has mode {mode}");
            assert!(line.ends_with(name), "{line:?} names {name}");
        }
        assert!(
            lines[1].contains(" 5,"),
            "console is device 5,1: {}",
            lines[1]
        );
    }
}
