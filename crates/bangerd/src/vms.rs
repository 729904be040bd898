//! VM lifecycle: create, start, stop, delete.
//!
//! Every VM is recorded in SQLite before its first side effect. A step that
//! fails undoes the earlier ones and leaves the record in `error` with the
//! cause, so no VM is ever half-made.

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_api::{AcceptedVm, CreateVmRequest, Defaults, ErrorKind, SetVmRequest};
use banger_model::{VmRecord, VmSpec, VmState, format_size, generate_vm_name, validate_vm_name};
use banger_vmm::{BackendKind, DiskSpec, LaunchSpec, VmProcess};

use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};
use crate::events::Events;
use crate::now_rfc3339;

/// Smallest VM the daemon creates.
pub const MIN_MEMORY_MIB: u32 = 256;
const MAX_VCPUS: u32 = 64;
const MIN_DISK_BYTES: u64 = 64 << 20;
/// The largest file ext4 stores with 4 KiB blocks, the usual host file
/// system for the sparse work disk.
const MAX_DISK_BYTES: u64 = 16 << 40;

impl Daemon {
    /// Sizes used when a request leaves them out: the config's `[vm_defaults]`,
    /// else derived from the host (a quarter of its CPUs between 2 and 4, an
    /// eighth of its memory between 1 and 8 GiB), and an 8 GiB work disk.
    pub fn defaults(&self) -> ApiResult<Defaults> {
        let host_cpus = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        let host_mib = host_memory_mib().unwrap_or(8192);
        let d = &self.config.vm_defaults;
        let disk = match &d.disk_size {
            Some(text) => banger_model::parse_size(text).map_err(|e| {
                ApiError::from_error(ErrorKind::Invalid, &e)
                    .context("invalid vm_defaults.disk_size in config.toml")
            })?,
            None => 8 << 30,
        };
        Ok(Defaults {
            image: self.config.default_image.clone(),
            kernel: self.config.default_kernel.clone(),
            vcpus: d
                .vcpus
                .unwrap_or((host_cpus / 4).clamp(2, 4).min(host_cpus)),
            memory_mib: d
                .memory_mib
                .unwrap_or((host_mib / 8).clamp(1024, 8192) as u32),
            disk_size_bytes: disk,
        })
    }

    pub fn vm_record(&self, name: &str) -> ApiResult<VmRecord> {
        self.store().get_vm(name)?.ok_or_else(|| {
            ApiError::not_found(format!("VM {name:?} not found"))
                .hint("list VMs with `banger vm list`")
        })
    }

    /// Returns the record of VM `name`, or a conflict error with the command
    /// that starts it when it is not running.
    pub fn running_vm(&self, name: &str) -> ApiResult<VmRecord> {
        let vm = self.vm_record(name)?;
        if vm.state != VmState::Running {
            return Err(
                ApiError::conflict(format!("VM {name:?} is {}, not running", vm.state))
                    .hint(format!("start it with `banger vm start {name}`")),
            );
        }
        Ok(vm)
    }

