//! Where banger keeps its files, after the XDG base directory conventions.
//!
//! Every root can be moved with the standard variable (`XDG_CONFIG_HOME`,
//! `XDG_STATE_HOME`, `XDG_CACHE_HOME`, `XDG_RUNTIME_DIR`); tests point them at
//! temporary trees.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `$XDG_CONFIG_HOME/banger`
    pub config_dir: PathBuf,
    /// `$XDG_STATE_HOME/banger`: the database, VM disks, the daemon log.
    pub state_dir: PathBuf,
    /// `$XDG_CACHE_HOME/banger`: kernels, initramfs files and images by sha256.
    pub cache_dir: PathBuf,
    /// `$XDG_RUNTIME_DIR/banger`: the daemon socket and per-VM sockets.
    pub runtime_dir: PathBuf,
}

impl Paths {
    /// Resolves the paths from the process environment.
    pub fn from_env() -> Self {
        Self::resolve(|name| std::env::var_os(name).map(PathBuf::from), is_root())
    }

    /// Resolves the paths with `var` as the environment, for tests.
    pub fn resolve(var: impl Fn(&str) -> Option<PathBuf>, root: bool) -> Self {
        // Relative values are invalid by the XDG specification and are ignored.
        let absolute = |name: &str| var(name).filter(|p| p.is_absolute());
        let home = absolute("HOME").unwrap_or_else(|| PathBuf::from("/"));
        let base =
            |name: &str, fallback: &str| absolute(name).unwrap_or_else(|| home.join(fallback));
        let state_dir = base("XDG_STATE_HOME", ".local/state").join("banger");
        let runtime_dir = match absolute("XDG_RUNTIME_DIR") {
            Some(dir) => dir.join("banger"),
            None if root => PathBuf::from("/run/banger"),
            None => state_dir.join("run"),
        };
        Self {
            config_dir: base("XDG_CONFIG_HOME", ".config").join("banger"),
            state_dir,
            cache_dir: base("XDG_CACHE_HOME", ".cache").join("banger"),
            runtime_dir,
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    pub fn database(&self) -> PathBuf {
        self.state_dir.join("banger.db")
    }

    pub fn daemon_log(&self) -> PathBuf {
        self.state_dir.join("bangerd.log")
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.sock")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.lock")
    }

    /// Directory of a VM's disks and console log.
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("vms").join(id)
    }

    /// Directory of a VM's sockets and pid file while it runs.
    pub fn vm_run_dir(&self, id: &str) -> PathBuf {
        self.runtime_dir.join("vms").join(id)
    }
}

fn is_root() -> bool {
    // The effective uid decides where a root-run daemon keeps its socket.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `path` with `~` in place of the home directory, for messages.
pub fn display_path(path: &Path) -> String {
    match std::env::var_os("HOME").map(PathBuf::from) {
        Some(home) if home != Path::new("/") => match path.strip_prefix(&home) {
            Ok(rest) => format!("~/{}", rest.display()),
            Err(_) => path.display().to_string(),
        },
        _ => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)], root: bool) -> Paths {
        let map: HashMap<String, PathBuf> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
            .collect();
        Paths::resolve(|name| map.get(name).cloned(), root)
    }

    #[test]
    fn xdg_variables_win() {
        let paths = resolve(
            &[
                ("HOME", "/home/u"),
                ("XDG_CONFIG_HOME", "/t/config"),
                ("XDG_STATE_HOME", "/t/state"),
                ("XDG_CACHE_HOME", "/t/cache"),
                ("XDG_RUNTIME_DIR", "/t/run"),
            ],
            false,
        );
        assert_eq!(
            paths.config_file(),
            PathBuf::from("/t/config/banger/config.toml")
        );
        assert_eq!(paths.database(), PathBuf::from("/t/state/banger/banger.db"));
        assert_eq!(paths.cache_dir, PathBuf::from("/t/cache/banger"));
        assert_eq!(paths.socket(), PathBuf::from("/t/run/banger/bangerd.sock"));
    }

    #[test]
    fn defaults_under_home() {
        let paths = resolve(&[("HOME", "/home/u")], false);
        assert_eq!(paths.config_dir, PathBuf::from("/home/u/.config/banger"));
        assert_eq!(
            paths.state_dir,
            PathBuf::from("/home/u/.local/state/banger")
        );
        assert_eq!(paths.cache_dir, PathBuf::from("/home/u/.cache/banger"));
        assert_eq!(
            paths.runtime_dir,
            PathBuf::from("/home/u/.local/state/banger/run")
        );
    }

    #[test]
    fn root_without_runtime_dir_uses_run() {
        let paths = resolve(&[("HOME", "/root")], true);
        assert_eq!(paths.socket(), PathBuf::from("/run/banger/bangerd.sock"));
    }

    #[test]
    fn relative_values_are_ignored() {
        let paths = resolve(
            &[("HOME", "/home/u"), ("XDG_STATE_HOME", "relative")],
            false,
        );
        assert_eq!(
            paths.state_dir,
            PathBuf::from("/home/u/.local/state/banger")
        );
    }
}
