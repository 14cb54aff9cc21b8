//! `webcache shell`: one inspection command per line from standard input, as `redis-cli` reads
//! them, so a script can pipe many commands into one process (the only way to look into a
//! locmem cache from outside its process is `--app`; the shell also works with `--app`).

use std::io::BufRead;

use clap::Parser;

use crate::cli::Line;
use crate::ops::OpError;
use crate::output;
use crate::target::Target;

/// Runs lines until end of input or `quit`; returns the highest exit code of any line.
pub(crate) async fn run(target: &Target, as_json: bool) -> i32 {
    let mut worst = 0;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if matches!(line, "quit" | "exit") {
            break;
        }
        let code = match shell_words::split(line) {
            Err(e) => output::print(
                None,
                &Err(OpError::Usage(format!("cannot split `{line}`: {e}"))),
                as_json,
            ),
            Ok(words) => match Line::try_parse_from(words) {
                Err(e) if as_json => {
                    output::print(None, &Err(OpError::Usage(first_line(&e.to_string()))), true)
                }
                Err(e) => {
                    let _ = e.print();
                    2
                }
                Ok(Line { op }) => {
                    let outcome = target.run(&op).await;
                    output::print(Some(&op), &outcome, as_json)
                }
            },
        };
        worst = worst.max(code);
    }
    worst
}

fn first_line(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or(message)
        .trim_start_matches("error: ")
        .to_owned()
}
