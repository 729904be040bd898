//! Guest address leases and the per-VM NAT flag.
//!
//! A lease ties a VM to one IPv4 address and one tap device name. Both are
//! UNIQUE in the table, and allocation runs in one `BEGIN IMMEDIATE`
//! transaction, so two daemons or two requests never hand out the same
//! address or tap. A VM's lease goes away with its row (`ON DELETE CASCADE`).

use std::net::Ipv4Addr;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::{Result, Store, StoreError};

/// One VM's address and tap device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub vm_id: String,
    pub ip: Ipv4Addr,
    pub tap: String,
}

fn parse_ip(text: String) -> Result<Ipv4Addr> {
    text.parse().map_err(|source| StoreError::Corrupt {
        what: "lease address",
        source: Box::new(source),
    })
}

impl Store {
    /// Leases the lowest free address in `first..=last` and the tap `tap` to
    /// VM `vm_id`, in one transaction. Returns the VM's existing lease when it
    /// has one, and `None` when every address in the range is taken.
    pub fn allocate_lease(
        &mut self,
        vm_id: &str,
        tap: &str,
        first: Ipv4Addr,
        last: Ipv4Addr,
    ) -> Result<Option<Lease>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<(String, String)> = tx
            .query_row(
                "SELECT ip, tap FROM leases WHERE vm_id = ?1",
                params![vm_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((ip, tap)) = existing {
            return Ok(Some(Lease {
                vm_id: vm_id.to_owned(),
                ip: parse_ip(ip)?,
                tap,
            }));
        }

        let taken: std::collections::HashSet<u32> = {
            let mut stmt = tx.prepare("SELECT ip FROM leases")?;
            let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
            let mut taken = std::collections::HashSet::new();
            for ip in rows {
                taken.insert(u32::from(parse_ip(ip?)?));
            }
            taken
        };
        let Some(free) = (u32::from(first)..=u32::from(last)).find(|ip| !taken.contains(ip)) else {
            return Ok(None);
        };
        let ip = Ipv4Addr::from(free);
        tx.execute(
            "INSERT INTO leases (vm_id, ip, tap) VALUES (?1, ?2, ?3)",
            params![vm_id, ip.to_string(), tap],
        )?;
        tx.commit()?;
        Ok(Some(Lease {
            vm_id: vm_id.to_owned(),
            ip,
            tap: tap.to_owned(),
        }))
    }

    pub fn get_lease(&self, vm_id: &str) -> Result<Option<Lease>> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT ip, tap FROM leases WHERE vm_id = ?1",
                params![vm_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        row.map(|(ip, tap)| {
            Ok(Lease {
                vm_id: vm_id.to_owned(),
                ip: parse_ip(ip)?,
                tap,
            })
        })
        .transpose()
    }

    /// Every lease, ordered by VM id.
    pub fn list_leases(&self) -> Result<Vec<Lease>> {
        let mut stmt = self
            .conn
            .prepare("SELECT vm_id, ip, tap FROM leases ORDER BY vm_id")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut leases = Vec::new();
        for row in rows {
            let (vm_id, ip, tap) = row?;
            leases.push(Lease {
                vm_id,
                ip: parse_ip(ip)?,
                tap,
            });
        }
        Ok(leases)
    }

    /// Removes VM `vm_id`'s lease. Returns false when it had none.
    pub fn release_lease(&self, vm_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM leases WHERE vm_id = ?1", params![vm_id])?
            > 0)
    }

    /// Records whether VM `id` gets NAT. Returns false when no VM has that id.
    pub fn set_vm_nat(&self, id: &str, nat: bool) -> Result<bool> {
        Ok(self
            .conn
            .execute("UPDATE vms SET nat = ?2 WHERE id = ?1", params![id, nat])?
            > 0)
    }

