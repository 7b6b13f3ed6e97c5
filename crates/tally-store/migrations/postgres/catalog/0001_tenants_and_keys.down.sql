DROP TABLE schema_objects;
DROP TABLE api_keys;
DROP TABLE tenants;
