-- The whole control-plane state: current objects, the event log, the revision counter and the
-- cluster's bootstrap secrets. Revisions are assigned by locking `revision_counter` inside each
-- write transaction, so revision order is commit order (see ARCHITECTURE.md, "Store").
CREATE TABLE revision_counter (
    id        SMALLINT PRIMARY KEY CHECK (id = 1),
    revision  BIGINT NOT NULL,
    compacted BIGINT NOT NULL
);
INSERT INTO revision_counter (id, revision, compacted) VALUES (1, 0, 0);

CREATE TABLE objects (
    resource        TEXT   NOT NULL,
    namespace       TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    value           BYTEA  NOT NULL,
    revision        BIGINT NOT NULL,
    create_revision BIGINT NOT NULL,
    PRIMARY KEY (resource, namespace, name)
);

-- kind: 0 added, 1 modified, 2 deleted. For a modification prev_value is the object before it;
-- for a deletion value is the last state. With prev_revision that lets a list read the state at
-- an older revision, and a selector-filtered watch see objects leave its selection.
CREATE TABLE events (
    revision      BIGINT   PRIMARY KEY,
    resource      TEXT     NOT NULL,
    namespace     TEXT     NOT NULL,
    name          TEXT     NOT NULL,
    kind          SMALLINT NOT NULL,
    value         BYTEA    NOT NULL,
    prev_value    BYTEA,
    prev_revision BIGINT,
    create_revision BIGINT NOT NULL,
    created_at_ms BIGINT   NOT NULL
);

CREATE TABLE bootstrap (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    data BYTEA NOT NULL
);
