-- The applied schema: every stream and view definition, in creation order.
CREATE TABLE schema_objects (
    position   INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    definition TEXT NOT NULL
);
