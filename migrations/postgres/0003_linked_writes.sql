-- bosun_write with linked writes (Store::transact): p_linked[i] says that write i commits only
-- together with write i-1 (and that one's linked predecessors). A run of linked writes is
-- written whole or not at all: when one fails its precondition, it gets its outcome and the
-- others o_outcome 4 (not written). Otherwise as in 0002.
DROP FUNCTION bosun_write(SMALLINT[], TEXT[], TEXT[], TEXT[], BYTEA[], BIGINT[], BIGINT, BOOLEAN);

CREATE FUNCTION bosun_write(
    p_kinds SMALLINT[],
    p_resources TEXT[],
    p_namespaces TEXT[],
    p_names TEXT[],
    p_values BYTEA[],
    p_expected BIGINT[],
    p_created_at_ms BIGINT,
    p_unordered BOOLEAN,
    p_linked BOOLEAN[]
) RETURNS TABLE (
    o_idx INT,
    o_outcome SMALLINT,
    o_revision BIGINT,
    o_create_revision BIGINT,
    o_value BYTEA,
    o_actual BIGINT
) LANGUAGE plpgsql AS $$
DECLARE
    first_rev BIGINT;
    next_rev BIGINT;
    rev BIGINT;
    cur_value BYTEA;
    cur_rev BIGINT;
    cur_create BIGINT;
    applied INT := 0;
    run_end INT := 0;
    skip_to INT := 0;
    failed INT;
    fail_outcome SMALLINT;
    fail_actual BIGINT;
BEGIN
    IF NOT p_unordered THEN
        -- Reserve a revision for every write at once (one row update, which also takes the
        -- lock that orders commits); the counter is rewound below if some write fails.
        UPDATE revision_counter rc SET revision = rc.revision + array_length(p_kinds, 1)
         WHERE rc.id = 1
        RETURNING rc.revision - array_length(p_kinds, 1) + 1 INTO first_rev;
        next_rev := first_rev;
    END IF;
    FOR i IN 1 .. COALESCE(array_length(p_kinds, 1), 0) LOOP
        IF i > run_end THEN
            -- A new run: this write and the linked ones after it. Check every precondition of
            -- a run of several before changing anything (its keys are distinct), and write
            -- none of it if one fails.
            run_end := i;
            WHILE run_end < array_length(p_kinds, 1) AND p_linked[run_end + 1] LOOP
                run_end := run_end + 1;
            END LOOP;
            IF run_end > i THEN
                failed := 0;
                FOR m IN i .. run_end LOOP
                    SELECT o.revision INTO cur_rev FROM objects o
                     WHERE o.resource = p_resources[m] AND o.namespace = p_namespaces[m]
                       AND o.name = p_names[m];
                    IF p_kinds[m] = 0 AND FOUND THEN
                        fail_outcome := 1;
                        fail_actual := NULL;
                    ELSIF p_kinds[m] <> 0 AND NOT FOUND THEN
                        fail_outcome := 2;
                        fail_actual := NULL;
                    ELSIF p_kinds[m] <> 0 AND p_expected[m] IS NOT NULL
                          AND p_expected[m] <> cur_rev THEN
                        fail_outcome := 3;
                        fail_actual := cur_rev;
                    ELSE
                        CONTINUE;
                    END IF;
                    failed := m;
                    EXIT;
                END LOOP;
                IF failed > 0 THEN
                    FOR m IN i .. run_end LOOP
                        o_idx := m;
                        o_revision := NULL;
                        o_create_revision := NULL;
                        o_value := NULL;
                        IF m = failed THEN
                            o_outcome := fail_outcome;
                            o_actual := fail_actual;
                        ELSE
                            o_outcome := 4;
                            o_actual := NULL;
                        END IF;
                        RETURN NEXT;
                    END LOOP;
                    skip_to := run_end;
                END IF;
            END IF;
        END IF;
        IF i <= skip_to THEN
            CONTINUE;
        END IF;
        IF p_kinds[i] = 0 THEN
            -- The revision lock serializes writers, so a probe then a plain insert is safe.
            IF p_unordered THEN
                rev := nextval('bosun_unordered_revisions');
            ELSE
                rev := next_rev;
            END IF;
            PERFORM 1 FROM objects o
             WHERE o.resource = p_resources[i] AND o.namespace = p_namespaces[i]
               AND o.name = p_names[i];
            o_idx := i;
            o_value := NULL;
            o_actual := NULL;
            IF NOT FOUND THEN
                INSERT INTO objects (resource, namespace, name, value, revision, create_revision)
                VALUES (p_resources[i], p_namespaces[i], p_names[i], p_values[i], rev, rev);
                INSERT INTO events (revision, resource, namespace, name, kind, value, prev_value,
                                    prev_revision, create_revision, created_at_ms)
                VALUES (rev, p_resources[i], p_namespaces[i], p_names[i], 0, p_values[i], NULL,
                        NULL, rev, p_created_at_ms);
                IF NOT p_unordered THEN
                    next_rev := next_rev + 1;
                END IF;
                applied := applied + 1;
                o_outcome := 0;
                o_revision := rev;
                o_create_revision := rev;
            ELSE
                o_outcome := 1;
                o_revision := NULL;
                o_create_revision := NULL;
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT o.value, o.revision, o.create_revision INTO cur_value, cur_rev, cur_create
          FROM objects o
         WHERE o.resource = p_resources[i] AND o.namespace = p_namespaces[i] AND o.name = p_names[i];
        o_idx := i;
        o_value := NULL;
        o_actual := cur_rev;
        o_revision := NULL;
        o_create_revision := NULL;
        IF NOT FOUND THEN
            o_outcome := 2;
        ELSIF p_expected[i] IS NOT NULL AND p_expected[i] <> cur_rev THEN
            o_outcome := 3;
        ELSE
            IF p_unordered THEN
                rev := nextval('bosun_unordered_revisions');
            ELSE
                rev := next_rev;
                next_rev := next_rev + 1;
            END IF;
            applied := applied + 1;
            o_outcome := 0;
            o_revision := rev;
            IF p_kinds[i] = 1 THEN
                o_create_revision := cur_create;
                INSERT INTO events (revision, resource, namespace, name, kind, value, prev_value,
                                    prev_revision, create_revision, created_at_ms)
                VALUES (rev, p_resources[i], p_namespaces[i], p_names[i], 1, p_values[i], cur_value,
                        cur_rev, cur_create, p_created_at_ms);
                UPDATE objects o SET value = p_values[i], revision = rev
                 WHERE o.resource = p_resources[i] AND o.namespace = p_namespaces[i]
                   AND o.name = p_names[i];
            ELSE
                o_create_revision := cur_create;
                o_value := cur_value;
                INSERT INTO events (revision, resource, namespace, name, kind, value, prev_value,
                                    prev_revision, create_revision, created_at_ms)
                VALUES (rev, p_resources[i], p_namespaces[i], p_names[i], 2, cur_value, NULL,
                        cur_rev, cur_create, p_created_at_ms);
                DELETE FROM objects o
                 WHERE o.resource = p_resources[i] AND o.namespace = p_namespaces[i]
                   AND o.name = p_names[i];
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
    IF NOT p_unordered AND applied < array_length(p_kinds, 1) THEN
        UPDATE revision_counter SET revision = next_rev - 1 WHERE id = 1;
    END IF;
    IF applied > 0 THEN
        PERFORM pg_notify('bosun_events', '');
    END IF;
END;
$$;
