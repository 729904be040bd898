//! Reading a kernel's ELF file: its release and whether it has a PVH
//! entry point.

/// Type of the Xen ELF note that contains the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const PT_NOTE: u32 = 4;

/// Returns whether `bytes` starts with the ELF magic number.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Returns the release from the `Linux version <release> ...` banner that
/// every kernel image carries.
pub fn release_from_banner(bytes: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let mut rest = bytes;
    while let Some(at) = find(rest, BANNER) {
        let tail = &rest[at + BANNER.len()..];
        let end = tail
            .iter()
            .position(|&b| b == b' ' || b == 0 || b == b'\n')
            .unwrap_or(tail.len());
        let release = &tail[..end];
        // The banner's format string (`%s`) also matches; a release starts
        // with a digit.
        if release.first().is_some_and(u8::is_ascii_digit)
            && release.len() <= 64
            && release.iter().all(|b| b.is_ascii_graphic())
        {
            return Some(String::from_utf8_lossy(release).into_owned());
        }
        rest = tail;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Whether a 64-bit little-endian ELF kernel has a Xen PVH entry note, the
/// entry point QEMU uses to boot an uncompressed vmlinux.
pub fn has_pvh_entry(elf: &[u8]) -> bool {
    pvh_entry(elf).is_some()
}

fn pvh_entry(elf: &[u8]) -> Option<()> {
    // ELFCLASS64, ELFDATA2LSB.
    if !is_elf(elf) || elf.get(4)? != &2 || elf.get(5)? != &1 {
        return None;
    }
    let phoff = usize::try_from(read_u64(elf, 0x20)?).ok()?;
    let phentsize = usize::from(read_u16(elf, 0x36)?);
    let phnum = usize::from(read_u16(elf, 0x38)?);
    for index in 0..phnum {
        let header = phoff.checked_add(index.checked_mul(phentsize)?)?;
        if read_u32(elf, header)? != PT_NOTE {
            continue;
        }
        let offset = usize::try_from(read_u64(elf, header + 8)?).ok()?;
        let size = usize::try_from(read_u64(elf, header + 32)?).ok()?;
        let notes = elf.get(offset..offset.checked_add(size)?)?;
        if has_xen_entry_note(notes) {
            return Some(());
        }
    }
    None
}

/// Walks the notes of one PT_NOTE segment.
fn has_xen_entry_note(mut notes: &[u8]) -> bool {
    let align = |n: usize| n.div_ceil(4) * 4;
    while notes.len() >= 12 {
        let (Some(namesz), Some(descsz), Some(kind)) =
            (read_u32(notes, 0), read_u32(notes, 4), read_u32(notes, 8))
        else {
            return false;
        };
        let name_end = 12 + namesz as usize;
        let Some(name) = notes.get(12..name_end) else {
            return false;
        };
        if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
            return true;
        }
        let next = 12 + align(namesz as usize) + align(descsz as usize);
        let Some(rest) = notes.get(next..) else {
            return false;
        };
        notes = rest;
    }
    false
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal ELF64 file with one PT_NOTE segment that contains `notes`.
    fn elf_with_notes(notes: &[u8]) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let mut header = vec![0u8; 56];
        header[..4].copy_from_slice(&PT_NOTE.to_le_bytes());
        header[8..16].copy_from_slice(&120u64.to_le_bytes());
        header[32..40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        elf.extend_from_slice(&header);
        elf.extend_from_slice(notes);
        elf
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut note = Vec::new();
        note.extend_from_slice(&(name.len() as u32).to_le_bytes());
        note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        note.extend_from_slice(&kind.to_le_bytes());
        note.extend_from_slice(name);
        note.resize(note.len().div_ceil(4) * 4, 0);
        note.extend_from_slice(desc);
        note.resize(note.len().div_ceil(4) * 4, 0);
        note
    }

    #[test]
    fn finds_the_pvh_note_after_other_notes() {
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4, 5]);
        notes.extend(note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 4]));
        assert!(has_pvh_entry(&elf_with_notes(&notes)));
    }

    #[test]
    fn other_notes_are_no_pvh_entry() {
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4]);
        notes.extend(note(b"Xen\0", 6, &[0; 8]));
        assert!(!has_pvh_entry(&elf_with_notes(&notes)));
        assert!(!has_pvh_entry(b"\x7fELF"));
        assert!(!has_pvh_entry(b"MZ not an elf"));
    }

    #[test]
    fn truncated_notes_end_the_walk() {
        let mut elf = elf_with_notes(&note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 4]));
        elf.truncate(elf.len() - 10);
        assert!(!has_pvh_entry(&elf));
    }

    #[test]
    fn release_skips_the_format_string() {
        let bytes = b"\0Linux version %s (%s)\0junk\0Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\n";
        assert_eq!(
            release_from_banner(bytes).as_deref(),
            Some("6.1.0-57-cloud-amd64")
        );
        assert_eq!(release_from_banner(b"no banner here"), None);
    }
}
