//! Printing results: human-readable by default, one JSON object per command with `--json`.

use std::io::Write;

use serde_json::{json, Value};

use crate::cli::Op;
use crate::ops::OpError;

/// Prints the outcome of one command on standard output (errors on standard error in human
/// mode) and returns the exit code.
pub(crate) fn print(op: Option<&Op>, outcome: &Result<Value, OpError>, as_json: bool) -> i32 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = match outcome {
        Ok(_) => 0,
        Err(e) => e.exit_code(),
    };
    let written = if as_json {
        let line = match outcome {
            Ok(result) => json!({ "ok": true, "result": result }),
            Err(e) => json!({ "ok": false, "error": e.message() }),
        };
        writeln!(out, "{line}")
    } else {
        match outcome {
            Ok(result) => writeln!(out, "{}", human(op, result)),
            Err(e) => {
                drop(out);
                eprintln!("error: {}", e.message());
                return code;
            }
        }
    };
    // A closed pipe (`webcache keys | head`) is not an error worth reporting.
    let _ = written;
    code
}

fn human(op: Option<&Op>, result: &Value) -> String {
    match (op, result) {
        (Some(Op::Keys { .. }), Value::Array(keys)) if keys.is_empty() => "(empty)".into(),
        (Some(Op::Keys { .. }), Value::Array(keys)) => keys
            .iter()
            .map(|k| k.as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join("\n"),
        (Some(Op::Get { .. }), Value::Null) => "(nil)".into(),
        (Some(Op::Ttl { .. }), Value::Null) => "missing".into(),
        (Some(Op::Ttl { .. }), Value::String(s)) => s.clone(),
        (Some(Op::Ttl { .. }), n) => format!("{n} s"),
        (Some(Op::Set { .. }), _) => "OK".into(),
        (Some(Op::Add { .. }), Value::Bool(true)) => "added".into(),
        (Some(Op::Add { .. }), _) => "not added: the key exists".into(),
        (Some(Op::Touch { .. }), Value::Bool(true)) => "touched".into(),
        (Some(Op::Touch { .. }), _) => "not touched: the key is missing".into(),
        (Some(Op::Del { .. }), Value::Bool(true)) => "deleted".into(),
        (Some(Op::Del { .. }), Value::Bool(false)) => "not found".into(),
        (Some(Op::Del { .. }), n) => format!("deleted {n}"),
        (Some(Op::Clear { .. }), Value::Bool(_)) => "cleared".into(),
        (Some(Op::Clear { .. }), n) => format!("cleared {n} keys"),
        (Some(Op::Stats), Value::Object(fields)) => fields
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                Value::Null => format!("{k}: (unknown)"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        (Some(Op::Createcachetable { .. }), Value::String(s)) => s.clone(),
        (Some(Op::Createcachetable { .. }), Value::Object(o)) => format!(
            "created the cache table of `{}`:\n{}",
            o.get("created").and_then(Value::as_str).unwrap_or_default(),
            o.get("sql").and_then(Value::as_str).unwrap_or_default()
        ),
        (_, Value::String(s)) => serde_json::to_string(s).unwrap_or_default(),
        (_, other) => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}
