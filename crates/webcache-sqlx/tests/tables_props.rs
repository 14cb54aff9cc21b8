//! Property tests of the SQL table parse: arbitrary text never panics, a table it names is in
//! the SQL, and generated statements give back exactly the tables they were built from.

use std::collections::BTreeSet;

use proptest::prelude::*;
use webcache_sqlx::{parse_tables, Tables};

/// The SQL as names are compared with it: ASCII-lowercased, doubled quotes collapsed.
fn haystack(sql: &str) -> String {
    sql.to_ascii_lowercase()
        .replace("\"\"", "\"")
        .replace("``", "`")
}

fn check_names_occur(sql: &str) {
    if let Tables::Known { reads, writes, .. } = parse_tables(sql) {
        let hay = haystack(sql);
        for name in reads.iter().chain(&writes) {
            assert!(!name.is_empty(), "an empty name from {sql:?}");
            assert!(hay.contains(name.as_str()), "{name:?} is not in {sql:?}");
        }
    }
}

/// A word the parser reads as SQL, never as a table or schema name when unquoted.
fn is_keyword(n: &str) -> bool {
    matches!(
        n,
        "where"
            | "join"
            | "inner"
            | "left"
            | "right"
            | "full"
            | "cross"
            | "natural"
            | "on"
            | "using"
            | "group"
            | "order"
            | "limit"
            | "offset"
            | "having"
            | "window"
            | "union"
            | "except"
            | "intersect"
            | "set"
            | "values"
            | "returning"
            | "select"
            | "for"
            | "fetch"
            | "default"
            | "into"
            | "from"
            | "when"
            | "then"
            | "lateral"
            | "do"
            | "as"
            | "with"
            | "straight_join"
            | "only"
            | "table"
    )
}

/// A table name as written in SQL (maybe quoted, maybe schema-qualified, any case), with the
/// name the parse must give back.
fn table() -> impl Strategy<Value = (String, String)> {
    let bare = "[a-z_][a-z0-9_]{0,10}".prop_filter("not a keyword", |n| !is_keyword(n));
    (
        bare,
        0..3u8,
        any::<bool>(),
        proptest::option::of("[a-z]{1,6}".prop_filter("not a keyword", |n| !is_keyword(n))),
    )
        .prop_map(|(name, style, upper, schema)| {
            let written = match style {
                0 => name.clone(),
                1 => format!("\"{name}\""),
                _ => format!("`{name}`"),
            };
            let written = if upper {
                written.to_ascii_uppercase()
            } else {
                written
            };
            let written = match schema {
                Some(s) => format!("{s}.{written}"),
                None => written,
            };
            (written, name)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics_and_names_occur(sql in ".{0,200}") {
        check_names_occur(&sql);
    }

    #[test]
    fn sqlish_text_never_panics_and_names_occur(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("SELECT "), Just("FROM "), Just("JOIN "), Just("UPDATE "), Just("INTO "),
                Just("DELETE "), Just("INSERT "), Just("WITH "), Just("AS "), Just("("),
                Just(")"), Just(","), Just("."), Just("\""), Just("'"), Just("`"), Just("["),
                Just("]"), Just("$$"), Just("$1"), Just("--"), Just("/*"), Just("*/"),
                Just("\n"), Just("t "), Just("Public"), Just("ONLY "), Just("TABLE "),
                Just("USING "), Just("TRUNCATE "), Just(";"), Just("E'\\'"), Just("é"),
            ],
            0..30,
        )
    ) {
        check_names_occur(&parts.concat());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_names_occur(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn generated_selects_give_back_their_tables(
        tables in proptest::collection::vec(table(), 1..5),
        joined in proptest::collection::vec(table(), 0..3),
        alias in any::<bool>(),
    ) {
        let from: Vec<String> = tables
            .iter()
            .enumerate()
            .map(|(i, (t, _))| if alias { format!("{t} AS a{i}") } else { t.clone() })
            .collect();
        let mut sql = format!("SELECT x, count(*) FROM {}", from.join(", "));
        for (t, _) in &joined {
            sql.push_str(&format!(" LEFT JOIN {t} ON x = y"));
        }
        sql.push_str(" WHERE x IN (SELECT 1) GROUP BY x ORDER BY 1");
        let expected: BTreeSet<String> =
            tables.iter().chain(&joined).map(|(_, n)| n.clone()).collect();
        match parse_tables(&sql) {
            Tables::Known { reads, writes, locking } => {
                prop_assert_eq!(reads, expected);
                prop_assert!(writes.is_empty());
                prop_assert!(!locking);
            }
            Tables::Unsure(why) => prop_assert!(false, "unsure about {}: {}", sql, why),
        }
    }

    #[test]
    fn generated_writes_give_back_their_table(
        (written, name) in table(),
        (read, read_name) in table(),
        kind in 0..4u8,
    ) {
        let sql = match kind {
            0 => format!("UPDATE {written} SET a = $1 FROM {read} WHERE id = $2"),
            1 => format!("DELETE FROM {written} WHERE id IN (SELECT id FROM {read})"),
            2 => format!("INSERT INTO {written} (a, b) SELECT a, b FROM {read}"),
            _ => format!("INSERT INTO {written} VALUES (?1) ON CONFLICT (a) DO UPDATE SET b = (SELECT b FROM {read})"),
        };
        match parse_tables(&sql) {
            Tables::Known { reads, writes, .. } => {
                prop_assert_eq!(writes, BTreeSet::from([name]));
                prop_assert_eq!(reads, BTreeSet::from([read_name]));
            }
            Tables::Unsure(why) => prop_assert!(false, "unsure about {}: {}", sql, why),
        }
    }
}
