//! Reading Debian binary packages without dpkg: an `ar` archive containing
//! `debian-binary`, `control.tar.*` and `data.tar.*`.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::KernelError;

/// Largest `debian-binary` member accepted; the real one is 4 bytes ("2.0\n").
const MAX_VERSION_MEMBER: u64 = 64;
/// Largest single file read into memory from a package (the kernel image or
/// a module). The largest module of Debian's 6.1 cloud kernel, xfs.ko, is
/// about 4 MiB.
pub(crate) const MAX_MEMBER_FILE: u64 = 256 << 20;

/// Visitor decision after each `data.tar` entry.
pub(crate) enum Walk {
    Continue,
    Stop,
}

/// Visitor over `data.tar` entries: normalized path, header and contents.
pub(crate) type Visitor<'v> =
    dyn FnMut(&str, &tar::Header, &mut dyn Read) -> Result<Walk, KernelError> + 'v;

/// Calls `visit` with the normalized path (no leading `./` or `/`) of each
/// entry of the package's `data.tar.*`, and verifies that the compressed
/// stream is complete unless `visit` stops early.
pub(crate) fn walk_data(deb: &Path, visit: &mut Visitor<'_>) -> Result<(), KernelError> {
    with_member(deb, "data.tar", &mut |member, reader| {
        walk_tar(deb, member, reader, visit)
    })
}

/// Returns the name of the package's `data.tar.*` member, for progress
/// messages.
pub(crate) fn data_member_name(deb: &Path) -> Result<String, KernelError> {
    let mut name = String::new();
    with_member(deb, "data.tar", &mut |member, _| {
        name = member.to_string();
        Ok(())
    })?;
    Ok(name)
}

/// Returns the text of the package's `control` file.
pub(crate) fn read_control(deb: &Path) -> Result<String, KernelError> {
    let mut control = None;
    with_member(deb, "control.tar", &mut |member, reader| {
        walk_tar(deb, member, reader, &mut |path, header, contents| {
            if path == "control" {
                let bytes = read_entry(deb, member, path, header, contents)?;
                control = Some(String::from_utf8_lossy(&bytes).into_owned());
                return Ok(Walk::Stop);
            }
            Ok(Walk::Continue)
        })
    })?;
    control.ok_or_else(|| KernelError::NotDebianPackage {
        path: deb.to_path_buf(),
        reason: "control.tar has no `control` file".to_string(),
    })
}

/// Returns the release and bytes of the package's `/boot/vmlinuz-<release>`.
#[cfg(test)]
pub(crate) fn read_kernel_image(deb: &Path) -> Result<(String, Vec<u8>), KernelError> {
    let mut found = None;
    walk_data(deb, &mut |path, header, contents| {
        if let Some(release) = kernel_image_release(path, header) {
            let bytes = read_entry(deb, "data.tar", path, header, contents)?;
            found = Some((release, bytes));
            return Ok(Walk::Stop);
        }
        Ok(Walk::Continue)
    })?;
    found.ok_or_else(|| KernelError::NoKernelImage {
        path: deb.to_path_buf(),
    })
}

/// Returns the release when `path` is a regular file `boot/vmlinuz-<release>`.
pub(crate) fn kernel_image_release(path: &str, header: &tar::Header) -> Option<String> {
    let release = path.strip_prefix("boot/vmlinuz-")?;
    let regular = header.entry_type().is_file();
    (regular && !release.is_empty() && !release.contains('/')).then(|| release.to_string())
}

/// Reads a file entry into memory, rejecting entries above [`MAX_MEMBER_FILE`].
pub(crate) fn read_entry(
    deb: &Path,
    member: &str,
    path: &str,
    header: &tar::Header,
    contents: &mut dyn Read,
) -> Result<Vec<u8>, KernelError> {
    let size = header.size().unwrap_or(u64::MAX);
    if size > MAX_MEMBER_FILE {
        return Err(KernelError::NotDebianPackage {
            path: deb.to_path_buf(),
            reason: format!("{path} in {member} is larger than {MAX_MEMBER_FILE} bytes"),
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    contents
        .read_to_end(&mut bytes)
        .map_err(|source| corrupt(deb, member, source))?;
    Ok(bytes)
}

fn walk_tar(
    deb: &Path,
    member: &str,
    reader: Box<dyn Read + '_>,
    visit: &mut Visitor<'_>,
) -> Result<(), KernelError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|source| corrupt(deb, member, source))?;
    for entry in entries {
        let mut entry = entry.map_err(|source| corrupt(deb, member, source))?;
        let path = normalize_path(&String::from_utf8_lossy(&entry.path_bytes()));
        let header = entry.header().clone();
        if let Walk::Stop = visit(&path, &header, &mut entry)? {
            return Ok(());
        }
    }
    // The tar reader stops at the end-of-archive marker; reading the rest
    // makes the decompressor report a truncated stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| corrupt(deb, member, source))?;
    Ok(())
}

fn normalize_path(path: &str) -> String {
    let mut path = path;
    loop {
        if let Some(rest) = path.strip_prefix("./") {
            path = rest;
        } else if let Some(rest) = path.strip_prefix('/') {
            path = rest;
        } else {
            break;
        }
    }
    path.trim_end_matches('/').to_string()
}

fn corrupt(deb: &Path, member: &str, source: io::Error) -> KernelError {
    KernelError::CorruptMember {
        path: deb.to_path_buf(),
        member: member.to_string(),
        source,
    }
}

/// Callback that receives an `ar` member's name and decompressed contents.
type MemberReader<'f> = dyn FnMut(&str, Box<dyn Read + '_>) -> Result<(), KernelError> + 'f;