    /// Creates a VM and, unless `no_start`, boots it and waits for its agent.
    pub async fn create_vm(
        &self,
        request: CreateVmRequest,
        events: &Events,
    ) -> ApiResult<VmRecord> {
        let spec = self.resolve_spec(&request)?;
        let name = match &request.name {
            Some(name) => {
                validate_vm_name(name).map_err(|e| {
                    let hint = e.hint();
                    ApiError::from_error(ErrorKind::Invalid, &e).hint(hint)
                })?;
                name.clone()
            }
            None => self.unused_name()?,
        };
        let _guard = self.vm_lock(&name).await;
        if self.store().get_vm(&name)?.is_some() {
            return Err(
                ApiError::conflict(format!("a VM named {name:?} already exists")).hint(format!(
                    "choose another name, or delete it first with `banger vm delete {name}`"
                )),
            );
        }
        let defaults = self.defaults()?;
        let kernel_name = request.kernel.clone().unwrap_or(defaults.kernel);
        let image_name = request.image.clone().unwrap_or(defaults.image);
        // Validate the names before any download, so a typo fails at once.
        self.check_known_or_catalog(&kernel_name, &image_name)?;
        let vmm = self.requested_vmm(request.vmm.as_deref())?;
        self.agent_binary()?;
        events
            .accepted(AcceptedVm {
                name: name.clone(),
                vcpus: spec.vcpus,
                memory_mib: spec.memory_mib,
                disk_size_bytes: spec.disk_size_bytes,
                image: image_name.clone(),
                kernel: kernel_name.clone(),
            })
            .await;
        let kernel = self.ensure_kernel(&kernel_name, events).await?;
        let image = self.ensure_image(&image_name, events).await?;
        let backend = self.choose_backend(vmm, &kernel, events).await?;

        let now = now_rfc3339();
        let mut vm = VmRecord {
            id: new_vm_id(),
            name: name.clone(),
            state: VmState::Creating,
            image: image.name.clone(),
            kernel: kernel.name.clone(),
            spec,
            backend: backend.to_string(),
            created_at: now.clone(),
            updated_at: now,
            last_error: None,
            runtime: None,
            workspace: None,
        };
        self.store().insert_vm(&vm)?;
        self.store().set_vm_nat(&vm.id, request.nat)?;
        if let Err(error) = self.lease_address(&vm) {
            self.store().delete_vm(&vm.id)?;
            return Err(error);
        }
        tracing::info!(vm = %name, id = %vm.id, "VM record created");

        let created = if request.ephemeral {
            let events = events.abandoning_on_disconnect();
            self.build_vm(&mut vm, request.no_start, &events).await
        } else {
            self.build_vm(&mut vm, request.no_start, events).await
        };
        if !request.ephemeral {
            return created.map(|()| vm);
        }
        match created {
            Err(error) => {
                self.discard_ephemeral(vm, events, "its create failed")
                    .await;
                Err(error)
            }
            Ok(()) if events.client_gone() => {
                self.discard_ephemeral(vm, events, "its client disconnected")
                    .await;
                Err(ApiError::conflict(format!(
                    "VM {name:?} was deleted because its client disconnected"
                )))
            }
            Ok(()) => Ok(vm),
        }
    }

    /// Creates the disks and SSH files of a recorded VM and, unless
    /// `no_start`, boots it. On failure the VM's files are gone and its
    /// record is in `error` with the cause.
    async fn build_vm(&self, vm: &mut VmRecord, no_start: bool, events: &Events) -> ApiResult<()> {
        if let Err(error) = self.prepare_disks(vm, events).await {
            self.remove_vm_files(vm);
            return Err(self.fail(vm, error, "failed to create the disks"));
        }
        if let Err(error) = self.prepare_ssh(vm).await {
            self.remove_vm_files(vm);
            return Err(self.fail(vm, error, "failed to set up SSH access"));
        }
        if no_start {
            vm.state = VmState::Stopped;
            return self.save(vm);
        }
        if let Err(error) = self.boot_with_network(vm, events).await {
            self.remove_vm_files(vm);
            return Err(self.fail(vm, error, "failed to boot"));
        }
        Ok(())
    }

    /// Deletes an ephemeral VM whose create failed or whose client went
    /// away; the caller holds the VM's lock.
    async fn discard_ephemeral(&self, vm: VmRecord, events: &Events, reason: &str) {
        tracing::info!(vm = %vm.name, reason, "deleting the ephemeral VM");
        if let Err(error) = self.delete_locked(vm.clone(), events).await {
            tracing::error!(vm = %vm.name, error = %error, "failed to delete the ephemeral VM");
        }
    }

    pub async fn start_vm(&self, name: &str, events: &Events) -> ApiResult<VmRecord> {
        let _guard = self.vm_lock(name).await;
        let vm = self.vm_record(name)?;
        self.start_locked(vm, events).await
    }

    /// Stops a VM when it runs, then boots it again, holding its lock
    /// throughout so no other operation runs in between.
    pub async fn restart_vm(&self, name: &str, events: &Events) -> ApiResult<VmRecord> {
        let _guard = self.vm_lock(name).await;
        let mut vm = self.vm_record(name)?;
        if vm.state == VmState::Running {
            vm = self.stop_locked(vm, events).await?;
        }
        self.start_locked(vm, events).await
    }

