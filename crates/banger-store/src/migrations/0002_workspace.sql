-- The host repository copied into the VM by `banger vm workspace prepare`,
-- as the JSON of banger_model::Workspace; NULL when none was prepared.
ALTER TABLE vms ADD COLUMN workspace TEXT;
