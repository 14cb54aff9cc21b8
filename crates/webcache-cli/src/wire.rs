//! The admin endpoint's JSON, in both directions: a type of its own, so renaming a command-line
//! flag never changes what `webcache serve` and `webcache ... --app` say to each other.

use serde::{Deserialize, Serialize};

use crate::commands::{OpError, Reply, Request};

/// Where the endpoint is mounted.
pub(crate) const PATH: &str = "/_webcache/command";

/// What the CLI sends: which cache alias, and the command.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AdminRequest {
    pub(crate) alias: String,
    pub(crate) request: Request,
}

/// What the app answers, with any HTTP status.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub(crate) enum AdminAnswer {
    /// The command ran.
    Ok { reply: Reply },
    /// The caller must change something (exit code 2): a bad command, a refused request.
    Usage { error: String },
    /// The cache failed (exit code 1).
    Failed { error: String },
}

impl From<Result<Reply, OpError>> for AdminAnswer {
    fn from(outcome: Result<Reply, OpError>) -> Self {
        match outcome {
            Ok(reply) => AdminAnswer::Ok { reply },
            Err(OpError::Usage(error)) => AdminAnswer::Usage { error },
            Err(OpError::Failed(error)) => AdminAnswer::Failed { error },
        }
    }
}

impl From<AdminAnswer> for Result<Reply, OpError> {
    fn from(answer: AdminAnswer) -> Self {
        match answer {
            AdminAnswer::Ok { reply } => Ok(reply),
            AdminAnswer::Usage { error } => Err(OpError::Usage(error)),
            AdminAnswer::Failed { error } => Err(OpError::Failed(error)),
        }
    }
}
