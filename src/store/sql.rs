//! Small helpers for building the shared SQL: placeholder lists and
//! multi-row inserts, chunked under both engines' parameter limits.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

/// Under SQLite's 32,766 and PostgreSQL's 65,535 bound parameters.
const MAX_PARAMS: usize = 30_000;

/// A value bound into a statement.
#[derive(Clone, Debug)]
pub(super) enum Arg {
    Int(i64),
    Blob(Vec<u8>),
    Text(String),
    NullInt,
    NullBlob,
}

pub(super) fn bind<'q>(q: Query<'q, Any, AnyArguments<'q>>, arg: Arg) -> Query<'q, Any, AnyArguments<'q>> {
    match arg {
        Arg::Int(v) => q.bind(v),
        Arg::Blob(v) => q.bind(v),
        Arg::Text(v) => q.bind(v),
        Arg::NullInt => q.bind(None::<i64>),
        Arg::NullBlob => q.bind(None::<Vec<u8>>),
    }
}

/// `$first, $first+1, ...` for `n` parameters.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT INTO {table} ({columns}) VALUES (...), (...) {suffix}` for every
/// row, in as few statements as the parameter limits allow.
pub(super) async fn insert_rows(
    conn: &mut AnyConnection,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Arg>>,
    suffix: &str,
) -> Result<(), sqlx::Error> {
    let per_chunk = (MAX_PARAMS / columns.len()).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Arg>> = rows.by_ref().take(per_chunk).collect();
        let values: Vec<String> = (0..chunk.len())
            .map(|r| format!("({})", placeholders(1 + r * columns.len(), columns.len())))
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {} {suffix}",
            columns.join(", "),
            values.join(", ")
        );
        // Batch sizes vary: do not fill the prepared-statement cache with them.
        let mut q = sqlx::query(&sql).persistent(false);
        for row in chunk {
            debug_assert_eq!(row.len(), columns.len());
            for arg in row {
                q = bind(q, arg);
            }
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(1, 0), "");
    }
}
