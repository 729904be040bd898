//! Workspaces: a host git checkout copied into a VM, where `vm exec` runs
//! commands.
//!
//! The CLI does the host side because it runs as the user, with the user's
//! repository, git and identity. It lists the files with `git ls-files`,
//! bundles HEAD's history with `git bundle`, and streams both as one tar
//! archive into the standard input of a guest shell script through the
//! daemon's exec route. The script rebuilds the repository next to the
//! target and renames it into place (see [`script::PREPARE`]). Before it
//! changes anything, the script checks that the directory it replaces
//! contains no work that is not exported (see [`guard`]). Only after
//! the guest reported success does the CLI record the workspace on the VM
//! through `PUT /v1/vms/{name}/workspace`, so a failed copy is never
//! recorded as prepared.

pub mod archive;
pub mod export;
pub mod git;
pub mod guard;
pub mod prepare;
pub mod script;

#[cfg(test)]
mod script_tests;
#[cfg(test)]
pub mod testing;

use banger_api::VmRecord;

/// Formats the WORKSPACE cell of `banger ps`: the host path with `~` for the home
/// directory and the short HEAD, like `~/src/proj@1a2b3c4`; `-` without a
/// workspace.
pub fn column(vm: &VmRecord) -> String {
    let Some(workspace) = &vm.workspace else {
        return "-".to_string();
    };
    let path = display_path(std::path::Path::new(&workspace.host_path));
    format!("{path}@{}", workspace.short_head().unwrap_or("empty"))
}

/// `~` for the home directory at the start of `path`, for messages.
pub fn display_path(path: &std::path::Path) -> String {
    let text = path.display().to_string();
    let home = std::env::var("HOME").unwrap_or_default();
    match text.strip_prefix(&home) {
        Some(rest) if !home.is_empty() && (rest.is_empty() || rest.starts_with('/')) => {
            format!("~{rest}")
        }
        _ => text,
    }
}

/// Returns the first seven hex digits of a commit id.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}
