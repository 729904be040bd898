use banger_model::{ImageRecord, KernelRecord, VmRecord, VmSpec, VmState, Workspace};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Result, Store, StoreError};

fn corrupt(
    what: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Corrupt {
        what,
        source: Box::new(source),
    }
}

const VM_COLUMNS: &str = "id, name, state, image_name, kernel_name, backend, spec, runtime, \
                          last_error, created_at, updated_at, workspace";

/// A VM row as stored, before its JSON columns are decoded.
struct VmRow {
    id: String,
    name: String,
    state: String,
    image: String,
    kernel: String,
    backend: String,
    spec: String,
    runtime: Option<String>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
    workspace: Option<String>,
}

impl VmRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            state: row.get(2)?,
            image: row.get(3)?,
            kernel: row.get(4)?,
            backend: row.get(5)?,
            spec: row.get(6)?,
            runtime: row.get(7)?,
            last_error: row.get(8)?,
            created_at: row.get(9)?,
            updated_at: row.get(10)?,
            workspace: row.get(11)?,
        })
    }

    fn decode(self) -> Result<VmRecord> {
        let state: VmState = self
            .state
            .parse()
            .map_err(|message: String| corrupt("VM state", std::io::Error::other(message)))?;
        let spec: VmSpec = serde_json::from_str(&self.spec).map_err(|e| corrupt("VM spec", e))?;
        let runtime = self
            .runtime
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| corrupt("VM runtime record", e))?;
        let workspace = self
            .workspace
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| corrupt("VM workspace record", e))?;
        Ok(VmRecord {
            id: self.id,
            name: self.name,
            state,
            image: self.image,
            kernel: self.kernel,
            spec,
            backend: self.backend,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_error: self.last_error,
            runtime,
            workspace,
        })
    }
}

impl Store {
    pub fn insert_vm(&self, vm: &VmRecord) -> Result<()> {
        let spec = serde_json::to_string(&vm.spec).map_err(|e| corrupt("VM spec", e))?;
        let runtime = vm.runtime.as_ref().map(|value| value.to_string());
        let workspace = workspace_json(vm.workspace.as_ref())?;
        self.conn.execute(
            &format!("INSERT INTO vms ({VM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
            params![
                vm.id,
                vm.name,
                vm.state.as_str(),
                vm.image,
                vm.kernel,
                vm.backend,
                spec,
                runtime,
                vm.last_error,
                vm.created_at,
                vm.updated_at,
                workspace
            ],
        )?;
        Ok(())
    }

    /// Replaces the size of VM `id`. Returns false when no VM has that id.
    pub fn set_vm_spec(&self, id: &str, spec: &VmSpec) -> Result<bool> {
        let json = serde_json::to_string(spec).map_err(|e| corrupt("VM spec", e))?;
        Ok(self
            .conn
            .execute("UPDATE vms SET spec = ?2 WHERE id = ?1", params![id, json])?
            == 1)
    }

    /// Records the workspace of VM `id`, or clears it with `None`. It is
    /// written on its own, never by [`Store::update_vm`], so a lifecycle
    /// step that saves an older copy of the record cannot undo it. Returns
    /// false when no VM has that id.
    pub fn set_vm_workspace(&self, id: &str, workspace: Option<&Workspace>) -> Result<bool> {
        let json = workspace_json(workspace)?;
        Ok(self.conn.execute(
            "UPDATE vms SET workspace = ?2 WHERE id = ?1",
            params![id, json],
        )? > 0)
    }

    /// Writes the mutable parts of a VM: state, runtime record, last error, backend.
    pub fn update_vm(&self, vm: &VmRecord) -> Result<()> {
        let runtime = vm.runtime.as_ref().map(|value| value.to_string());
        self.conn.execute(
            "UPDATE vms SET state = ?2, runtime = ?3, last_error = ?4, backend = ?5, updated_at = ?6
             WHERE id = ?1",
            params![
                vm.id,
                vm.state.as_str(),
                runtime,
                vm.last_error,
                vm.backend,
                vm.updated_at
            ],
        )?;
        Ok(())
    }

    pub fn get_vm(&self, name: &str) -> Result<Option<VmRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {VM_COLUMNS} FROM vms WHERE name = ?1"),
                [name],
                VmRow::from_row,
            )
            .optional()?
            .map(VmRow::decode)
            .transpose()
    }

    pub fn list_vms(&self) -> Result<Vec<VmRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {VM_COLUMNS} FROM vms ORDER BY created_at, rowid"
        ))?;
        let rows = stmt
            .query_map([], VmRow::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(VmRow::decode).collect()
    }

    pub fn delete_vm(&self, id: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM vms WHERE id = ?1", [id])? > 0)
    }

    /// Names of the VMs that use the image.
    pub fn vms_using_image(&self, image: &str) -> Result<Vec<String>> {
        self.names_where(
            "SELECT name FROM vms WHERE image_name = ?1 ORDER BY name",
            image,
        )
    }

    /// Names of the VMs that use the kernel.
    pub fn vms_using_kernel(&self, kernel: &str) -> Result<Vec<String>> {
        self.names_where(
            "SELECT name FROM vms WHERE kernel_name = ?1 ORDER BY name",
            kernel,
        )
    }

    fn names_where(&self, sql: &str, value: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(sql)?;
        let names = stmt
            .query_map([value], |row| row.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(names)
    }

    /// Inserts or replaces a kernel record.
    pub fn put_kernel(&self, kernel: &KernelRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO kernels (name, sha256, release, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET sha256 = excluded.sha256, release = excluded.release,
                 source = excluded.source, created_at = excluded.created_at",
            params![kernel.name, kernel.sha256, kernel.release, kernel.source, kernel.created_at],
        )?;
        Ok(())
    }

    pub fn get_kernel(&self, name: &str) -> Result<Option<KernelRecord>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, sha256, release, source, created_at FROM kernels WHERE name = ?1",
                [name],
                kernel_from_row,
            )
            .optional()?)
    }

    pub fn list_kernels(&self) -> Result<Vec<KernelRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT name, sha256, release, source, created_at FROM kernels ORDER BY name",
        )?;
        let kernels = stmt
            .query_map([], kernel_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(kernels)
    }

    pub fn delete_kernel(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM kernels WHERE name = ?1", [name])?
            > 0)
    }

    /// Inserts or replaces an image record.
    pub fn put_image(&self, image: &ImageRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO images (name, sha256, size_bytes, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET sha256 = excluded.sha256, size_bytes = excluded.size_bytes,
                 source = excluded.source, created_at = excluded.created_at",
            params![
                image.name,
                image.sha256,
                image.size_bytes as i64,
                image.source,
                image.created_at
            ],
        )?;
        Ok(())
    }

    pub fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, sha256, size_bytes, source, created_at FROM images WHERE name = ?1",
                [name],
                image_from_row,
            )
            .optional()?)
    }

    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT name, sha256, size_bytes, source, created_at FROM images ORDER BY name",
        )?;
        let images = stmt
            .query_map([], image_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(images)
    }

    pub fn delete_image(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM images WHERE name = ?1", [name])?
            > 0)
    }
}

