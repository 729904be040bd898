//! Kernel, initramfs, root image and disk artifacts for banger's microVMs.
//!
//! Artifacts are content-addressed under a cache root chosen by the caller
//! (`$XDG_CACHE_HOME/banger`). Each is built in a staging directory under
//! `<cache>/tmp/`, fsynced and renamed into place, so a crash never leaves a
//! partial artifact under its final name. All functions are synchronous and
//! report progress through a `&mut dyn FnMut(&str)` callback where they take
//! one.

pub mod cpio;
mod debian;
pub mod disk;
pub mod image;
pub mod kernel;
mod store;

pub use disk::{CloneMethod, DiskError, clone_disk, create_work_disk};
pub use image::{
    BuiltImage, ImageError, ImageRecipe, InjectFile, build_image, default_recipe, find_built,
    inject_files,
};
pub use kernel::{
    KernelArtifacts, KernelError, build_initramfs, download_deb, extract_vmlinux, import_deb,
};