    /// Changes the vCPU count, memory or VMM backend of a VM that is not
    /// running; they apply from its next boot.
    pub async fn set_vm(&self, name: &str, request: &SetVmRequest) -> ApiResult<VmRecord> {
        let _guard = self.vm_lock(name).await;
        let mut vm = self.vm_record(name)?;
        if request.vcpus.is_none() && request.memory_mib.is_none() && request.vmm.is_none() {
            return Err(
                ApiError::invalid(format!("nothing to change on VM {name:?}"))
                    .hint("pass --vcpu N, --memory MIB or --vmm BACKEND"),
            );
        }
        if !vm.state.can_start() {
            return Err(ApiError::conflict(format!(
                "VM {name:?} is {}; its size and backend change only while it is stopped",
                vm.state
            ))
            .hint(format!("stop it first with `banger vm stop {name}`")));
        }
        if request.vmm.is_some() {
            let setting = self.requested_vmm(request.vmm.as_deref())?;
            let kernel = self.kernel_record(&vm.kernel)?;
            // Progress lines of a JSON request have no reader.
            let (events, _) = crate::events::Events::detached();
            let backend = self.choose_backend(setting, &kernel, &events).await?;
            vm.backend = backend.to_string();
            self.save(&mut vm)?;
            tracing::info!(vm = %name, backend = %vm.backend, "VM backend changed");
        }
        let spec = VmSpec {
            vcpus: request.vcpus.unwrap_or(vm.spec.vcpus),
            memory_mib: request.memory_mib.unwrap_or(vm.spec.memory_mib),
            disk_size_bytes: vm.spec.disk_size_bytes,
        };
        validate_spec(&spec)?;
        self.store().set_vm_spec(&vm.id, &spec)?;
        vm.spec = spec;
        tracing::info!(vm = %name, vcpus = vm.spec.vcpus, memory_mib = vm.spec.memory_mib, "VM resized");
        Ok(vm)
    }

    async fn start_locked(&self, mut vm: VmRecord, events: &Events) -> ApiResult<VmRecord> {
        let name = vm.name.clone();
        // Starting is idempotent, like stopping.
        if vm.state == VmState::Running {
            events
                .progress(format!("VM {name} is already running"))
                .await;
            return Ok(vm);
        }
        if !vm.state.can_start() {
            return Err(ApiError::conflict(format!("VM {name:?} is {}", vm.state))
                .hint("wait for the current operation to finish"));
        }
        if !self.paths.vm_dir(&vm.id).join(ROOT_DISK).exists() {
            return Err(ApiError::conflict(format!("VM {name:?} has no disks"))
                .cause(
                    vm.last_error
                        .clone()
                        .unwrap_or_else(|| "its creation failed".into()),
                )
                .hint(format!(
                    "delete it with `banger vm delete {name}` and create it again"
                )));
        }
        // The current agent goes into every boot, so guests follow daemon upgrades.
        let agent = self.agent_binary()?;
        let root = self.paths.vm_dir(&vm.id).join(ROOT_DISK);
        crate::artifacts::blocking(move || inject_agent(&root, &agent))
            .await
            .map_err(|e| {
                crate::artifacts::classify_tool_error(e).context("failed to update the guest agent")
            })?;
        if let Err(error) = self.boot_with_network(&mut vm, events).await {
            return Err(self.fail(&mut vm, error, "failed to boot"));
        }
        Ok(vm)
    }

    /// Stops a running VM: the guest syncs and powers off through its agent;
    /// when it does not, the VMM is stopped. The disks stay.
    pub async fn stop_vm(&self, name: &str, events: &Events) -> ApiResult<VmRecord> {
        let _guard = self.vm_lock(name).await;
        let vm = self.vm_record(name)?;
        self.stop_locked(vm, events).await
    }

