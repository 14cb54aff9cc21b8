//! Every SQL statement of the backend, built once per table. This is the one place where
//! SQLite and PostgreSQL differ: column types, the key collation, and how the ASCII digits of an
//! integer entry are read and written inside an `UPDATE`. Everything else is the same text for
//! both (`$N` placeholders, `ON CONFLICT ... DO UPDATE`, `RETURNING`, `NULLS LAST`).
//!
//! Table names are spliced into the text (identifiers cannot be bound), which is safe because
//! [`validate_table`](crate::config::validate_table) admits only letters, digits and
//! underscores; every value is a bound parameter.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::Dialect;

/// `expires` holds Unix time in milliseconds; NULL means never. `$N` is the current time.
fn live(n: usize) -> String {
    format!("(expires IS NULL OR expires > ${n})")
}

/// The table's DDL: the statements `create_cache_table` runs (in one transaction), in order.
pub(crate) fn create_table(dialect: Dialect, table: &str) -> Vec<String> {
    let (key_type, value_type, expires_type) = match dialect {
        Dialect::Sqlite => ("TEXT", "BLOB", "INTEGER"),
        // Byte order ("C") makes key ranges (prefix clears, scans) mean the same as in SQLite
        // whatever the database's locale, and lets them use the primary key's index.
        Dialect::Postgres => ("TEXT COLLATE \"C\"", "BYTEA", "BIGINT"),
    };
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS \"{table}\" (\n    \
             cache_key {key_type} NOT NULL PRIMARY KEY,\n    \
             value {value_type} NOT NULL,\n    \
             expires {expires_type}\n)"
        ),
        format!("CREATE INDEX IF NOT EXISTS \"{table}_expires_idx\" ON \"{table}\" (expires)"),
    ]
}

/// A column of a cache table as [`describe_columns`] reports it: name, type, and (PostgreSQL)
/// collation.
pub(crate) type Column = (String, String, String);

/// The columns [`create_table`] makes, as [`describe_columns`] reports them. A table with other
/// columns (such as Django's own cache table) is refused at start.
pub(crate) fn expected_columns(
    dialect: Dialect,
) -> [(&'static str, &'static str, &'static str); 3] {
    match dialect {
        // SQLite reports declared types as written, and no collation.
        Dialect::Sqlite => [
            ("cache_key", "TEXT", ""),
            ("value", "BLOB", ""),
            ("expires", "INTEGER", ""),
        ],
        Dialect::Postgres => [
            ("cache_key", "text", "C"),
            ("value", "bytea", ""),
            ("expires", "bigint", ""),
        ],
    }
}

/// `$1` the table (as [`describe_columns_arg`] gives it) → name, type, collation of each column,
/// none when there is no such table.
pub(crate) fn describe_columns(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "SELECT name, type, '' FROM pragma_table_info($1) ORDER BY cid",
        Dialect::Postgres => {
            // A column in the database's default collation reports the database's.
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
             COALESCE(CASE WHEN co.collname = 'default' THEN \
             (SELECT datcollate::text FROM pg_database WHERE datname = current_database()) \
             ELSE co.collname::text END, '') \
             FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum"
        }
    }
}

/// The table name as [`describe_columns`] takes it: PostgreSQL's `to_regclass` parses an
/// identifier (quoted, so that case is kept, as in every statement here).
pub(crate) fn describe_columns_arg(dialect: Dialect, table: &str) -> String {
    match dialect {
        Dialect::Sqlite => table.to_owned(),
        Dialect::Postgres => format!("\"{table}\""),
    }
}

/// The statement that opens the DDL transaction, and one to run first inside it.
pub(crate) fn ddl_transaction(dialect: Dialect, table: &str) -> (&'static str, Option<String>) {
    match dialect {
        // IMMEDIATE takes the write lock up front, waiting for it (busy timeout) instead of
        // failing when another process creates the table at the same moment.
        Dialect::Sqlite => ("BEGIN IMMEDIATE", None),
        // Concurrent `CREATE TABLE IF NOT EXISTS` can still collide in PostgreSQL's catalog;
        // a transaction-scoped advisory lock on the table name serialises them.
        Dialect::Postgres => (
            "BEGIN",
            Some(format!(
                "SELECT pg_advisory_xact_lock(hashtext('webcache createcachetable {table}'))"
            )),
        ),
    }
}

