//! Checks on the guest agent binary before it goes into a guest.

use std::path::Path;

use object::read::elf::{ElfFile64, ProgramHeader};

#[derive(Debug, thiserror::Error)]
pub enum AgentBinError {
    #[error("guest agent {path} not found")]
    Missing {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("guest agent {path} is not an x86-64 ELF executable")]
    NotElf {
        path: String,
        #[source]
        source: object::Error,
    },
    #[error("guest agent {path} is dynamically linked; guests need a static binary")]
    Dynamic { path: String },
}

/// Fails unless `path` is a statically linked x86-64 ELF (no `PT_INTERP`),
/// because the agent runs as `/init` of an initramfs that has no libc.
pub fn check_static(path: &Path) -> Result<(), Box<AgentBinError>> {
    let shown = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| AgentBinError::Missing {
        path: shown.clone(),
        source,
    })?;
    let elf =
        ElfFile64::<object::Endianness>::parse(&*data).map_err(|source| AgentBinError::NotElf {
            path: shown.clone(),
            source,
        })?;
    let endian = elf.endian();
    let has_interp = elf
        .elf_program_headers()
        .iter()
        .any(|header| header.p_type(endian) == object::elf::PT_INTERP);
    if has_interp {
        return Err(Box::new(AgentBinError::Dynamic { path: shown }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binary_is_rejected() {
        // /bin/sh on Debian is dynamically linked.
        let err = check_static(Path::new("/bin/sh")).unwrap_err();
        assert!(matches!(*err, AgentBinError::Dynamic { .. }), "{err}");
    }

    #[test]
    fn missing_and_non_elf_are_rejected() {
        let err = check_static(Path::new("/nonexistent/banger-agent")).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("agent");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        let err = check_static(&text).unwrap_err();
        assert!(err.to_string().contains("not an x86-64 ELF"), "{err}");
    }
}
