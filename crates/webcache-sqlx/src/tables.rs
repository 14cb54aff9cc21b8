//! The light SQL parse that finds the tables a statement reads and writes.
//!
//! It is deliberately small: a tokenizer that knows comments, string literals (including
//! PostgreSQL's `E'..'` and dollar quotes) and quoted identifiers (`".."`, `` `..` ``, `[..]`),
//! and a walk that takes the table names after `FROM`, `JOIN`, `USING`, `INTO`, `UPDATE` and
//! `TRUNCATE`. Whatever it does not fully understand makes the answer [`Tables::Unsure`]:
//! the caller names the tables, or the query is not cached. Reading a name too many is
//! harmless (one more tag); missing one would leave stale rows, so every doubt counts.

use std::collections::BTreeSet;

/// What the parse found in one SQL statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tables {
    /// The statement was understood.
    Known {
        /// The tables it reads, lowercased and without their schema (see [`table_tag`](crate::table_tag)).
        reads: BTreeSet<String>,
        /// The tables it writes (`INSERT`, `UPDATE`, `DELETE`, `TRUNCATE`, `MERGE`, `SELECT INTO`).
        writes: BTreeSet<String>,
        /// A locking read (`FOR UPDATE`, `FOR SHARE`): run, never cached.
        locking: bool,
    },
    /// Something the parse cannot vouch for (an unknown statement, a table function, an
    /// unterminated literal, several statements): the caller must name the tables.
    Unsure(&'static str),
}

/// Statements whose first word the parse knows.
const STATEMENTS: &[&str] = &[
    "select", "with", "values", "insert", "replace", "update", "delete", "truncate", "merge",
    "table",
];

/// Words that end a `FROM` item list (or cannot be a table name).
const CLAUSE_WORDS: &[&str] = &[
    "where",
    "join",
    "inner",
    "left",
    "right",
    "full",
    "cross",
    "natural",
    "on",
    "using",
    "group",
    "order",
    "limit",
    "offset",
    "having",
    "window",
    "union",
    "except",
    "intersect",
    "set",
    "values",
    "returning",
    "select",
    "for",
    "fetch",
    "default",
    "into",
    "from",
    "when",
    "then",
    "lateral",
    "do",
    "as",
    "with",
    "straight_join",
];

/// Words after which no more `FROM` items follow. A list goes on past `JOIN .. ON ..`
/// (`FROM a JOIN b ON .., c` reads `c` too).
const LIST_END: &[&str] = &[
    "where",
    "group",
    "order",
    "limit",
    "offset",
    "having",
    "window",
    "union",
    "except",
    "intersect",
    "set",
    "values",
    "returning",
    "for",
    "fetch",
    "into",
    "select",
    "default",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word, lowercased (ASCII).
    Word(String),
    /// A quoted identifier, unescaped and lowercased (ASCII).
    Quoted(String),
    /// A string literal, number, parameter or operator: nothing the walk looks into.
    Other,
    Dot,
    Comma,
    Open,
    Close,
    Semicolon,
}