    async fn stop_locked(&self, mut vm: VmRecord, events: &Events) -> ApiResult<VmRecord> {
        let name = vm.name.clone();
        // Stopping a VM that runs no process is done already.
        if matches!(vm.state, VmState::Stopped | VmState::Error) {
            events
                .progress(format!("VM {name} is {}, not running", vm.state))
                .await;
            return Ok(vm);
        }
        if vm.state != VmState::Running {
            return Err(
                ApiError::conflict(format!("VM {name:?} is {}, not running", vm.state))
                    .hint("wait for the current operation to finish"),
            );
        }
        vm.state = VmState::Stopping;
        self.save(&mut vm)?;
        events.progress(format!("stopping VM {name}")).await;
        self.halt(&vm).await;
        self.network_down(&vm, events.operation_id()).await;
        vm.state = VmState::Stopped;
        vm.runtime = None;
        self.save(&mut vm)?;
        tracing::info!(vm = %name, "VM stopped");
        Ok(vm)
    }

    /// Ends a hung VM's VMM at once (SIGKILL); the disks stay.
    pub async fn kill_vm(&self, name: &str, events: &Events) -> ApiResult<VmRecord> {
        let _guard = self.vm_lock(name).await;
        let mut vm = self.vm_record(name)?;
        let Some(process) = runtime_process(&vm) else {
            return Err(ApiError::conflict(format!(
                "VM {name:?} is {}, not running",
                vm.state
            )));
        };
        events.progress(format!("killing VM {name}")).await;
        self.backend_of(&process)?
            .kill(&process)
            .await
            .map_err(|e| {
                ApiError::from_error(ErrorKind::Internal, &e)
                    .context(format!("failed to kill VM {name:?}"))
            })?;
        self.network_down(&vm, events.operation_id()).await;
        self.drop_agent(&vm.id).await;
        let _ = std::fs::remove_dir_all(self.paths.vm_run_dir(&vm.id));
        vm.state = VmState::Stopped;
        vm.runtime = None;
        self.save(&mut vm)?;
        tracing::info!(vm = %name, stop_path = "sigkill", "VM killed");
        Ok(vm)
    }

    /// Deletes a VM and everything it owns, stopping it first if it runs.
    pub async fn delete_vm(&self, name: &str, events: &Events) -> ApiResult<VmRecord> {
        let _guard = self.vm_lock(name).await;
        let vm = self.vm_record(name)?;
        self.delete_locked(vm, events).await
    }

    /// Kills a VM's process, takes down its network, and removes its files
    /// and record; the caller holds the VM's lock.
    async fn delete_locked(&self, vm: VmRecord, events: &Events) -> ApiResult<VmRecord> {
        let name = vm.name.clone();
        if let Some(process) = runtime_process(&vm) {
            events.progress(format!("killing VM {name}")).await;
            if let Err(e) = self.backend_of(&process)?.kill(&process).await {
                tracing::warn!(vm = %name, error = %e, "failed to kill the VMM");
                return Err(ApiError::from_error(ErrorKind::Internal, &e)
                    .context(format!("failed to delete VM {name:?}")));
            }
        }
        self.network_down(&vm, events.operation_id()).await;
        self.drop_agent(&vm.id).await;
        self.remove_vm_files(&vm);
        self.network_forget(&vm).await;
        self.store().delete_vm(&vm.id)?;
        tracing::info!(vm = %name, "VM deleted");
        Ok(vm)
    }

    fn resolve_spec(&self, request: &CreateVmRequest) -> ApiResult<VmSpec> {
        let defaults = self.defaults()?;
        let spec = VmSpec {
            vcpus: request.vcpus.unwrap_or(defaults.vcpus),
            memory_mib: request.memory_mib.unwrap_or(defaults.memory_mib),
            disk_size_bytes: request.disk_size_bytes.unwrap_or(defaults.disk_size_bytes),
        };
        validate_spec(&spec)?;
        Ok(spec)
    }

