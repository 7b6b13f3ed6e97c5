DROP TABLE tally_records;
DROP TABLE scheduled_tenants;
DELETE FROM api_keys WHERE kind = 'manage';
ALTER TABLE api_keys DROP CONSTRAINT api_keys_kind_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_kind_check CHECK (kind IN ('read', 'write'));
