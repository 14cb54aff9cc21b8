//! `webcache shell`: one inspection command per line from standard input, as `redis-cli` reads
//! them, so a script can pipe many commands into one process (the only way to look into a
//! locmem cache from outside its process is `--app`; the shell also works with `--app`).

use std::io::BufRead;

use clap::Parser;

use crate::cli::Line;
use crate::output;
use crate::target::Target;

/// Runs lines until end of input or `quit`; returns the highest exit code of any line. A line
/// that cannot be read as a command (not UTF-8, unbalanced quotes, unknown command) is reported
/// as a usage error and the next line runs.
pub(crate) async fn run(target: &Target, as_json: bool) -> i32 {
    let mut worst = 0;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut number = 0u64;
    loop {
        let mut bytes = Vec::new();
        match input.read_until(b'\n', &mut bytes) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                worst = worst.max(output::print(
                    &Err(crate::commands::OpError::Failed(format!(
                        "cannot read standard input: {e}"
                    ))),
                    as_json,
                ));
                break;
            }
        }
        number += 1;
        let Ok(text) = String::from_utf8(bytes) else {
            let message = format!("line {number} is not UTF-8 text; it was skipped");
            worst = worst.max(output::usage_error(&message, as_json));
            continue;
        };
        let line = text.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if matches!(line, "quit" | "exit") {
            break;
        }
        let words = match shell_words::split(line) {
            Ok(words) => words,
            Err(e) => {
                let message = format!("cannot split `{}`: {e}", output::printable(line));
                worst = worst.max(output::usage_error(&message, as_json));
                continue;
            }
        };
        // The words own their copy: a large value is not held twice while it runs.
        drop(text);
        let code = match Line::try_parse_from(words) {
            Err(e) if as_json => output::usage_error(&output::clap_message(&e), true),
            Err(e) => {
                let _ = e.print();
                2
            }
            Ok(Line { op }) => output::print(&target.run(op.into()).await, as_json),
        };
        worst = worst.max(code);
    }
    worst
}