    fn check_known_or_catalog(&self, kernel: &str, image: &str) -> ApiResult<()> {
        let store = self.store();
        if store.get_kernel(kernel)?.is_none()
            && !crate::artifacts::KERNEL_CATALOG
                .iter()
                .any(|k| k.name == kernel)
        {
            drop(store);
            return Err(self.kernel_record(kernel).unwrap_err());
        }
        if store.get_image(image)?.is_none() && banger_image::image::default_recipe(image).is_none()
        {
            drop(store);
            return Err(self.image_record(image).unwrap_err());
        }
        Ok(())
    }

    fn unused_name(&self) -> ApiResult<String> {
        for _ in 0..100 {
            let name = generate_vm_name();
            if self.store().get_vm(&name)?.is_none() {
                return Ok(name);
            }
        }
        Err(ApiError::conflict("could not find an unused VM name").hint("pass --name"))
    }

    async fn prepare_disks(&self, vm: &VmRecord, events: &Events) -> ApiResult<()> {
        let dir = self.paths.vm_dir(&vm.id);
        create_private_dir(&dir)?;
        let image = self.image_record(&vm.image)?;
        let source = self.image_file(&image);
        let root = dir.join(ROOT_DISK);
        let work = dir.join(WORK_DISK);
        let work_size = vm.spec.disk_size_bytes;
        let agent = self.agent_binary()?;
        events.progress("copying the root file system").await;
        let method = crate::artifacts::blocking(move || -> ApiResult<_> {
            let method = banger_image::disk::clone_disk(&source, &root)
                .map_err(|e| ApiError::from_error(ErrorKind::Internal, &e))?;
            inject_agent(&root, &agent).map_err(crate::artifacts::classify_tool_error)?;
            banger_image::disk::create_work_disk(&work, work_size)
                .map_err(crate::artifacts::classify_tool_error)?;
            Ok(method)
        })
        .await?;
        tracing::info!(vm = %vm.name, ?method, "disks ready");
        Ok(())
    }