fn workspace_json(workspace: Option<&Workspace>) -> Result<Option<String>> {
    workspace
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| corrupt("VM workspace record", e))
}

fn kernel_from_row(row: &Row<'_>) -> rusqlite::Result<KernelRecord> {
    Ok(KernelRecord {
        name: row.get(0)?,
        sha256: row.get(1)?,
        release: row.get(2)?,
        source: row.get(3)?,
        created_at: row.get(4)?,
    })
}

fn image_from_row(row: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        name: row.get(0)?,
        sha256: row.get(1)?,
        size_bytes: row.get::<_, i64>(2)? as u64,
        source: row.get(3)?,
        created_at: row.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> KernelRecord {
        KernelRecord {
            name: "k".into(),
            sha256: "aa".into(),
            release: "6.1".into(),
            source: "test".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn image() -> ImageRecord {
        ImageRecord {
            name: "img".into(),
            sha256: "bb".into(),
            size_bytes: 1 << 30,
            source: "test".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn vm(name: &str) -> VmRecord {
        VmRecord {
            id: format!("id-{name}"),
            name: name.into(),
            state: VmState::Creating,
            image: "img".into(),
            kernel: "k".into(),
            spec: VmSpec {
                vcpus: 2,
                memory_mib: 1024,
                disk_size_bytes: 8 << 30,
            },
            backend: "qemu".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            last_error: None,
            runtime: None,
            workspace: None,
        }
    }

    fn store() -> Store {
        let store = Store::open_in_memory().unwrap();
        store.put_kernel(&kernel()).unwrap();
        store.put_image(&image()).unwrap();
        store
    }

    #[test]
    fn vm_round_trip_and_update() {
        let store = store();
        let mut record = vm("dev");
        store.insert_vm(&record).unwrap();
        record.state = VmState::Running;
        record.runtime = Some(serde_json::json!({"pid": 42}));
        store.update_vm(&record).unwrap();
        assert_eq!(store.get_vm("dev").unwrap(), Some(record));
        assert_eq!(store.get_vm("other").unwrap(), None);
    }

    #[test]
    fn vms_list_in_creation_order() {
        let store = store();
        // Same second, names in reverse order: insertion order decides.
        for name in ["zeta", "alpha", "mid"] {
            store.insert_vm(&vm(name)).unwrap();
        }
        let mut later = vm("early-name");
        later.created_at = "2026-01-01T00:00:01Z".into();
        store.insert_vm(&later).unwrap();
        let names: Vec<String> = store
            .list_vms()
            .unwrap()
            .into_iter()
            .map(|vm| vm.name)
            .collect();
        assert_eq!(names, ["zeta", "alpha", "mid", "early-name"]);
    }

    #[test]
    fn vm_spec_changes_alone() {
        let store = store();
        let record = vm("dev");
        store.insert_vm(&record).unwrap();
        let spec = VmSpec {
            vcpus: 4,
            memory_mib: 4096,
            disk_size_bytes: record.spec.disk_size_bytes,
        };
        assert!(store.set_vm_spec(&record.id, &spec).unwrap());
        let stored = store.get_vm("dev").unwrap().unwrap();
        assert_eq!(stored.spec, spec);
        assert_eq!(stored.state, record.state);
        assert!(!store.set_vm_spec("no-such-id", &spec).unwrap());
    }

    #[test]
    fn workspace_is_kept_apart_from_update_vm() {
        let store = store();
        let record = vm("dev");
        store.insert_vm(&record).unwrap();
        let workspace = Workspace {
            guest_path: "/root/repo".into(),
            host_path: "/home/me/proj".into(),
            head: Some("a".repeat(40)),
            branch: Some("main".into()),
            include_untracked: true,
            prepared_at: "2026-01-02T00:00:00Z".into(),
        };
        let recorded = store.set_vm_workspace(&record.id, Some(&workspace));
        assert!(recorded.unwrap());
        // A lifecycle step saving its older copy leaves the workspace alone.
        store.update_vm(&record).unwrap();
        let stored = store.get_vm("dev").unwrap().unwrap();
        assert_eq!(stored.workspace.as_ref(), Some(&workspace));
        let listed = store.list_vms().unwrap();
        assert_eq!(listed[0].workspace.as_ref(), Some(&workspace));

        assert!(store.set_vm_workspace(&record.id, None).unwrap());
        assert_eq!(store.get_vm("dev").unwrap().unwrap().workspace, None);
        assert!(!store.set_vm_workspace("no-such-id", None).unwrap());
    }

    #[test]
    fn database_from_version_one_gains_workspace_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banger.db");
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            crate::migrate::apply(&mut conn, &crate::MIGRATIONS[..1]).unwrap();
            conn.execute(
                "INSERT INTO kernels VALUES ('k', 'aa', '6.1', 'test', '2026-01-01T00:00:00Z')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO images VALUES ('img', 'bb', 1, 'test', '2026-01-01T00:00:00Z')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO vms (id, name, state, image_name, kernel_name, backend, spec, \
                 created_at, updated_at) VALUES ('id-old', 'old', 'stopped', 'img', 'k', 'qemu', \
                 '{\"vcpus\":2,\"memory_mib\":1024,\"disk_size_bytes\":1}', 't', 't')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.applied_migrations().unwrap(), vec![1, 2, 3]);
        let old = store.get_vm("old").unwrap().unwrap();
        assert_eq!(old.state, VmState::Stopped);
        assert_eq!(old.workspace, None);
    }

    #[test]
    fn duplicate_vm_name_is_rejected() {
        let store = store();
        store.insert_vm(&vm("dev")).unwrap();
        let mut twin = vm("dev");
        twin.id = "other-id".into();
        assert!(store.insert_vm(&twin).is_err());
        assert_eq!(store.list_vms().unwrap().len(), 1);
    }

    #[test]
    fn image_in_use_cannot_be_deleted() {
        let store = store();
        store.insert_vm(&vm("dev")).unwrap();
        assert_eq!(store.vms_using_image("img").unwrap(), vec!["dev"]);
        assert!(
            store.delete_image("img").is_err(),
            "foreign key must protect the image"
        );
        assert!(store.delete_vm("id-dev").unwrap());
        assert!(store.delete_image("img").unwrap());
    }

    #[test]
    fn migrations_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banger.db");
        drop(Store::open(&path).unwrap());
        let reopened = Store::open(&path).unwrap();
        assert_eq!(reopened.applied_migrations().unwrap(), vec![1, 2, 3]);
        let mode: String = reopened
            .conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
