//! The start check of the cache table's columns: a table that is not ours (Django's own cache
//! table, a table of the application) would make every operation fail, or, with a key column
//! in a locale's collation, make prefix clears and key listings silently match nothing.

use webcache_core::{Error, Result};

use crate::backend::Inner;
use crate::config::Dialect;
use crate::pool::{with_pool, Pool};
use crate::sql::{self, Column};

impl Inner {
    /// Checks that the table has exactly the columns [`sql::create_table`] makes; the error
    /// says what the table is and what to change. A missing table is an error unless
    /// `missing_ok` (before creating it).
    pub(crate) async fn check_columns(&self, missing_ok: bool) -> Result<()> {
        let statement = sql::describe_columns(self.dialect);
        let arg = sql::describe_columns_arg(self.dialect, &self.table);
        let columns: Vec<Column> = with_pool!(&self.pool, p => {
            sqlx::query_as(statement).bind(arg.as_str()).fetch_all(p).await
        })
        .map_err(|e| self.error("reading the cache table's columns", e))?;
        if columns.is_empty() && missing_ok {
            return Ok(());
        }
        if columns.is_empty() {
            return Err(Error::backend_msg(
                self.name(),
                format!("checking the cache table: {}", self.missing_table()),
            ));
        }
        match column_problem(self.dialect, &self.table, &columns) {
            None => Ok(()),
            Some(problem) => Err(Error::backend_msg(
                self.name(),
                format!(
                    "the table `{}` in {} cannot be a webcache cache table: {problem}",
                    self.table, self.display_url
                ),
            )),
        }
    }
}

/// What is wrong with a table of these columns, in words that say what to change.
fn column_problem(dialect: Dialect, table: &str, columns: &[Column]) -> Option<String> {
    let expected = sql::expected_columns(dialect);
    let matches = columns.len() == expected.len()
        && expected.iter().all(|(name, ty, _)| {
            columns
                .iter()
                .any(|(n, t, _)| n == name && t.eq_ignore_ascii_case(ty))
        });
    if !matches {
        let show = |cols: &mut dyn Iterator<Item = (&str, &str, &str)>| {
            cols.map(|(n, t, c)| {
                if c.is_empty() || c == "default" {
                    format!("{n} {t}")
                } else {
                    format!("{n} {t} COLLATE \"{c}\"")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
        };
        let found = show(
            &mut columns
                .iter()
                .map(|(n, t, c)| (n.as_str(), t.as_str(), c.as_str())),
        );
        let wanted = show(&mut expected.iter().copied());
        let django = ["cache_key", "value", "expires"]
            .iter()
            .all(|name| columns.iter().any(|(n, _, _)| n == name));
        return Some(format!(
            "its columns are ({found}), where webcache needs ({wanted}){}; name another table \
             in the cache URL (`?table=webcache_cache`) and create it with `webcache \
             createcachetable`, or drop this one if nothing else uses it",
            if django {
                " (this looks like the table of Django's `createcachetable`: Django and webcache \
                 store entries differently and cannot share a table)"
            } else {
                ""
            }
        ));
    }
    let wrong_collation = expected.iter().find_map(|(name, _, collation)| {
        let (_, _, found) = columns.iter().find(|(n, _, _)| n == name)?;
        (!same_order(found, collation)).then_some((*name, found.as_str(), *collation))
    });
    wrong_collation.map(|(name, found, wanted)| {
        format!(
            "its `{name}` column uses the collation `{found}`, not \"{wanted}\" (byte order), so \
             prefix clears and key listings would silently match nothing; run `ALTER TABLE \"{table}\" \
             ALTER COLUMN {name} TYPE text COLLATE \"{wanted}\"`, or drop it and run \
             `webcache createcachetable`"
        )
    })
}

/// Whether a column in collation `found` orders text as `wanted` does: the collations that
/// compare bytes (code points, in UTF-8) are all "C" to this backend.
fn same_order(found: &str, wanted: &str) -> bool {
    const BYTE_ORDER: [&str; 4] = ["C", "POSIX", "ucs_basic", "pg_c_utf8"];
    found == wanted || (BYTE_ORDER.contains(&wanted) && BYTE_ORDER.contains(&found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(list: &[(&str, &str, &str)]) -> Vec<Column> {
        list.iter()
            .map(|(n, t, c)| ((*n).to_owned(), (*t).to_owned(), (*c).to_owned()))
            .collect()
    }

    #[test]
    fn our_columns_pass_and_others_say_what_they_are() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let ours: Vec<(&str, &str, &str)> = sql::expected_columns(dialect).to_vec();
            assert_eq!(column_problem(dialect, "t", &cols(&ours)), None);
        }
        let django = cols(&[
            ("cache_key", "character varying(255)", "default"),
            ("value", "text", "default"),
            ("expires", "timestamp with time zone", ""),
        ]);
        let problem = column_problem(Dialect::Postgres, "t", &django).unwrap();
        assert!(
            problem.contains("Django") && problem.contains("?table="),
            "{problem}"
        );
        let other = cols(&[("id", "INTEGER", ""), ("name", "TEXT", "")]);
        let problem = column_problem(Dialect::Sqlite, "t", &other).unwrap();
        assert!(problem.contains("id INTEGER, name TEXT") && !problem.contains("Django"));
        let localized = cols(&[
            ("cache_key", "text", "default"),
            ("value", "bytea", ""),
            ("expires", "bigint", ""),
        ]);
        let problem = column_problem(Dialect::Postgres, "t", &localized).unwrap();
        assert!(
            problem.contains("ALTER TABLE \"t\" ALTER COLUMN cache_key TYPE text COLLATE \"C\"")
                && problem.contains("`default`"),
            "{problem}"
        );
    }
}
