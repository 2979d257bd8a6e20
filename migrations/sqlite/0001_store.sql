-- The whole control-plane state: current objects, the event log, the revision counter and the
-- cluster's bootstrap secrets. SQLite has one writer at a time; each write transaction reads and
-- bumps `revision_counter`, so revision order is commit order (see ARCHITECTURE.md, "Store").
CREATE TABLE revision_counter (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    revision  INTEGER NOT NULL,
    compacted INTEGER NOT NULL
);
INSERT INTO revision_counter (id, revision, compacted) VALUES (1, 0, 0);

CREATE TABLE objects (
    resource        TEXT   NOT NULL,
    namespace       TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    value           BLOB  NOT NULL,
    revision        INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    PRIMARY KEY (resource, namespace, name)
);

-- kind: 0 added, 1 modified, 2 deleted. For a modification prev_value is the object before it;
-- for a deletion value is the last state. With prev_revision that lets a list read the state at
-- an older revision, and a selector-filtered watch see objects leave its selection.
CREATE TABLE events (
    revision      INTEGER   PRIMARY KEY,
    resource      TEXT     NOT NULL,
    namespace     TEXT     NOT NULL,
    name          TEXT     NOT NULL,
    kind          INTEGER NOT NULL,
    value         BLOB    NOT NULL,
    prev_value    BLOB,
    prev_revision INTEGER,
    create_revision INTEGER NOT NULL,
    created_at_ms INTEGER   NOT NULL
);

CREATE TABLE bootstrap (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    data BLOB NOT NULL
);
