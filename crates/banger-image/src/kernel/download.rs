//! `download_deb`: fetches a kernel package with `apt-get download`, following
//! a metapackage such as `linux-image-cloud-amd64` to the versioned package.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::KernelError;
use super::deb::{self, Walk};
use banger_process::CommandSpec;

/// Time allowed for one `apt-get download`.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Metapackage levels followed before giving up.
const MAX_METAPACKAGE_DEPTH: usize = 2;

/// Downloads `package` into `dest_dir` with `apt-get download` and returns the
/// path of the `.deb` that contains `/boot/vmlinuz-*`. When `package` is a
/// metapackage, its `linux-image-*` dependency is downloaded too.
pub fn download_deb(
    package: &str,
    dest_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, KernelError> {
    download_with_path(package, dest_dir, None, progress)
}

/// [`download_deb`] with an explicit `PATH` for finding `apt-get`.
pub(crate) fn download_with_path(
    package: &str,
    dest_dir: &Path,
    search_path: Option<&OsString>,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, KernelError> {
    let mut current = package.to_string();
    for _ in 0..=MAX_METAPACKAGE_DEPTH {
        let path = apt_get_download(&current, dest_dir, search_path, progress)?;
        if contains_kernel_image(&path)? {
            return Ok(path);
        }
        let control = deb::read_control(&path)?;
        let Some(dependency) = deb::depends(&control)
            .into_iter()
            .find(|name| name.starts_with("linux-image-"))
        else {
            return Err(KernelError::NotKernelPackage {
                package: current,
                path,
            });
        };
        progress(&format!("{current} is a metapackage for {dependency}"));
        current = dependency;
    }
    Err(KernelError::NotKernelPackage {
        package: package.to_string(),
        path: dest_dir.to_path_buf(),
    })
}

fn apt_get_download(
    package: &str,
    dest_dir: &Path,
    search_path: Option<&OsString>,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, KernelError> {
    validate_package_name(package)?;
    progress(&format!("apt-get download {package}"));
    let mut command = CommandSpec::new("apt-get")
        .args(["download", package])
        .current_dir(dest_dir)
        .timeout(DOWNLOAD_TIMEOUT);
    if let Some(path) = search_path {
        command = command.search_path(path.clone());
    }
    command.run().map_err(|source| KernelError::Download {
        package: package.to_string(),
        source,
    })?;
    newest_download(package, dest_dir)
}

/// Returns the most recently modified `<package>_*.deb` in `dir`, which is
/// the name `apt-get download` gives the file.
fn newest_download(package: &str, dir: &Path) -> Result<PathBuf, KernelError> {
    let missing = || KernelError::DownloadedFileMissing {
        package: package.to_string(),
        dir: dir.to_path_buf(),
    };
    let prefix = format!("{package}_");
    let entries = fs::read_dir(dir).map_err(|_| missing())?;
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix) || !name.ends_with(".deb") {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if newest.as_ref().is_none_or(|(time, _)| modified > *time) {
            newest = Some((modified, entry.path()));
        }
    }
    newest.map(|(_, path)| path).ok_or_else(missing)
}

fn contains_kernel_image(deb_path: &Path) -> Result<bool, KernelError> {
    let mut found = false;
    deb::walk_data(deb_path, &mut |path, header, _| {
        if deb::kernel_image_release(path, header).is_some() {
            found = true;
            return Ok(Walk::Stop);
        }
        Ok(Walk::Continue)
    })?;
    Ok(found)
}

fn validate_package_name(package: &str) -> Result<(), KernelError> {
    if crate::debian::is_valid_package_name(package) {
        Ok(())
    } else {
        Err(KernelError::InvalidPackageName {
            package: package.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Installs a fake `apt-get` that copies `<package>_*.deb` from `source`.
    fn fake_apt_get(bin: &Path, source: &Path) {
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = download ] || exit 2\n\
             for f in '{}'/\"$2\"_*.deb; do [ -e \"$f\" ] || {{ echo \"E: Unable to locate package $2\" >&2; exit 100; }}; cp \"$f\" .; done\n",
            source.display()
        );
        let path = bin.join("apt-get");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn option_like_package_is_rejected() {
        let err = download_with_path("-oDebug=1", Path::new("/nonexistent"), None, &mut |_| {})
            .unwrap_err();
        assert!(
            matches!(err, KernelError::InvalidPackageName { .. }),
            "{err}"
        );
    }

    #[test]
    fn metapackage_is_followed() {
        let (Some(meta), Some(kernel)) = (
            banger_test_support::kernel_meta_deb(),
            banger_test_support::kernel_deb(),
        ) else {
            banger_test_support::skip("no kernel packages in BANGER_TEST_KERNEL_DIR");
            return;
        };
        let work = tempfile::tempdir().unwrap();
        let source = work.path().join("mirror");
        let bin = work.path().join("bin");
        let dest = work.path().join("dest");
        for dir in [&source, &bin, &dest] {
            fs::create_dir(dir).unwrap();
        }
        for deb in [&meta, &kernel] {
            fs::copy(deb, source.join(deb.file_name().unwrap())).unwrap();
        }
        fake_apt_get(&bin, &source);

        let mut lines = Vec::new();
        let path = download_with_path(
            "linux-image-cloud-amd64",
            &dest,
            Some(&bin.clone().into_os_string()),
            &mut |line| lines.push(line.to_string()),
        )
        .unwrap();

        assert_eq!(path, dest.join(kernel.file_name().unwrap()));
        assert!(
            lines.iter().any(|l| l.contains("is a metapackage")),
            "{lines:?}"
        );
    }

    #[test]
    fn apt_failure_names_package() {
        let work = tempfile::tempdir().unwrap();
        fake_apt_get(work.path(), work.path());
        let err = download_with_path(
            "no-such-package",
            work.path(),
            Some(&work.path().as_os_str().to_owned()),
            &mut |_| {},
        )
        .unwrap_err();
        let message = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(message.contains("no-such-package"), "{message}");
        assert!(message.contains("Unable to locate package"), "{message}");
    }

    #[test]
    #[ignore = "downloads linux-image-cloud-amd64 from the Debian mirror configured in apt"]
    fn download_from_debian_mirror() {
        let dest = tempfile::tempdir().unwrap();
        let path = download_deb("linux-image-cloud-amd64", dest.path(), &mut |line| {
            eprintln!("{line}")
        })
        .unwrap();
        assert!(contains_kernel_image(&path).unwrap());
    }
}
