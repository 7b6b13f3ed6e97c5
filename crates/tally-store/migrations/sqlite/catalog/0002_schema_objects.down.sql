DROP TABLE schema_objects;