/// Splits `sql` into tokens; `None` when a literal, comment or quoted name is unterminated.
fn tokenize(sql: &str) -> Option<Vec<Token>> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                // PostgreSQL nests block comments; SQLite does not, and counting nesting
                // there could only hide text, never invent a table: both end at the same
                // place for comments that do not contain `/*`.
                let mut depth = 0usize;
                loop {
                    if i + 1 >= bytes.len() {
                        return None;
                    }
                    if bytes[i] == b'/' && bytes[i + 1] == b'*' {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                // Different comment rules between databases: a nested comment is a doubt.
                if depth != 0 {
                    return None;
                }
            }
            b'\'' => {
                i = skip_quoted(bytes, i, b'\'', false)?;
                tokens.push(Token::Other);
            }
            b'e' | b'E' if bytes.get(i + 1) == Some(&b'\'') => {
                i = skip_quoted(bytes, i + 1, b'\'', true)?;
                tokens.push(Token::Other);
            }
            b'"' | b'`' => {
                let end = skip_quoted(bytes, i, c, false)?;
                let inner = &sql[i + 1..end - 1];
                let quote = char::from(c).to_string();
                tokens.push(Token::Quoted(
                    inner.replace(&quote.repeat(2), &quote).to_ascii_lowercase(),
                ));
                i = end;
            }
            b'[' => {
                let end = i + 1 + bytes[i + 1..].iter().position(|&b| b == b']')?;
                tokens.push(Token::Quoted(sql[i + 1..end].to_ascii_lowercase()));
                i = end + 1;
            }
            b'$' => {
                // `$1` (a parameter) or a dollar-quoted string `$tag$ .. $tag$`.
                let mut j = i + 1;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                if bytes.get(j) == Some(&b'$') && !bytes[i + 1..j].iter().any(u8::is_ascii_digit) {
                    let tag = &sql[i..=j];
                    let rest = &sql[j + 1..];
                    let close = rest.find(tag)?;
                    i = j + 1 + close + tag.len();
                } else {
                    i = j;
                }
                tokens.push(Token::Other);
            }
            b'.' => {
                tokens.push(Token::Dot);
                i += 1;
            }
            b',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            b'(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            b')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            b';' => {
                tokens.push(Token::Semicolon);
                i += 1;
            }
            b'0'..=b'9' => {
                // A number (digits, dots inside it, exponents): one opaque token.
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.' || bytes[i] == b'_')
                {
                    i += 1;
                }
                tokens.push(Token::Other);
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || bytes[i] == b'$'
                        || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                tokens.push(Token::Word(sql[start..i].to_ascii_lowercase()));
            }
            b'?' | b':' | b'@' => {
                // Parameters (`?`, `?1`, `:name`, `@name`) and `::` casts.
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                tokens.push(Token::Other);
            }
            _ => {
                tokens.push(Token::Other);
                i += 1;
            }
        }
    }
    Some(tokens)
}

/// The index just past the literal or quoted name opening at `start`; `None` when it is not
/// closed. The quote doubled stands for itself; with `backslash`, `\` escapes the next byte.
fn skip_quoted(bytes: &[u8], start: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let b = *bytes.get(i)?;
        if backslash && b == b'\\' {
            i += 2;
        } else if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
}

/// The tag-ready name of a table: ASCII-lowercased (unquoted names fold case, and a quoted
/// name merging with another only invalidates more, never less) and without its schema
/// (`public.products` and `products` must meet under one tag).
pub(crate) fn normalise(name: &str) -> String {
    let last = name.rsplit('.').next().unwrap_or(name);
    last.trim().to_ascii_lowercase()
}

/// The tables `sql` reads and writes.
pub fn parse(sql: &str) -> Tables {
    let Some(tokens) = tokenize(sql) else {
        return Tables::Unsure("an unterminated literal, comment or quoted name");
    };
    Walk::new(&tokens).run()
}

struct Walk<'t> {
    tokens: &'t [Token],
    reads: BTreeSet<String>,
    writes: BTreeSet<String>,
    locking: bool,
}

impl<'t> Walk<'t> {
    fn new(tokens: &'t [Token]) -> Self {
        Walk {
            tokens,
            reads: BTreeSet::new(),
            writes: BTreeSet::new(),
            locking: false,
        }
    }

