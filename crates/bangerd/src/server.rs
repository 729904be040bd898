//! Socket setup and the serve loop.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use banger_api::paths::Paths;
use banger_store::Store;
use tokio::net::UnixListener;

use crate::config::Config;
use crate::daemon::Daemon;

pub async fn run() -> anyhow::Result<()> {
    let paths = Paths::from_env();
    let config = Config::load(&paths.config_file())?;
    for dir in [&paths.state_dir, &paths.runtime_dir] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
    }
    // Sockets and files created from here on are private to this user.
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };

    let _lock = lock_instance(&paths.lock_file())?;
    let store = Store::open(&paths.database())?;
    let backends = crate::backend::backends(&config).await;
    let daemon = Arc::new(Daemon::new(paths.clone(), config, store, backends));
    crate::reconcile::reconcile(&daemon)
        .await
        .context("failed to settle VMs at startup")?;
    crate::network::startup(&daemon).await;

    let socket = paths.socket();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("failed to listen on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("failed to restrict {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "bangerd listening");

    let app = crate::routes::router(daemon.clone());
    let stop = daemon.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = stop.shutdown.notified() => {}
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate() => {}
            }
            tracing::info!("bangerd stopping; running VMs keep running");
        })
        .await
        .context("the API server failed")?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

async fn terminate() {
    if let Ok(mut signal) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        signal.recv().await;
    }
}

/// Takes an exclusive lock so that one daemon runs per runtime directory.
fn lock_instance(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another bangerd already runs for {}; stop it with `banger daemon stop`",
            path.parent().unwrap_or(path).display()
        );
    }
    Ok(file)
}
