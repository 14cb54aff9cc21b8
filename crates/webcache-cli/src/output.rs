//! Printing results: human-readable by default, one JSON object per command with `--json`.
//!
//! Nothing here panics on a failed write: an unwritable standard error is ignored (there is
//! nowhere left to complain), a closed standard output (`webcache keys | head`) ends the output
//! quietly, and any other failure to write the result makes the exit code 1.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;

use serde_json::json;

use crate::commands::{Lifetime, OpError, Reply};

/// Prints the outcome of one command on standard output (errors on standard error in human
/// mode) and returns the exit code.
pub(crate) fn print(outcome: &Result<Reply, OpError>, as_json: bool) -> i32 {
    let code = match outcome {
        Ok(_) => 0,
        Err(e) => e.exit_code(),
    };
    let text = match (outcome, as_json) {
        (Ok(reply), true) => json!({ "ok": true, "result": reply.to_json() }).to_string(),
        (Err(e), true) => json!({ "ok": false, "error": e.message() }).to_string(),
        (Ok(reply), false) => human(reply),
        (Err(e), false) => {
            note(format_args!("error: {}", printable(e.message())));
            return code;
        }
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => code,
        Err(e) => write_failed(&e, code),
    }
}

/// Prints `stats --hot`: the hot keys, as JSON or one per line; returns the exit code.
pub(crate) fn print_hot(stats: &crate::commands::Stats, as_json: bool) -> i32 {
    let text = if as_json {
        json!({ "ok": true, "result": stats.hot_json() }).to_string()
    } else {
        stats.hot_lines()
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => write_failed(&e, 0),
    }
}

/// Prints a usage error (exit code 2) as JSON or in words.
pub(crate) fn usage_error(message: &str, as_json: bool) -> i32 {
    print(&Err(OpError::Usage(message.to_owned())), as_json)
}

/// Writes a line on standard error, ignoring failure (a full disk or a closed pipe there must
/// not turn into a panic and exit code 101).
pub(crate) fn note(line: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// The exit code after standard output could not be written: unchanged for a closed pipe (the
/// reader chose to stop), 1 otherwise.
pub(crate) fn write_failed(e: &std::io::Error, code: i32) -> i32 {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        code
    } else {
        note(format_args!("error: cannot write the output: {e}"));
        code.max(1)
    }
}

/// `text` safe to show on a terminal: control characters (a newline, an escape sequence) and
/// bidirectional overrides are shown escaped (`\n`, `\u{1b}`), so a key prints on one line and
/// never drives the terminal. `--json` gives the exact text.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// clap's message on one line, without its `error: ` prefix, usage and pointer to `--help`
/// (`the following required arguments were not provided: <KEY>`).
pub(crate) fn clap_message(e: &clap::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| l.trim_start_matches("error: "))
        .collect::<Vec<_>>()
        .join(" ")
}

fn human(reply: &Reply) -> String {
    match reply {
        Reply::Keys(keys) if keys.is_empty() => "(empty)".into(),
        Reply::Keys(keys) => keys
            .iter()
            .map(|k| printable(k))
            .collect::<Vec<_>>()
            .join("\n"),
        Reply::Value(None) => "(nil)".into(),
        // JSON escapes C0 controls but not DEL, C1 controls or bidirectional overrides; a JSON
        // string never holds a raw newline, so the pretty-printed lines are escaped one by one.
        Reply::Value(Some(value)) => serde_json::to_string_pretty(value)
            .unwrap_or_default()
            .lines()
            .map(printable)
            .collect::<Vec<_>>()
            .join("\n"),
        Reply::Ttl(Lifetime::Missing) => "missing".into(),
        Reply::Ttl(Lifetime::Forever) => "forever".into(),
        Reply::Ttl(Lifetime::Seconds(s)) => format!("{s} s"),
        Reply::Stored => "OK".into(),
        Reply::Added(true) => "added".into(),
        Reply::Added(false) => "not added: the key exists".into(),
        Reply::Number(n) => n.to_string(),
        Reply::Touched(true) => "touched".into(),
        Reply::Touched(false) => "not touched: the key is missing".into(),
        Reply::Deleted { asked: 1, removed } if *removed == 1 => "deleted".into(),
        Reply::Deleted { asked: 1, .. } => "not found".into(),
        Reply::Deleted { removed, .. } | Reply::DeletedMatching(removed) => {
            format!("deleted {removed}")
        }
        Reply::Cleared(None) => "cleared".into(),
        Reply::Cleared(Some(n)) => format!("cleared {n} keys"),
        Reply::Invalidated(1) => "invalidated 1 tag".into(),
        Reply::Invalidated(n) => format!("invalidated {n} tags"),
        Reply::Purged(true) => "purged".into(),
        Reply::Purged(false) => "not in the cache".into(),
        Reply::Stats(stats) => stats
            .lines()
            .iter()
            .map(|(k, v)| format!("{}: {}", printable(k), printable(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        Reply::Sql(sql) => sql.clone(),
        Reply::TableCreated { alias, sql } => {
            format!("created the cache table of `{}`:\n{sql}", printable(alias))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain key:1"), "plain key:1");
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("é✓"), "é✓");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the text, what is shown holds no control character and one line.
        #[test]
        fn printable_text_holds_no_control_character(text in any::<String>()) {
            let shown = printable(&text);
            prop_assert!(!shown.chars().any(|c| c.is_control()));
            let harmless = |c: char| !c.is_control() && !('\u{2000}'..='\u{206f}').contains(&c) && c != '\u{61c}';
            if text.chars().all(harmless) {
                prop_assert_eq!(shown.as_ref(), text.as_str());
            }
        }
    }
}
