//! The module list (`/etc/banger/modules`) and loading modules with
//! `finit_module(2)`.

use std::ffi::CStr;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use thiserror::Error;

/// Path of the module list inside the initramfs.
pub const MODULE_LIST_PATH: &str = "/etc/banger/modules";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ModuleListError {
    #[error("line {line}: module path {path:?} is not absolute")]
    RelativePath { line: usize, path: String },
}

#[derive(Debug, Error)]
pub enum ModuleLoadError {
    #[error("opening module {path} failed")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading module {path} failed (check that the modules it needs are listed before it)")]
    Load {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Result of loading one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    Loaded,
    AlreadyLoaded,
}

/// Parses the module list: one absolute path per line, in load order. Blank
/// lines and lines starting with `#` are ignored; surrounding whitespace is
/// trimmed.
pub fn parse_module_list(text: &str) -> Result<Vec<PathBuf>, ModuleListError> {
    let mut modules = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.starts_with('/') {
            return Err(ModuleListError::RelativePath {
                line: index + 1,
                path: line.to_owned(),
            });
        }
        modules.push(PathBuf::from(line));
    }
    Ok(modules)
}

/// Loads one module file. A module that is already loaded (`EEXIST`) is not
/// an error.
pub fn load_module(path: &Path) -> Result<LoadOutcome, ModuleLoadError> {
    let file = File::open(path).map_err(|source| ModuleLoadError::Open {
        path: path.to_owned(),
        source,
    })?;
    let no_parameters: &CStr = c"";
    match finit_module(&file, no_parameters, ModuleInitFlags::empty()) {
        Ok(()) => Ok(LoadOutcome::Loaded),
        Err(Errno::EEXIST) => Ok(LoadOutcome::AlreadyLoaded),
        Err(source) => Err(ModuleLoadError::Load {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_list_in_order() {
        let text = "\
# virtio transport first
/lib/modules/virtio_ring.ko
  /lib/modules/virtio.ko  

/lib/modules/virtio_blk.ko
";
        assert_eq!(
            parse_module_list(text).unwrap(),
            vec![
                PathBuf::from("/lib/modules/virtio_ring.ko"),
                PathBuf::from("/lib/modules/virtio.ko"),
                PathBuf::from("/lib/modules/virtio_blk.ko"),
            ]
        );
    }

    #[test]
    fn empty_module_list() {
        assert_eq!(parse_module_list("").unwrap(), Vec::<PathBuf>::new());
        assert_eq!(
            parse_module_list("\n# none\n").unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn relative_module_path_is_rejected() {
        assert_eq!(
            parse_module_list("/lib/modules/a.ko\nlib/modules/b.ko\n"),
            Err(ModuleListError::RelativePath {
                line: 2,
                path: "lib/modules/b.ko".into()
            })
        );
    }

    #[test]
    fn missing_module_file_names_path() {
        let error = load_module(Path::new("/nonexistent/banger-test.ko")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/banger-test.ko"),
            "{error}"
        );
    }
}
