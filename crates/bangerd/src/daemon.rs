//! The daemon's shared state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use banger_api::ErrorKind;
use banger_api::paths::Paths;
use banger_store::Store;
use banger_vmm::{BackendKind, VmProcess, Vmm};
use tokio::sync::{Notify, OwnedMutexGuard};

use crate::agent::AgentConn;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};

pub struct Daemon {
    pub paths: Paths,
    pub config: Config,
    store: Mutex<Store>,
    /// VMM backends by kind; Firecracker is absent when its binary is unusable.
    backends: HashMap<BackendKind, Arc<dyn Vmm>>,
    /// The Firecracker binary and version, or why it cannot be used.
    pub firecracker: crate::backend::FirecrackerStatus,
    /// Serialises lifecycle operations per VM name.
    vm_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises pulls and builds per kernel or image name.
    artifact_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Live agent sessions by VM id.
    agents: tokio::sync::Mutex<HashMap<String, Arc<AgentConn>>>,
    pub shutdown: Notify,
    /// Network backend, DNS records and leases' runtime side.
    pub net: crate::network::NetState,
}

impl Daemon {
    pub fn new(
        paths: Paths,
        config: Config,
        store: Store,
        backends: crate::backend::Backends,
    ) -> Self {
        Self {
            paths,
            config,
            store: Mutex::new(store),
            backends: backends.map,
            firecracker: backends.firecracker,
            vm_locks: Mutex::default(),
            artifact_locks: Mutex::default(),
            agents: tokio::sync::Mutex::default(),
            shutdown: Notify::new(),
            net: crate::network::NetState::default(),
        }
    }

    /// Returns the backend of `kind`, or why it cannot be used.
    pub fn backend(&self, kind: BackendKind) -> ApiResult<Arc<dyn Vmm>> {
        if let Some(vmm) = self.backends.get(&kind) {
            return Ok(vmm.clone());
        }
        let error =
            ApiError::unavailable(format!("the {kind} backend is not available on this host"));
        Err(match &self.firecracker {
            crate::backend::FirecrackerStatus::Unusable { reason, hint }
                if kind == BackendKind::Firecracker =>
            {
                error.cause(reason.clone()).hint(hint.clone())
            }
            _ => error.hint("run `banger doctor` to see why"),
        })
    }

    /// Returns the backend that runs `process`.
    pub fn backend_of(&self, process: &VmProcess) -> ApiResult<Arc<dyn Vmm>> {
        self.backend(process.backend)
    }

    /// Locks the database. Hold the guard only for a few queries, never across an await.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("store lock poisoned")
    }

    pub async fn vm_lock(&self, name: &str) -> OwnedMutexGuard<()> {
        let lock = self
            .vm_locks
            .lock()
            .expect("vm locks")
            .entry(name.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    pub async fn artifact_lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = self
            .artifact_locks
            .lock()
            .expect("artifact locks")
            .entry(key.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    pub async fn agent(&self, vm_id: &str) -> Option<Arc<AgentConn>> {
        let agents = self.agents.lock().await;
        agents.get(vm_id).filter(|conn| !conn.is_closed()).cloned()
    }

    pub async fn set_agent(&self, vm_id: &str, conn: Arc<AgentConn>) {
        self.agents.lock().await.insert(vm_id.to_string(), conn);
    }

    pub async fn drop_agent(&self, vm_id: &str) {
        self.agents.lock().await.remove(vm_id);
    }

    /// Finds and checks the static guest agent binary put into initramfs files and VM disks.
    pub fn agent_binary(&self) -> ApiResult<PathBuf> {
        let candidate = self
            .config
            .agent_bin
            .clone()
            .or_else(|| std::env::var_os("BANGER_AGENT_BIN").map(PathBuf::from))
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.parent().map(|dir| dir.join("banger-agent")))
            })
            .ok_or_else(|| ApiError::unavailable("cannot locate the banger-agent binary"))?;
        crate::agent_bin::check_static(&candidate).map_err(|e| {
            ApiError::from_error(ErrorKind::Unavailable, e.as_ref()).hint(
                "build it with `scripts/build.sh`, or set agent_bin in config.toml to a statically linked banger-agent",
            )
        })?;
        Ok(candidate)
    }
}
