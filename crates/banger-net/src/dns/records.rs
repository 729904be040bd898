//! The name-to-address map the DNS server answers from.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, PoisonError, RwLock};

/// VM names and their addresses, shared between the DNS server and the
/// code that starts and stops VMs. Clones share one map. Names are stored
/// and looked up in lowercase, as DNS names compare case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct DnsRecords {
    map: Arc<RwLock<HashMap<String, Ipv4Addr>>>,
}

impl DnsRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the address of `name` and returns the previous one.
    pub fn insert(&self, name: &str, address: Ipv4Addr) -> Option<Ipv4Addr> {
        self.write().insert(name.to_ascii_lowercase(), address)
    }

    /// Removes `name` and returns its address.
    pub fn remove(&self, name: &str) -> Option<Ipv4Addr> {
        self.write().remove(&name.to_ascii_lowercase())
    }

    pub fn get(&self, name: &str) -> Option<Ipv4Addr> {
        self.read().get(&name.to_ascii_lowercase()).copied()
    }

    /// Replaces the whole map, for example with the running VMs after a
    /// daemon restart.
    pub fn replace_all(&self, entries: impl IntoIterator<Item = (String, Ipv4Addr)>) {
        let fresh: HashMap<String, Ipv4Addr> = entries
            .into_iter()
            .map(|(name, address)| (name.to_ascii_lowercase(), address))
            .collect();
        *self.write() = fresh;
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    // A panic while the lock is held cannot leave the map half-updated
    // (every write is a single HashMap call), so a poisoned lock is used as is.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Ipv4Addr>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Ipv4Addr>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_map() {
        let records = DnsRecords::new();
        let server_side = records.clone();
        assert_eq!(records.insert("Web", Ipv4Addr::new(172, 30, 0, 5)), None);
        assert_eq!(server_side.get("web"), Some(Ipv4Addr::new(172, 30, 0, 5)));
        assert_eq!(server_side.get("WEB"), Some(Ipv4Addr::new(172, 30, 0, 5)));
        assert_eq!(records.remove("web"), Some(Ipv4Addr::new(172, 30, 0, 5)));
        assert!(server_side.is_empty());
    }

    #[test]
    fn replace_all_drops_old_names() {
        let records = DnsRecords::new();
        records.insert("old", Ipv4Addr::new(172, 30, 0, 2));
        records.replace_all([("new".to_owned(), Ipv4Addr::new(172, 30, 0, 3))]);
        assert_eq!(records.get("old"), None);
        assert_eq!(records.get("new"), Some(Ipv4Addr::new(172, 30, 0, 3)));
        assert_eq!(records.len(), 1);
    }
}