    /// Launches the VMM and waits until the guest agent answers.
    pub(crate) async fn boot(
        &self,
        vm: &mut VmRecord,
        events: &Events,
        net: Option<&crate::network::GuestNet>,
    ) -> ApiResult<()> {
        let kernel = self.kernel_record(&vm.kernel)?;
        let (files, initrd) = self.boot_files(&kernel).await?;
        let kind = crate::backend::parse_backend(&vm.backend).ok_or_else(|| {
            ApiError::conflict(format!(
                "VM {:?} has an unknown backend {:?}",
                vm.name, vm.backend
            ))
        })?;
        let vmm = self.backend(kind)?;
        let (kernel_path, accel) = match kind {
            BackendKind::Qemu => {
                let image = qemu_image(&files, &kernel.name)?;
                let accel = self.accel(&image, &initrd, events).await;
                (image, accel)
            }
            // Firecracker boots the ELF vmlinux under KVM only.
            BackendKind::Firecracker => (files.vmlinux.clone(), banger_vmm::Accel::Kvm),
        };

        let run_dir = self.paths.vm_run_dir(&vm.id);
        let _ = std::fs::remove_dir_all(&run_dir);
        create_private_dir(&run_dir)?;
        let dir = self.paths.vm_dir(&vm.id);
        let spec = LaunchSpec {
            vm_id: vm.id.clone(),
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory_mib,
            kernel: kernel_path,
            initrd: Some(initrd),
            cmdline: match net {
                Some(net) => format!("{} {}", guest_cmdline(&vm.name), net.cmdline_args()),
                None => guest_cmdline(&vm.name),
            },
            disks: vec![
                DiskSpec {
                    path: dir.join(ROOT_DISK),
                    read_only: false,
                },
                DiskSpec {
                    path: dir.join(WORK_DISK),
                    read_only: false,
                },
            ],
            nics: net.map(|net| vec![net.nic()]).unwrap_or_default(),
            run_dir: run_dir.clone(),
            console_log: dir.join(CONSOLE_LOG),
            accel,
        };
        vm.state = VmState::Starting;
        self.save(vm)?;
        events
            .progress(match kind {
                BackendKind::Qemu => format!("booting {} (qemu, {accel})", vm.name),
                BackendKind::Firecracker => format!("booting {} (firecracker)", vm.name),
            })
            .await;
        let process = match vmm.launch(&spec).await {
            Ok(process) => process,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&run_dir);
                return Err(ApiError::from_error(ErrorKind::Internal, &e)
                    .context("failed to start the VMM"));
            }
        };
        vm.runtime = Some(serde_json::to_value(&process).expect("process record serialises"));
        self.save(vm)?;
        tracing::info!(vm = %vm.name, pid = process.pid, "VMM started");

        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.config.boot_timeout_secs);
        let abandoned = || events.abandoned();
        match crate::boot::wait_for_agent(vmm.as_ref(), &process, deadline, &abandoned).await {
            Ok(conn) => {
                events
                    .progress(format!(
                        "{} is ready: kernel {}, agent {}",
                        vm.name, conn.info.kernel_release, conn.info.agent_version
                    ))
                    .await;
                self.set_agent(&vm.id, conn).await;
            }
            Err(error) => {
                let _ = vmm.kill(&process).await;
                let _ = std::fs::remove_dir_all(&run_dir);
                vm.runtime = None;
                let tail = console_tail(&spec.console_log, 15);
                let api = match error {
                    crate::boot::BootError::Timeout => ApiError::new(
                        ErrorKind::Unavailable,
                        format!(
                            "the guest agent did not answer within {} s",
                            self.config.boot_timeout_secs
                        ),
                    )
                    .hint(format!(
                        "raise boot_timeout_secs in {} when guests boot slowly on this host",
                        self.paths.config_file().display()
                    )),
                    error => ApiError::from_error(ErrorKind::Internal, &error),
                };
                // The console log goes away with a VM that failed to be
                // created, so its last lines travel in the error.
                return Err(if tail.is_empty() {
                    api.cause("the guest printed nothing on its console")
                } else {
                    api.cause(format!("last console lines:\n{tail}"))
                });
            }
        }
        vm.state = VmState::Running;
        vm.last_error = None;
        self.save(vm)?;
        tracing::info!(vm = %vm.name, "VM running");
        Ok(())
    }

    /// Ends a running VM's VMM process, gracefully when the guest cooperates.
    pub async fn halt(&self, vm: &VmRecord) {
        let Some(process) = runtime_process(vm) else {
            return;
        };
        let Ok(vmm) = self.backend_of(&process) else {
            tracing::warn!(vm = %vm.name, backend = %process.backend, "backend unavailable; cannot stop the VMM");
            return;
        };
        let grace = Duration::from_secs(self.config.stop_timeout_secs);
        let mut path = "agent".to_string();
        let synced = match self.agent(&vm.id).await {
            Some(conn) => conn
                .shutdown(
                    banger_agent_proto::ShutdownAction::Poweroff,
                    Duration::from_secs(10),
                )
                .await
                .is_ok(),
            None => false,
        };
        if !(synced && vmm.wait_exit(&process, grace).await) {
            path = match vmm.stop(&process, Duration::from_secs(10)).await {
                Ok(stop) => stop.to_string(),
                Err(e) => {
                    tracing::warn!(vm = %vm.name, error = %e, "graceful stop failed; killing");
                    let _ = vmm.kill(&process).await;
                    "sigkill".to_string()
                }
            };
        }
        tracing::info!(vm = %vm.name, stop_path = %path, "VMM ended");
        self.drop_agent(&vm.id).await;
        let _ = std::fs::remove_dir_all(self.paths.vm_run_dir(&vm.id));
    }

    /// Marks a VM failed with `error` as its last error and returns the error
    /// for the caller.
    fn fail(&self, vm: &mut VmRecord, error: ApiError, what: &str) -> ApiError {
        let error = error.context(format!("VM {:?} {what}", vm.name));
        vm.state = VmState::Error;
        vm.runtime = None;
        vm.last_error = Some(error.to_string());
        if let Err(e) = self.save(vm) {
            tracing::error!(vm = %vm.name, error = %e, "failed to record the VM error");
        }
        tracing::warn!(vm = %vm.name, error = %error, "VM failed");
        error
    }

    pub fn save(&self, vm: &mut VmRecord) -> ApiResult<()> {
        vm.updated_at = now_rfc3339();
        self.store().update_vm(vm)?;
        Ok(())
    }

    pub fn remove_vm_files(&self, vm: &VmRecord) {
        for dir in [self.paths.vm_dir(&vm.id), self.paths.vm_run_dir(&vm.id)] {
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(vm = %vm.name, dir = %dir.display(), error = %e, "failed to remove VM files");
            }
        }
    }

    async fn accel(&self, kernel: &Path, initrd: &Path, events: &Events) -> banger_vmm::Accel {
        use crate::config::AccelSetting;
        match self.config.accel {
            AccelSetting::Kvm => banger_vmm::Accel::Kvm,
            AccelSetting::Tcg => banger_vmm::Accel::Tcg,
            AccelSetting::Auto => {
                let result = self.kvm_probe(kernel, initrd).await;
                if result.kvm_boots {
                    banger_vmm::Accel::Kvm
                } else {
                    tracing::info!(detail = %result.detail, "KVM boot probe failed; using TCG");
                    // Said once per daemon; `banger doctor` shows the details.
                    static EXPLAINED: std::sync::atomic::AtomicBool =
                        std::sync::atomic::AtomicBool::new(false);
                    if !EXPLAINED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        events
                            .progress(
                                "KVM cannot boot guests on this host, so they run under software emulation (TCG); see `banger doctor`",
                            )
                            .await;
                    }
                    banger_vmm::Accel::Tcg
                }
            }
        }
    }

    /// Whether QEMU with KVM boots this kernel here; cached per kernel,
    /// initramfs, QEMU and host kernel.
    pub async fn kvm_probe(&self, kernel: &Path, initrd: &Path) -> banger_vmm::ProbeResult {
        let probe_dir = self.paths.cache_dir.join("probes");
        let _ = std::fs::create_dir_all(&probe_dir);
        let _guard = self.artifact_lock("kvm-probe").await;
        banger_vmm::probe_accel(
            &self.qemu_binary(),
            kernel,
            initrd,
            &probe_dir,
            Duration::from_secs(20),
        )
        .await
    }

    /// The kernel's files and its initramfs with the current agent.
    pub async fn boot_files(
        &self,
        kernel: &banger_model::KernelRecord,
    ) -> ApiResult<(banger_image::kernel::KernelArtifacts, PathBuf)> {
        let files = self.kernel_files(kernel)?;
        let agent = self.agent_binary()?;
        let cache = self.paths.cache_dir.clone();
        let kernel_files = files.clone();
        let initrd = crate::artifacts::blocking(move || {
            banger_image::kernel::build_initramfs(&kernel_files, &agent, &cache)
        })
        .await
        .map_err(|e| {
            ApiError::from_error(ErrorKind::Internal, &e).context("failed to build the initramfs")
        })?;
        Ok((files, initrd))
    }

    pub fn qemu_binary(&self) -> PathBuf {
        self.config
            .qemu_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
    }
}