/// The integer an entry's bytes hold, as SQL (NULL when they are not the ASCII decimal form of
/// an `i64`, exactly as `webcache_core::backend::entry::parse_integer` reads them).
fn integer_of(dialect: Dialect, v: &str) -> String {
    match dialect {
        Dialect::Sqlite => {
            let t = format!("CAST({v} AS TEXT)");
            let negative = format!("substr({t}, 1, 1) = '-'");
            let digits = format!("(CASE WHEN {negative} THEN substr({t}, 2) ELSE {t} END)");
            // The text must be as long as the bytes (no NUL, ASCII only), all digits after an
            // optional minus sign, no leading zero (nor `-0`), at most 19 digits, and within i64 (compared as text, which
            // is numeric order for 19-digit strings).
            format!(
                "(CASE WHEN length({v}) BETWEEN 1 AND 20 AND length({t}) = length({v}) \
                 AND {digits} <> '' AND {digits} NOT GLOB '*[^0-9]*' AND length({digits}) <= 19 \
                 AND (substr({digits}, 1, 1) <> '0' OR ({digits} = '0' AND NOT {negative})) \
                 AND (length({digits}) < 19 OR {digits} <= (CASE WHEN {negative} \
                 THEN '9223372036854775808' ELSE '9223372036854775807' END)) \
                 THEN CAST({t} AS INTEGER) END)"
            )
        }
        Dialect::Postgres => {
            // `encode(.., 'escape')` never fails (unlike a UTF-8 conversion) and leaves digits
            // alone; the canonical form only (no leading zero, no `-0`); NUMERIC holds any 19
            // digits, the caller's range check does the rest.
            let t = format!("encode({v}, 'escape')");
            format!("(CASE WHEN {t} ~ '^(0|-?[1-9][0-9]{{0,18}})$' THEN CAST({t} AS NUMERIC) END)")
        }
    }
}

/// An integer SQL expression written back as its ASCII digits.
fn digits_of(dialect: Dialect, n: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("CAST(CAST({n} AS TEXT) AS BLOB)"),
        Dialect::Postgres => format!("convert_to(CAST({n} AS TEXT), 'UTF8')"),
    }
}

/// `$first, $first+1, ...`, `count` of them.
fn placeholders(first: usize, count: usize) -> String {
    let mut out = String::with_capacity(count * 6);
    for i in first..first + count {
        if i > first {
            out.push_str(", ");
        }
        let _ = write!(out, "${i}");
    }
    out
}

/// The fixed statements of one table (shared text: the drivers cache them as prepared
/// statements per connection).
#[derive(Debug)]
pub(crate) struct Statements {
    table: String,
    /// `$1` key → value, expires.
    pub(crate) get: Arc<str>,
    /// `$1` key → expires.
    pub(crate) expires: Arc<str>,
    /// `$1` key, `$2` now: removes the key only if it is (still) expired.
    pub(crate) delete_if_expired: Arc<str>,
    /// `$1` key, `$2` value, `$3` expires.
    pub(crate) set: Arc<str>,
    /// `$1` key, `$2` value, `$3` expires, `$4` now: affects a row only if the key is absent
    /// or expired.
    pub(crate) add: Arc<str>,
    /// `$1` key, `$2` value, `$3` expires, `$4` now: affects a row only if the key is present
    /// and live (one statement, so a concurrent `delete` is never undone).
    pub(crate) set_if_present: Arc<str>,
    /// `$1` key, `$2` expires, `$3` now.
    pub(crate) touch: Arc<str>,
    /// `$1` key → expires of the removed row.
    pub(crate) delete: Arc<str>,
    /// `$1` key, `$2` delta, `$3` now, `$4`..`$5` the range the current integer must be in
    /// for the sum to fit an i64 → the new value.
    pub(crate) incr: Arc<str>,
    /// Removes everything.
    pub(crate) clear_all: Arc<str>,
    /// `$1` first key of the range (inclusive).
    pub(crate) clear_from: Arc<str>,
    /// `$1` first key (inclusive), `$2` end (exclusive).
    pub(crate) clear_range: Arc<str>,
    /// → number of rows.
    pub(crate) count: Arc<str>,
    /// `$1` now: removes every expired row.
    pub(crate) delete_expired: Arc<str>,
    /// `$1` key to keep, `$2` how many: removes the rows that expire soonest (never-expiring
    /// rows last).
    pub(crate) cull: Arc<str>,
    /// `$1` key to keep: removes every other row (`cull_frequency = 0`).
    pub(crate) cull_all: Arc<str>,
    /// `$1` now → rows, live rows, bytes of live keys and values.
    pub(crate) stats: Arc<str>,
}

