//! Row mapping shared by the backends: both select objects and events with the same columns in
//! the same order, so one function reads each, whatever the database.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{EventType, Key, RawEvent, Stored};

/// `(namespace, name, value, revision, create_revision)` of `resource`.
pub(crate) fn stored<'r, R>(resource: &str, row: &'r R) -> Stored
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Stored {
        key: Key::new(resource, row.get::<String, _>(0), row.get::<String, _>(1)),
        value: row.get(2),
        revision: row.get(3),
        create_revision: row.get(4),
    }
}

/// `(revision, resource, namespace, name, kind, value, prev_value, create_revision)`, with
/// `kind` as a 64-bit integer.
pub(crate) fn event<'r, R>(row: &'r R) -> RawEvent
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    RawEvent {
        revision: row.get(0),
        key: Key::new(
            row.get::<String, _>(1),
            row.get::<String, _>(2),
            row.get::<String, _>(3),
        ),
        kind: EventType::from_code(row.get(4)),
        value: row.get(5),
        prev_value: row.get(6),
        create_revision: row.get(7),
    }
}