pub const ROOT_DISK: &str = "rootfs.ext4";
pub const WORK_DISK: &str = "work.ext4";
pub const CONSOLE_LOG: &str = "console.log";

/// The process record of a VM that the daemon believes runs.
pub fn runtime_process(vm: &VmRecord) -> Option<VmProcess> {
    vm.runtime
        .as_ref()
        .and_then(|value| serde_json::from_value(value.clone()).ok())
}

/// Writes the current agent and its unit into a VM's root disk, so guests
/// follow daemon upgrades without a rebuilt image.
fn inject_agent(root: &Path, agent: &Path) -> Result<(), banger_image::image::ImageError> {
    use banger_image::image::guest_files::AGENT_UNIT;
    let scratch = root.with_extension("agent-unit.tmp");
    std::fs::write(&scratch, AGENT_UNIT).map_err(|source| banger_image::image::ImageError::Io {
        action: "write",
        path: scratch.clone(),
        source,
    })?;
    let result = banger_image::image::inject_files(
        root,
        &[
            banger_image::image::InjectFile {
                host_path: agent.to_path_buf(),
                guest_path: "/usr/local/bin/banger-agent".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
            banger_image::image::InjectFile {
                host_path: scratch.clone(),
                guest_path: "/etc/systemd/system/banger-agent.service".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        ],
    );
    let _ = std::fs::remove_file(&scratch);
    result
}

fn guest_cmdline(hostname: &str) -> String {
    format!(
        "root=LABEL=bangerroot rw panic=-1 quiet loglevel=4 systemd.show_status=false banger.hostname={hostname}"
    )
}

fn new_vm_id() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

fn create_private_dir(dir: &Path) -> ApiResult<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            ApiError::from_error(ErrorKind::Internal, &e)
                .context(format!("failed to create {}", dir.display()))
        })
}

