//! Reading the label and UUID from an ext2/3/4 superblock.
//!
//! The superblock starts 1024 bytes into the device. The offsets below are
//! from the ext4 on-disk layout (`struct ext4_super_block` in the kernel's
//! `fs/ext4/ext4.h`).

use std::io::{self, Read, Seek, SeekFrom};

/// Byte offset of the superblock on the device.
const SUPERBLOCK_OFFSET: u64 = 1024;
/// `s_magic`: little-endian u16.
const MAGIC_OFFSET: usize = 0x38;
const EXT4_MAGIC: u16 = 0xEF53;
/// `s_uuid`: 16 bytes.
const UUID_OFFSET: usize = 0x68;
/// `s_volume_name`: 16 bytes, NUL-padded.
const LABEL_OFFSET: usize = 0x78;
/// Bytes read from the superblock: enough to cover the label.
const READ_LEN: usize = LABEL_OFFSET + 16;

/// The identity of an ext2/3/4 file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Identity {
    pub uuid: [u8; 16],
    /// The volume label with trailing NUL bytes removed; empty when unset.
    pub label: String,
}

impl Ext4Identity {
    /// Returns the UUID as lowercase `8-4-4-4-12` hex, as `blkid` prints it.
    pub fn uuid_string(&self) -> String {
        let hex: String = self.uuid.iter().map(|byte| format!("{byte:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

/// Reads the ext superblock of a device or image. Returns `Ok(None)` when
/// the device is too small or contains no ext2/3/4 file system.
pub fn read_ext4_identity(device: &mut (impl Read + Seek)) -> io::Result<Option<Ext4Identity>> {
    device.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
    let mut block = [0u8; READ_LEN];
    match device.read_exact(&mut block) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }

    let magic = u16::from_le_bytes([block[MAGIC_OFFSET], block[MAGIC_OFFSET + 1]]);
    if magic != EXT4_MAGIC {
        return Ok(None);
    }

    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&block[UUID_OFFSET..UUID_OFFSET + 16]);
    let label_bytes = &block[LABEL_OFFSET..LABEL_OFFSET + 16];
    let label_len = label_bytes.iter().position(|&b| b == 0).unwrap_or(16);
    let label = String::from_utf8_lossy(&label_bytes[..label_len]).into_owned();
    Ok(Some(Ext4Identity { uuid, label }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Cursor;
    use std::process::Command;

    /// Creates a 4 MiB ext4 image with `mkfs.ext4` and returns its identity.
    fn make_image(dir: &std::path::Path, label: &str, uuid: &str) -> Option<Ext4Identity> {
        let image = dir.join(format!("{label}.img"));
        let status = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-U", uuid])
            .arg(&image)
            .arg("4M")
            .status()
            .expect("mkfs.ext4 must be installed (Debian package e2fsprogs)");
        assert!(status.success(), "mkfs.ext4 failed: {status}");
        let mut file = File::open(&image).unwrap();
        read_ext4_identity(&mut file).unwrap()
    }

    #[test]
    fn reads_label_and_uuid_from_mkfs_image() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = "0f3a2c4e-1b2d-4c5e-8f90-a1b2c3d4e5f6";
        let identity = make_image(dir.path(), "bangerroot", uuid).expect("ext4 superblock");
        assert_eq!(identity.label, "bangerroot");
        assert_eq!(identity.uuid_string(), uuid);
    }

    #[test]
    fn sixteen_byte_label_has_no_terminator() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = "11111111-2222-4333-8444-555555555555";
        let identity = make_image(dir.path(), "sixteen-chars-ab", uuid).expect("ext4 superblock");
        assert_eq!(identity.label, "sixteen-chars-ab");
        assert_eq!(identity.uuid_string(), uuid);
    }

    #[test]
    fn zeroed_device_is_not_ext4() {
        let mut device = Cursor::new(vec![0u8; 8192]);
        assert_eq!(read_ext4_identity(&mut device).unwrap(), None);
    }

    #[test]
    fn short_device_is_not_ext4() {
        let mut device = Cursor::new(vec![0u8; 1500]);
        assert_eq!(read_ext4_identity(&mut device).unwrap(), None);
    }
}
