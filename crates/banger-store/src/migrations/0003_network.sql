-- Guest addresses and tap devices, one per VM. UNIQUE on both columns lets
-- SQLite itself reject a second VM with the same address or tap.
CREATE TABLE leases (
    vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
    ip    TEXT UNIQUE NOT NULL,
    tap   TEXT UNIQUE NOT NULL
);

-- Whether the VM's traffic is masqueraded out of the host's uplink
-- (`vm create --nat`); 0 or 1.
ALTER TABLE vms ADD COLUMN nat INTEGER NOT NULL DEFAULT 0;