/// The last `lines` lines of a console log, for error messages.
pub fn console_tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    // QEMU's microvm has no PCI bus, so the kernel reports on every boot
    // that it found no way to access one. In a failure's tail that line
    // reads like the cause.
    let all: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("PCI: Fatal: No config space access"))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Checks a VM's size against banger's limits.
fn validate_spec(spec: &VmSpec) -> ApiResult<()> {
    validate_vcpus(spec.vcpus)?;
    validate_memory(spec.memory_mib)?;
    validate_disk(spec.disk_size_bytes)
}

fn validate_vcpus(vcpus: u32) -> ApiResult<()> {
    // More vCPUs than host CPUs only slows every vCPU down.
    let host_cpus = std::thread::available_parallelism().map_or(u32::MAX, |n| n.get() as u32);
    if vcpus == 0 || vcpus > MAX_VCPUS {
        let max_vcpus = MAX_VCPUS.min(host_cpus);
        return Err(ApiError::invalid(format!("invalid vCPU count {vcpus}"))
            .hint(format!("use 1 to {max_vcpus} vCPUs")));
    }
    if vcpus > host_cpus {
        return Err(ApiError::invalid(format!(
            "{vcpus} vCPUs are more than this host's {host_cpus} CPUs"
        ))
        .hint(format!("use at most {host_cpus} vCPUs")));
    }
    Ok(())
}

fn validate_memory(memory_mib: u32) -> ApiResult<()> {
    if memory_mib < MIN_MEMORY_MIB {
        return Err(
            ApiError::invalid(format!("invalid memory size {memory_mib} MiB"))
                .hint(format!("use at least {MIN_MEMORY_MIB} MiB")),
        );
    }

    // The VMM cannot get more memory than the host has at all.
    if let Some(host_mib) = host_memory_mib()
        && u64::from(memory_mib) > host_mib
    {
        return Err(ApiError::invalid(format!(
            "memory size {memory_mib} MiB is more than this host's {host_mib} MiB"
        ))
        .hint(format!("use at most {host_mib} MiB")));
    }
    Ok(())
}

fn validate_disk(disk_size_bytes: u64) -> ApiResult<()> {
    let invalid = || {
        ApiError::invalid(format!(
            "invalid disk size {}",
            format_size(disk_size_bytes)
        ))
    };
    if disk_size_bytes < MIN_DISK_BYTES {
        return Err(invalid().hint("use at least 64M"));
    }
    if disk_size_bytes > MAX_DISK_BYTES {
        return Err(invalid().hint(format!(
            "use at most {}, the largest file ext4 stores",
            format_size(MAX_DISK_BYTES)
        )));
    }
    Ok(())
}

/// Returns the kernel image QEMU boots, or an error with the way to get one.
pub(crate) fn qemu_image(
    files: &banger_image::kernel::KernelArtifacts,
    kernel: &str,
) -> ApiResult<std::path::PathBuf> {
    files.qemu_image().map(Path::to_path_buf).map_err(|error| {
        ApiError::from_error(ErrorKind::Unavailable, &error)
            .context(format!("cannot boot kernel {kernel:?} with QEMU"))
            .hint("import the kernel's bzImage (vmlinuz) instead, or use `--vmm firecracker` on a host where KVM boots guests")
    })
}