    /// Whether VM `id` gets NAT; false for an unknown id.
    pub fn vm_nat(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT nat FROM vms WHERE id = ?1", params![id], |row| {
                row.get::<_, bool>(0)
            })
            .optional()?
            .unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FIRST: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
    const LAST: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 4);

    fn open(path: &Path) -> Store {
        let store = Store::open(path).unwrap();
        store
            .conn
            .execute_batch(
                "INSERT OR IGNORE INTO kernels VALUES ('k', 'aa', '6.1', 't', 't');
                 INSERT OR IGNORE INTO images VALUES ('img', 'bb', 1, 't', 't');",
            )
            .unwrap();
        store
    }

    fn add_vm(store: &Store, id: &str) {
        store
            .conn
            .execute(
                "INSERT INTO vms (id, name, state, image_name, kernel_name, backend, spec, \
                 created_at, updated_at) VALUES (?1, ?1, 'creating', 'img', 'k', 'qemu', '{}', 't', 't')",
                params![id],
            )
            .unwrap();
    }

    #[test]
    fn lease_takes_lowest_free_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir.path().join("db"));
        for id in ["a", "b"] {
            add_vm(&store, id);
        }
        let a = store
            .allocate_lease("a", "bgta", FIRST, LAST)
            .unwrap()
            .unwrap();
        let b = store
            .allocate_lease("b", "bgtb", FIRST, LAST)
            .unwrap()
            .unwrap();
        assert_eq!(a.ip, FIRST);
        assert_eq!(b.ip, Ipv4Addr::new(172, 30, 0, 3));
        assert!(store.release_lease("a").unwrap());
        add_vm(&store, "c");
        let c = store
            .allocate_lease("c", "bgtc", FIRST, LAST)
            .unwrap()
            .unwrap();
        assert_eq!(c.ip, FIRST, "a released address is reused");
    }

    #[test]
    fn lease_is_stable_per_vm() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir.path().join("db"));
        add_vm(&store, "a");
        let first = store.allocate_lease("a", "bgta", FIRST, LAST).unwrap();
        let again = store.allocate_lease("a", "bgta", FIRST, LAST).unwrap();
        assert_eq!(first, again);
        assert_eq!(store.get_lease("a").unwrap(), first);
        assert_eq!(store.list_leases().unwrap().len(), 1);
    }

    #[test]
    fn full_pool_returns_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir.path().join("db"));
        for id in ["a", "b", "c", "d"] {
            add_vm(&store, id);
        }
        for id in ["a", "b", "c"] {
            let tap = format!("bgt{id}");
            assert!(
                store
                    .allocate_lease(id, &tap, FIRST, LAST)
                    .unwrap()
                    .is_some()
            );
        }
        assert_eq!(
            store.allocate_lease("d", "bgtd", FIRST, LAST).unwrap(),
            None
        );
    }

    #[test]
    fn duplicate_tap_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir.path().join("db"));
        add_vm(&store, "a");
        add_vm(&store, "b");
        store.allocate_lease("a", "bgtx", FIRST, LAST).unwrap();
        assert!(store.allocate_lease("b", "bgtx", FIRST, LAST).is_err());
        assert_eq!(store.get_lease("b").unwrap(), None);
    }

    #[test]
    fn lease_goes_with_its_vm() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir.path().join("db"));
        add_vm(&store, "a");
        store.allocate_lease("a", "bgta", FIRST, LAST).unwrap();
        assert!(store.delete_vm("a").unwrap());
        assert!(store.list_leases().unwrap().is_empty());
    }

    #[test]
    fn nat_flag_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("db"));
        add_vm(&store, "a");
        assert!(!store.vm_nat("a").unwrap());
        assert!(store.set_vm_nat("a", true).unwrap());
        assert!(store.vm_nat("a").unwrap());
        assert!(!store.set_vm_nat("missing", true).unwrap());
    }

    /// Two connections allocating at the same time, as two daemons or two
    /// requests would, never share an address or a tap.
    #[test]
    fn concurrent_allocations_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let setup = open(&path);
        let ids: Vec<String> = (0..16).map(|i| format!("vm{i:02}")).collect();
        for id in &ids {
            add_vm(&setup, id);
        }
        drop(setup);
        let first = Ipv4Addr::new(172, 30, 0, 2);
        let last = Ipv4Addr::new(172, 30, 0, 254);
        let handles: Vec<_> = ids
            .chunks(8)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut store = Store::open(&path).unwrap();
                    chunk
                        .iter()
                        .map(|id| {
                            let tap = format!("bgt{id}");
                            store
                                .allocate_lease(id, &tap, first, last)
                                .unwrap()
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let leases: Vec<Lease> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let ips: std::collections::HashSet<_> = leases.iter().map(|l| l.ip).collect();
        assert_eq!(ips.len(), ids.len());
    }
}