impl Statements {
    pub(crate) fn new(dialect: Dialect, table: &str) -> Self {
        let t = format!("\"{table}\"");
        let upsert = format!(
            "INSERT INTO {t} (cache_key, value, expires) VALUES ($1, $2, $3) \
             ON CONFLICT (cache_key) DO UPDATE SET value = excluded.value, expires = excluded.expires"
        );
        let n = integer_of(dialect, "value");
        let s = |text: String| -> Arc<str> { text.into() };
        Statements {
            table: table.to_owned(),
            get: s(format!("SELECT value, expires FROM {t} WHERE cache_key = $1")),
            expires: s(format!("SELECT expires FROM {t} WHERE cache_key = $1")),
            delete_if_expired: s(format!(
                "DELETE FROM {t} WHERE cache_key = $1 AND expires <= $2"
            )),
            add: s(format!(
                "{upsert} WHERE {t}.expires IS NOT NULL AND {t}.expires <= $4"
            )),
            set: s(upsert),
            set_if_present: s(format!(
                "UPDATE {t} SET value = $2, expires = $3 WHERE cache_key = $1 AND {}",
                live(4)
            )),
            touch: s(format!(
                "UPDATE {t} SET expires = $2 WHERE cache_key = $1 AND {}",
                live(3)
            )),
            delete: s(format!("DELETE FROM {t} WHERE cache_key = $1 RETURNING expires")),
            incr: s(format!(
                "UPDATE {t} SET value = {} WHERE cache_key = $1 AND {} AND {n} BETWEEN $4 AND $5 \
                 RETURNING value",
                digits_of(dialect, &format!("{n} + $2")),
                live(3)
            )),
            clear_all: s(format!("DELETE FROM {t}")),
            clear_from: s(format!("DELETE FROM {t} WHERE cache_key >= $1")),
            clear_range: s(format!(
                "DELETE FROM {t} WHERE cache_key >= $1 AND cache_key < $2"
            )),
            count: s(format!("SELECT COUNT(*) FROM {t}")),
            delete_expired: s(format!("DELETE FROM {t} WHERE expires <= $1")),
            cull: s(format!(
                "DELETE FROM {t} WHERE cache_key IN (SELECT cache_key FROM {t} \
                 WHERE cache_key <> $1 ORDER BY expires ASC NULLS LAST LIMIT $2)"
            )),
            cull_all: s(format!("DELETE FROM {t} WHERE cache_key <> $1")),
            stats: s(format!(
                "SELECT COUNT(*), \
                 COALESCE(SUM(CASE WHEN {live} THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN {live} THEN octet_length(cache_key) + octet_length(value) ELSE 0 END), 0) \
                 FROM {t}",
                live = live(1)
            )),
        }
    }

    /// `$1..$n` keys → key, value, expires of the rows present.
    pub(crate) fn get_many(&self, keys: usize) -> String {
        format!(
            "SELECT cache_key, value, expires FROM \"{}\" WHERE cache_key IN ({})",
            self.table,
            placeholders(1, keys)
        )
    }

    /// `$1..$n` keys → expires of each removed row.
    pub(crate) fn delete_many(&self, keys: usize) -> String {
        format!(
            "DELETE FROM \"{}\" WHERE cache_key IN ({}) RETURNING expires",
            self.table,
            placeholders(1, keys)
        )
    }

    /// `$1` now, `$2..` keys: removes those of the keys that are (still) expired.
    pub(crate) fn delete_many_if_expired(&self, keys: usize) -> String {
        format!(
            "DELETE FROM \"{}\" WHERE expires <= $1 AND cache_key IN ({})",
            self.table,
            placeholders(2, keys)
        )
    }

    /// `$1` expires, then key and value for each of `rows` rows: one upsert for all.
    pub(crate) fn set_many(&self, rows: usize) -> String {
        let mut sql = format!(
            "INSERT INTO \"{}\" (cache_key, value, expires) VALUES ",
            self.table
        );
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "(${}, ${}, $1)", 2 + 2 * row, 3 + 2 * row);
        }
        sql.push_str(
            " ON CONFLICT (cache_key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
        );
        sql
    }

    /// One page of live keys in key order: `$1` lower bound (inclusive on the first page,
    /// exclusive after), `$2` now, `$3` page size, `$4` end of the key range when bounded.
    pub(crate) fn scan_page(&self, first_page: bool, bounded: bool) -> String {
        format!(
            "SELECT cache_key FROM \"{}\" WHERE cache_key {} $1{} AND {} ORDER BY cache_key LIMIT $3",
            self.table,
            if first_page { ">=" } else { ">" },
            if bounded { " AND cache_key < $4" } else { "" },
            live(2)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_differs_only_in_types() {
        let sqlite = create_table(Dialect::Sqlite, "c");
        let pg = create_table(Dialect::Postgres, "c");
        assert_eq!(sqlite.len(), 2);
        assert!(sqlite[0].contains("value BLOB NOT NULL") && sqlite[0].contains("expires INTEGER"));
        assert!(pg[0].contains("value BYTEA NOT NULL") && pg[0].contains("COLLATE \"C\""));
        assert_eq!(sqlite[1], pg[1]);
        assert!(sqlite.iter().all(|s| s.contains("IF NOT EXISTS")));
    }

    #[test]
    fn variable_statements() {
        let s = Statements::new(Dialect::Sqlite, "c");
        assert_eq!(
            s.get_many(3),
            "SELECT cache_key, value, expires FROM \"c\" WHERE cache_key IN ($1, $2, $3)"
        );
        assert!(s
            .set_many(2)
            .contains("VALUES ($2, $3, $1), ($4, $5, $1) ON CONFLICT"));
        assert!(s.delete_many_if_expired(2).ends_with("IN ($2, $3)"));
        assert!(s
            .scan_page(false, true)
            .contains("cache_key > $1 AND cache_key < $4"));
    }
}