    fn word(&self, i: usize) -> Option<&str> {
        match self.tokens.get(i) {
            Some(Token::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn is_word(&self, i: usize, word: &str) -> bool {
        self.word(i) == Some(word)
    }

    fn run(mut self) -> Tables {
        // Trailing semicolons are fine; anything after one is another statement.
        let mut end = self.tokens.len();
        while end > 0 && self.tokens[end - 1] == Token::Semicolon {
            end -= 1;
        }
        if self.tokens[..end].contains(&Token::Semicolon) {
            return Tables::Unsure("several statements");
        }
        self.tokens = &self.tokens[..end];
        let first = self
            .tokens
            .iter()
            .find(|t| **t != Token::Open)
            .and_then(|t| match t {
                Token::Word(w) => Some(w.as_str()),
                _ => None,
            });
        match first {
            Some(w) if STATEMENTS.contains(&w) => {}
            _ => return Tables::Unsure("a statement other than SELECT, INSERT, UPDATE, DELETE"),
        }
        // Frames of parentheses: whether each holds a query (where FROM names tables) or an
        // expression such as EXTRACT(YEAR FROM col), whose FROM does not.
        let mut frames: Vec<bool> = vec![true];
        let mut i = 0;
        let tokens = self.tokens;
        while i < tokens.len() {
            match &tokens[i] {
                Token::Open => frames.push(false),
                Token::Close => {
                    frames.pop();
                    if frames.is_empty() {
                        return Tables::Unsure("unbalanced parentheses");
                    }
                }
                Token::Word(w) => {
                    let prev = match i.checked_sub(1).map(|p| &tokens[p]) {
                        Some(Token::Word(p)) => Some(p.as_str()),
                        _ => None,
                    };
                    if let Err(why) = self.keyword(w, prev, i, &mut frames) {
                        return Tables::Unsure(why);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        if frames.len() != 1 {
            return Tables::Unsure("unbalanced parentheses");
        }
        Tables::Known {
            reads: self.reads,
            writes: self.writes,
            locking: self.locking,
        }
    }

    fn keyword(
        &mut self,
        w: &str,
        prev: Option<&str>,
        i: usize,
        frames: &mut [bool],
    ) -> Result<(), &'static str> {
        let in_query = frames.last().copied().unwrap_or(false);
        match w {
            "select" | "values" | "with" | "table" | "insert" | "update" | "delete" => {
                if let Some(top) = frames.last_mut() {
                    *top = true;
                }
            }
            _ => {}
        }
        match w {
            "from" if prev == Some("distinct") => Ok(()),
            "from" if !in_query => Ok(()),
            "from" if prev == Some("delete") => self.table_list(i + 1, false, true),
            "from" => self.table_list(i + 1, true, false),
            "join" => self.table_list(i + 1, false, false),
            "using" if self.tokens.get(i + 1) == Some(&Token::Open) => Ok(()),
            "using" => {
                // DELETE .. USING (PostgreSQL) and MERGE .. USING: tables read.
                self.table_list(i + 1, true, false)
            }
            "into" => {
                // INSERT INTO, REPLACE INTO, MERGE INTO, SELECT .. INTO new_table.
                self.table_list(i + 1, false, true)
            }
            "truncate" => {
                let mut j = i + 1;
                if self.is_word(j, "table") {
                    j += 1;
                }
                self.table_list(j, true, true)
            }
            "table" if prev != Some("truncate") => {
                // `TABLE name` (PostgreSQL's SELECT * FROM name), also after UNION.
                self.table_list(i + 1, false, false)
            }
            "update" => {
                match prev {
                    // FOR UPDATE, FOR NO KEY UPDATE: a locking read.
                    Some("for") | Some("key") => {
                        self.locking = true;
                        return Ok(());
                    }
                    // ON CONFLICT DO UPDATE SET, ON DUPLICATE KEY UPDATE: the insert's table.
                    Some("do") => return Ok(()),
                    _ => {}
                }
                if self.is_word(i + 1, "set") {
                    return Ok(());
                }
                let mut j = i + 1;
                if self.is_word(j, "or") {
                    // SQLite: UPDATE OR REPLACE t
                    j += 2;
                }
                self.table_list(j, false, true)
            }
            "share" if prev == Some("for") || prev == Some("key") => {
                self.locking = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Reads the table reference at `at` (and, with `list`, the comma-separated ones after
    /// it) into the reads or, with `write`, the writes.
    fn table_list(&mut self, mut at: usize, list: bool, write: bool) -> Result<(), &'static str> {
        loop {
            if self.is_word(at, "only") || self.is_word(at, "lateral") {
                at += 1;
            }
            match self.tokens.get(at) {
                Some(Token::Open) => {
                    // A subquery: its own FROMs are walked; a parenthesised join is a doubt.
                    let next = self.word(at + 1);
                    if !matches!(next, Some("select" | "with" | "values" | "table")) {
                        return Err("a parenthesised FROM item that is not a subquery");
                    }
                    at = self.skip_parens(at)?;
                }
                Some(Token::Word(_) | Token::Quoted(_)) => {
                    let (name, next) = self.qualified_name(at)?;
                    if self.tokens.get(next) == Some(&Token::Open) && !write {
                        return Err("a table-valued function");
                    }
                    if write {
                        self.writes.insert(name);
                    } else {
                        self.reads.insert(name);
                    }
                    at = next;
                }
                _ => return Err("FROM, JOIN, INTO or UPDATE not followed by a table name"),
            }
            if !list {
                return Ok(());
            }
            // Skip the alias (and column aliases, TABLESAMPLE, INDEXED BY) up to a comma or a
            // clause word.
            loop {
                match self.tokens.get(at) {
                    None | Some(Token::Close) => return Ok(()),
                    Some(Token::Comma) => {
                        at += 1;
                        break;
                    }
                    Some(Token::Open) => at = self.skip_parens(at)?,
                    Some(Token::Word(w)) if LIST_END.contains(&w.as_str()) => return Ok(()),
                    Some(_) => at += 1,
                }
            }
        }
    }

    /// The normalised name of the possibly schema-qualified identifier at `at`, and the
    /// index after it.
    fn qualified_name(&self, mut at: usize) -> Result<(String, usize), &'static str> {
        let mut last;
        loop {
            last = match self.tokens.get(at) {
                Some(Token::Word(w)) => {
                    if CLAUSE_WORDS.contains(&w.as_str()) {
                        return Err("a keyword where a table name was expected");
                    }
                    w.clone()
                }
                Some(Token::Quoted(q)) => q.clone(),
                _ => return Err("a qualified name that does not end in a name"),
            };
            at += 1;
            if self.tokens.get(at) == Some(&Token::Dot) {
                at += 1;
            } else {
                break;
            }
        }
        // Checked after normalising: a quoted name of blanks, or one that ends in a dot, is
        // empty once its schema part and blanks are gone, and an empty tag names no table.
        let name = normalise(&last);
        if name.is_empty() {
            return Err("an empty quoted name");
        }
        Ok((name, at))
    }

    /// The index just past the parenthesis group opening at `at`.
    fn skip_parens(&self, at: usize) -> Result<usize, &'static str> {
        let mut depth = 0usize;
        for (j, t) in self.tokens.iter().enumerate().skip(at) {
            match t {
                Token::Open => depth += 1,
                Token::Close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(j + 1);
                    }
                }
                _ => {}
            }
        }
        Err("unbalanced parentheses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(sql: &str) -> (Vec<String>, Vec<String>, bool) {
        match parse(sql) {
            Tables::Known {
                reads,
                writes,
                locking,
            } => (
                reads.into_iter().collect(),
                writes.into_iter().collect(),
                locking,
            ),
            Tables::Unsure(why) => panic!("unsure about {sql:?}: {why}"),
        }
    }

    fn reads(sql: &str) -> Vec<String> {
        let (r, w, _) = known(sql);
        assert!(w.is_empty(), "{sql:?} writes {w:?}");
        r
    }

    fn writes(sql: &str) -> Vec<String> {
        known(sql).1
    }

    fn unsure(sql: &str) {
        assert!(
            matches!(parse(sql), Tables::Unsure(_)),
            "{sql:?} parsed as {:?}",
            parse(sql)
        );
    }

    #[test]
    fn selects() {
        assert_eq!(reads("SELECT * FROM products"), ["products"]);
        assert_eq!(reads("select id from Products where id = ?"), ["products"]);
        assert_eq!(
            reads("SELECT p.id FROM public.products p JOIN \"Stock\" s ON s.id = p.id"),
            ["products", "stock"]
        );
        assert_eq!(
            reads("SELECT * FROM a, b AS x, c y WHERE 1"),
            ["a", "b", "c"]
        );
        assert_eq!(
            reads("SELECT * FROM a LEFT OUTER JOIN b USING (id) NATURAL JOIN c"),
            ["a", "b", "c"]
        );
        assert_eq!(
            reads("SELECT (SELECT count(*) FROM o WHERE o.p = p.id) FROM p WHERE id IN (SELECT p FROM q)"),
            ["o", "p", "q"]
        );
        assert_eq!(
            reads("SELECT EXTRACT(YEAR FROM created), substring(name FROM 1 FOR 2) FROM t"),
            ["t"]
        );
        assert_eq!(reads("SELECT * FROM t WHERE a IS DISTINCT FROM $1"), ["t"]);
        assert_eq!(
            reads("WITH recent AS (SELECT * FROM orders) SELECT * FROM recent JOIN items ON true"),
            ["items", "orders", "recent"]
        );
        assert_eq!(reads("SELECT * FROM `main`.[Weird Name]"), ["weird name"]);
        assert_eq!(
            reads("SELECT 'FROM x', \"a\"\"b\" FROM \"t\"\"q\" -- FROM c\n"),
            ["t\"q"]
        );
        assert_eq!(
            reads("SELECT $$ FROM x $$, $a$FROM y$a$ FROM z /* FROM w */"),
            ["z"]
        );
        assert_eq!(reads("SELECT * FROM (SELECT * FROM a) sub, b"), ["a", "b"]);
        assert_eq!(reads("SELECT * FROM a UNION SELECT * FROM b;"), ["a", "b"]);
        assert_eq!(
            reads("SELECT * FROM a JOIN b ON a.x = f(b.y, 1), c"),
            ["a", "b", "c"]
        );
        assert_eq!(reads("TABLE a UNION ALL TABLE b"), ["a", "b"]);
        assert_eq!(reads("SELECT 1"), Vec::<String>::new());
        assert!(known("SELECT * FROM t FOR UPDATE").2);
        assert!(known("SELECT * FROM t FOR NO KEY UPDATE OF t").2);
    }

    #[test]
    fn writes_are_found() {
        assert_eq!(writes("INSERT INTO products (id) VALUES (?)"), ["products"]);
        assert_eq!(
            writes("INSERT OR REPLACE INTO \"Products\" VALUES (1)"),
            ["products"]
        );
        assert_eq!(
            writes("REPLACE INTO main.products VALUES (1)"),
            ["products"]
        );
        assert_eq!(
            writes("INSERT INTO p (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET n = excluded.n"),
            ["p"]
        );
        assert_eq!(
            writes("UPDATE products SET price = $1 WHERE id = $2"),
            ["products"]
        );
        assert_eq!(
            writes("UPDATE OR IGNORE products SET price = 1"),
            ["products"]
        );
        assert_eq!(
            writes("UPDATE ONLY public.p AS x SET a = 1 FROM q WHERE q.id = x.id"),
            ["p"]
        );
        assert_eq!(known("UPDATE p SET a = 1 FROM q").0, ["q"]);
        assert_eq!(
            writes("DELETE FROM products WHERE id = 1 RETURNING id"),
            ["products"]
        );
        assert_eq!(
            writes("DELETE FROM ONLY a USING b WHERE a.id = b.id"),
            ["a"]
        );
        assert_eq!(writes("TRUNCATE TABLE a, b"), ["a", "b"]);
        assert_eq!(writes("INSERT INTO a SELECT * FROM b"), ["a"]);
        assert_eq!(
            writes("WITH gone AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM gone"),
            ["a", "b"]
        );
        assert_eq!(
            writes("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE"),
            ["t"]
        );
    }

    #[test]
    fn doubts() {
        unsure("CREATE TABLE t (id int)");
        unsure("PRAGMA table_info(t)");
        unsure("SELECT * FROM generate_series(1, 3)");
        unsure("SELECT * FROM (a JOIN b ON true)");
        unsure("SELECT 'unterminated FROM t");
        unsure("SELECT * FROM a; DELETE FROM b");
        unsure("SELECT * FROM");
        unsure("SELECT * FROM where");
        unsure("SELECT (* FROM a");
        unsure("SELECT * FROM a /* /* nested */");
        unsure("");
    }

    /// A quoted name that is empty once normalised (blanks, or a trailing dot) is a doubt, not
    /// a table named "" (found by `tables_props.rs`'s sqlish text).
    #[test]
    fn quoted_names_empty_after_normalising_are_doubts() {
        unsure("SELECT * FROM \" \"");
        unsure("SELECT * FROM \"a.\"");
        unsure("TABLE \"\n;ONLY SELECT t INSERT FROM t WITH .\"éFROM --/*ONLY ");
        assert_eq!(reads("SELECT * FROM \"s.a\""), ["a"]);
    }
}