/// Opens the `ar` member whose name starts with `prefix` and passes its
/// decompressed contents to `use_member`.
fn with_member(
    deb: &Path,
    prefix: &str,
    use_member: &mut MemberReader<'_>,
) -> Result<(), KernelError> {
    let not_deb = |reason: String| KernelError::NotDebianPackage {
        path: deb.to_path_buf(),
        reason,
    };
    let file = File::open(deb).map_err(|source| KernelError::ReadPackage {
        path: deb.to_path_buf(),
        source,
    })?;
    let mut archive = ar::Archive::new(BufReader::new(file));

    let mut first = match archive.next_entry() {
        Some(Ok(entry)) => entry,
        Some(Err(err)) => return Err(not_deb(format!("not an ar archive ({err})"))),
        None => return Err(not_deb("empty ar archive".to_string())),
    };
    if member_name(first.header().identifier()) != "debian-binary" {
        return Err(not_deb("first member is not debian-binary".to_string()));
    }
    let mut version = Vec::new();
    (&mut first)
        .take(MAX_VERSION_MEMBER)
        .read_to_end(&mut version)
        .map_err(|err| not_deb(format!("unreadable debian-binary ({err})")))?;
    if !version.starts_with(b"2.") {
        return Err(not_deb(format!(
            "unsupported format version {:?}",
            String::from_utf8_lossy(&version).trim()
        )));
    }
    drop(first);

    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|err| not_deb(format!("truncated ar archive ({err})")))?;
        let name = member_name(entry.header().identifier());
        let Some(suffix) = name.strip_prefix(prefix) else {
            continue;
        };
        let reader: Box<dyn Read + '_> = match suffix {
            "" => Box::new(entry),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            ".xz" => Box::new(xz2::read::XzDecoder::new(entry)),
            ".zst" => Box::new(
                zstd::stream::read::Decoder::new(entry)
                    .map_err(|source| corrupt(deb, &name, source))?,
            ),
            other => {
                return Err(KernelError::UnsupportedMember {
                    path: deb.to_path_buf(),
                    member: format!("{prefix}{other}"),
                });
            }
        };
        return use_member(&name, reader);
    }
    Err(not_deb(format!("no {prefix}.* member")))
}

fn member_name(identifier: &[u8]) -> String {
    // GNU ar terminates names with '/'; dpkg-deb does not.
    String::from_utf8_lossy(identifier)
        .trim_end_matches('/')
        .to_string()
}

/// Returns the package names of a control file's `Depends` field: the first
/// alternative of each entry, without version or architecture qualifiers.
pub(crate) fn depends(control: &str) -> Vec<String> {
    let mut value = String::new();
    let mut in_depends = false;
    for line in control.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if in_depends {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        in_depends = false;
        if let Some((field, rest)) = line.split_once(':')
            && field.eq_ignore_ascii_case("Depends")
        {
            in_depends = true;
            value.push_str(rest.trim());
        }
    }
    value
        .split(',')
        .filter_map(|item| {
            let first = item.split('|').next()?.trim();
            let name = first.split([' ', '(', ':']).next()?.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_takes_first_alternatives() {
        let control = "Package: linux-image-cloud-amd64\n\
                       Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3),\n foo:any | bar, baz\n\
                       Pre-Depends: ignored\n\
                       Description: x\n";
        assert_eq!(
            depends(control),
            ["linux-image-6.1.0-57-cloud-amd64", "foo", "baz"]
        );
        assert!(depends("Package: x\n").is_empty());
    }

    #[test]
    fn normalize_strips_prefixes() {
        assert_eq!(normalize_path("./boot/vmlinuz-6.1"), "boot/vmlinuz-6.1");
        assert_eq!(normalize_path("/lib/modules/"), "lib/modules");
        assert_eq!(normalize_path("./"), "");
    }

    #[test]
    fn non_package_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bogus.deb");
        std::fs::write(&path, b"this is plain text, not an ar archive").unwrap();
        let err = read_control(&path).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("not a Debian package"), "{message}");
        assert!(message.contains("bogus.deb"), "{message}");
    }

    #[test]
    fn real_metapackage_depends_on_kernel() {
        let Some(meta) = banger_test_support::kernel_meta_deb() else {
            banger_test_support::skip("no metapackage in BANGER_TEST_KERNEL_DIR");
            return;
        };
        let control = read_control(&meta).unwrap();
        let deps = depends(&control);
        assert!(
            deps.iter().any(|d| d.starts_with("linux-image-6.")),
            "{deps:?}"
        );
        assert!(matches!(
            read_kernel_image(&meta),
            Err(KernelError::NoKernelImage { .. })
        ));
    }

    #[test]
    fn truncated_package_names_data_member() {
        let Some(deb) = banger_test_support::kernel_deb() else {
            banger_test_support::skip("no kernel .deb in BANGER_TEST_KERNEL_DIR");
            return;
        };
        let bytes = std::fs::read(&deb).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let truncated = dir.path().join("truncated.deb");
        std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();

        let err = walk_data(&truncated, &mut |_, _, _| Ok(Walk::Continue)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("truncated or corrupt data.tar.xz"),
            "{message}"
        );
        assert!(message.contains("truncated.deb"), "{message}");
    }
}
