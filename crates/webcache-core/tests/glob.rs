//! `glob_match` follows Redis's pattern rules (checked against a real `redis-server`'s `KEYS`),
//! in time that no pattern can blow up, and never panics.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use webcache_core::backend::glob_match;
use webcache_testkit::servers::redis::RedisServer;

/// Rows of (pattern, text, whether Redis matches), derived from `stringmatchlen` in Redis's
/// `util.c` and confirmed by [`the_table_agrees_with_redis`].
const TABLE: &[(&str, &str, bool)] = &[
    ("*", "anything", true),
    ("a*b*c", "axxbyyc", true),
    ("a*b*c", "axxbyy", false),
    ("*:1:k?y", "p:1:key", true),
    ("h?llo", "hello", true),
    ("h?llo", "hllo", false),
    // `?` is one byte: a two-byte character needs two.
    ("h?llo", "héllo", false),
    ("h??llo", "héllo", true),
    ("[a-c]x", "bx", true),
    ("[^a-c]x", "bx", false),
    ("[^a-c]x", "dx", true),
    // Only `^` negates; `!` is an ordinary member.
    ("[!a]", "b", false),
    ("[!a]", "!", true),
    ("[!a]", "a", true),
    // A range either way round.
    ("[z-a]", "m", true),
    ("[z-a]", "A", false),
    // `]` right after `[` closes an empty class.
    ("[]]", "]", false),
    ("[]]", "]]", false),
    ("[^]]", "x]", true),
    ("[^]", "x", true),
    // An unclosed class ends with the pattern.
    ("[abc", "b", true),
    ("[abc", "[abc", false),
    ("x[", "x[", false),
    ("[", "[", false),
    ("[^", "q", true),
    // `\` escapes, outside and inside classes; a trailing `\` is itself.
    ("a\\*", "a*", true),
    ("a\\*", "ab", false),
    ("\\?", "?", true),
    ("\\?", "x", false),
    ("[\\]]", "]", true),
    ("[\\-]", "-", true),
    ("[\\a-z]", "m", false),
    ("[\\a-z]", "-", true),
    ("a\\", "a\\", true),
    ("[a\\", "\\", true),
    // A `-` at the end of a class ends a range at `]`, leaving the class open.
    ("[a-]", "-", false),
    ("[a-]", "_", true),
    ("[-a]", "-", true),
    // Bytes compare as signed (C `char` on x86-64): `[a-é]` runs from 0xC3 (-61) up to `a`.
    ("[a-é]", "B", true),
    ("[a-é]", "b", false),
    ("[a-é]?", "é", true),
    ("[é-中]?", "é", true),
    // Stars.
    ("**a**", "xay", true),
    ("a*", "a", true),
    ("*a", "ba", true),
    ("*a", "ab", false),
    ("?*", "", false),
];

#[test]
fn the_table_of_redis_rules_holds() {
    for &(pattern, text, expected) in TABLE {
        assert_eq!(
            glob_match(pattern, text),
            expected,
            "pattern {pattern:?} against {text:?}"
        );
    }
    // The empty text, which `KEYS *` lists.
    assert!(glob_match("*", ""));
    assert!(glob_match("", ""));
    assert!(!glob_match("", "a"));
}

/// A minimal RESP client: enough for `FLUSHDB`, `SET` and `KEYS` on a test server.
struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

enum Reply {
    Simple,
    Bulk(Option<Vec<u8>>),
    Int,
    Array(Vec<Reply>),
}

impl Resp {
    fn connect(port: u16) -> Resp {
        let writer = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Resp {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
        }
    }

    fn call(&mut self, args: &[&[u8]]) -> Reply {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).unwrap();
        self.read()
    }

    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).unwrap();
        line.truncate(line.len() - 2);
        line
    }

    fn read(&mut self) -> Reply {
        let line = self.line();
        let rest = std::str::from_utf8(&line[1..]).unwrap().to_owned();
        match line[0] {
            b'+' => Reply::Simple,
            b'-' => panic!("redis error: {rest}"),
            b':' => Reply::Int,
            b'$' => {
                let len: i64 = rest.parse().unwrap();
                if len < 0 {
                    return Reply::Bulk(None);
                }
                let mut data = vec![0; usize::try_from(len).unwrap() + 2];
                std::io::Read::read_exact(&mut self.reader, &mut data).unwrap();
                data.truncate(data.len() - 2);
                Reply::Bulk(Some(data))
            }
            b'*' => {
                let n: usize = rest.parse().unwrap();
                Reply::Array((0..n).map(|_| self.read()).collect())
            }
            other => panic!("unexpected reply type {other}"),
        }
    }

    /// Which of `texts` Redis's `KEYS pattern` lists.
    fn keys_matching(&mut self, pattern: &str, texts: &[String]) -> Vec<bool> {
        self.call(&[b"FLUSHDB"]);
        for text in texts {
            self.call(&[b"SET", text.as_bytes(), b"1"]);
        }
        let Reply::Array(listed) = self.call(&[b"KEYS", pattern.as_bytes()]) else {
            panic!("KEYS did not answer an array");
        };
        let listed: Vec<Vec<u8>> = listed
            .into_iter()
            .map(|r| match r {
                Reply::Bulk(Some(key)) => key,
                _ => panic!("KEYS listed a non-string"),
            })
            .collect();
        texts
            .iter()
            .map(|t| listed.iter().any(|k| k == t.as_bytes()))
            .collect()
    }
}

fn redis() -> Resp {
    // A database of its own for each connection: each test empties its database before every
    // check (`keys_matching`), so two tests sharing one, run at once, would empty each other's.
    // Database 0 is left to the other tests of this process.
    static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(1);
    let database = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
    assert!(
        database < 16,
        "redis-server has 16 databases; a test needs one of its own"
    );
    let mut conn = Resp::connect(RedisServer::shared().port());
    conn.call(&[b"SELECT", database.to_string().as_bytes()]);
    conn
}

#[test]
fn the_table_agrees_with_redis() {
    let mut conn = redis();
    for &(pattern, text, expected) in TABLE.iter().filter(|r| !r.1.is_empty()) {
        let listed = conn.keys_matching(pattern, &[text.to_owned()])[0];
        assert_eq!(
            listed, expected,
            "the table says {expected} for {pattern:?} against {text:?}, Redis says {listed}"
        );
    }
}

/// Patterns and texts over the characters that matter to the rules, multi-byte ones included.
fn piece() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a", "b", "z", "-", "*", "?", "[", "]", "^", "!", "\\", "é", "中", ":",
    ])
    .prop_map(str::to_owned)
}

fn glob_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..max).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the pattern, the keys it selects are the keys Redis's `KEYS` lists.
    #[test]
    fn matches_what_redis_keys_lists(
        pattern in glob_text(8),
        texts in prop::collection::btree_set(glob_text(6).prop_filter("KEYS lists non-empty keys", |t| !t.is_empty()), 1..12),
    ) {
        let texts: Vec<String> = texts.into_iter().collect();
        let listed = REDIS.with(|conn| conn.borrow_mut().keys_matching(&pattern, &texts));
        for (text, listed) in texts.iter().zip(listed) {
            prop_assert_eq!(
                glob_match(&pattern, text),
                listed,
                "pattern {:?} against {:?}: Redis says {}", pattern, text, listed
            );
        }
    }

    /// Arbitrary patterns and texts never panic.
    #[test]
    fn never_panics(pattern in any::<String>(), text in any::<String>()) {
        let _ = glob_match(&pattern, &text);
        // Any text matches itself escaped, followed by a star.
        let escaped = format!("{}*", webcache_core::glob_escape(&text));
        prop_assert!(glob_match(&escaped, &text), "{:?}", escaped);
        prop_assert!(glob_match("*", &text));
    }
}

thread_local! {
    static REDIS: std::cell::RefCell<Resp> = std::cell::RefCell::new(redis());
}

/// Patterns built to make a naive matcher take minutes over a few hundred keys: the old
/// matcher re-read a class up to the pattern's end for every byte it tried, so `*` and 20,000
/// `[` over 300 keys of `[`s took minutes; the star-heavy ones cost the pattern times the text
/// for every star in a backtracking matcher. No time is asserted: a regression shows as a test
/// that does not finish.
#[test]
fn adversarial_patterns_finish() {
    let keys =
        |c: &str| -> Vec<String> { (0..300).map(|i| format!("{}{i}", c.repeat(200))).collect() };
    let (brackets_keys, a_keys) = (keys("["), keys("a"));
    let brackets = format!("*{}", "[".repeat(20_000));
    let stars = format!("{}b", "a*".repeat(5_000));
    let tail = format!("*{}b", "a".repeat(20_000));
    let classes = format!("*{}", "[a-z]".repeat(4_000));
    for (pattern, keys) in [
        (&brackets, &brackets_keys),
        (&stars, &a_keys),
        (&tail, &a_keys),
        (&classes, &a_keys),
    ] {
        let matched = keys.iter().filter(|k| glob_match(pattern, k)).count();
        assert_eq!(matched, 0, "{}", &pattern[..20]);
    }
    // And still right on keys that do match.
    assert!(glob_match(&brackets, &format!("{}[", "[".repeat(500))));
    assert!(glob_match(&stars, &format!("{}b", "a".repeat(6_000))));
}
