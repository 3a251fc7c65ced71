//! What a connection may do, and how the layers' errors answer a request, for every dialect.
//!
//! [`Access`] is decided by the connection layer from the listener and how the peer
//! authenticated: its principal (the owner, a certificate, a token's label), whether any
//! command may run or only the catalog's, what it may see, where its files live.
//! [`Access::check`] is the one check every request that sees or touches a job, a session, the
//! history or the peers goes through. Refusals come as a [`Refusal`] with a dialect-neutral
//! [`RefusalKind`]; each adapter words it in its own frames.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_engine::files::FileError;
use ferry_engine::sessions::SessionError;
use ferry_engine::{EngineError, Principal};

use subtle::ConstantTimeEq;

use crate::catalog::Catalog;
use crate::config::{CommandPolicy, NamedToken};

/// What a connection may do, and how it must authenticate.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    /// Who the connection acts for: known from the transport (the owner's uid on a Unix
    /// socket, a verified client certificate), or, while `None`, to be learnt from the token
    /// its dialect's handshake shows.
    pub principal: Option<Principal>,
    /// The tokens that handshake may show, with their labels.
    pub tokens: Arc<[NamedToken]>,
    /// Which commands may run.
    pub commands: CommandPolicy,
    /// Every job may be seen (`ps`, `log`, `attach`), not only the principal's own.
    pub see_all_jobs: bool,
    /// The daemon's file area; each principal but the owner works in a part of its own
    /// (see [`Access::files_dir`]).
    pub files_root: PathBuf,
}

/// What a request does to a thing: sees it, or touches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    /// Reads it: lists it, reads its output.
    See,
    /// Changes it: signals, feeds, runs in, closes, removes it.
    Touch,
}
/// The kind of a refusal, which each dialect words in its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalKind {
    /// Not allowed for this peer.
    PermissionDenied,
    /// The request makes no sense.
    InvalidRequest,
    /// No such job.
    UnknownJob,
    /// A limit was reached.
    LimitReached,
    /// The daemon is going down.
    ShuttingDown,
    /// The daemon failed.
    Internal,
}

/// A request's refusal: its kind and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// What to tell the peer.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind` saying `message`.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

impl Access {
    /// Who the connection acts for (an unauthenticated connection reaches no request: the
    /// handshake comes first).
    pub fn principal(&self) -> &Principal {
        const NOBODY: &Principal = &Principal::Anonymous {
            dialect: String::new(),
            uid: None,
        };
        self.principal.as_ref().unwrap_or(NOBODY)
    }

    /// Whether this is the daemon's owner, on its Unix socket: the client's working directory
    /// and environment are used, and the daemon's administration is allowed.
    pub fn is_owner(&self) -> bool {
        self.principal().is_owner()
    }

    /// The part of the file area this principal works in: all of it for the owner,
    /// `clients/NAME` for a certificate, `tokens/LABEL` for a token, `anonymous/DIALECT/UID`
    /// (`anonymous/DIALECT/unknown` where the user is not known).
    pub fn files_dir(&self) -> PathBuf {
        match self.principal() {
            Principal::Owner => self.files_root.clone(),
            Principal::Certificate(name) => self.files_root.join("clients").join(name),
            Principal::Token(label) => self.files_root.join("tokens").join(label),
            Principal::Anonymous { dialect, uid } => {
                let user = uid.map_or_else(|| "unknown".to_owned(), |uid| uid.to_string());
                self.files_root.join("anonymous").join(dialect).join(user)
            }
        }
    }

    /// Where a job of this connection runs: the directory its request names, where the
    /// dialect carries one and the principal may choose (the owner's native client names its
    /// own), else the principal's file area; never the daemon's own working directory, which
    /// is wherever it happened to start.
    pub fn job_dir(&self, asked: Option<PathBuf>) -> PathBuf {
        match asked {
            Some(dir) if self.is_owner() => dir,
            _ => self.files_dir(),
        }
    }

    /// Whether this connection may `act` on a thing that belongs to `owner`: the one check
    /// every request goes through. The daemon's owner may do anything; a principal may see
    /// and touch its own things; a listener may grant seeing every job.
    pub fn check(&self, act: Act, owner: &Principal, thing: &str) -> Result<(), Refusal> {
        if self.may(act, owner) {
            return Ok(());
        }
        let me = self.principal();
        Err(Refusal::new(
            RefusalKind::PermissionDenied,
            format!("{thing} is not yours (it belongs to {owner}; you are {me})"),
        ))
    }

    /// Whether this connection may `act` on a thing that belongs to `owner` (the rule
    /// [`Access::check`] applies).
    pub fn may(&self, act: Act, owner: &Principal) -> bool {
        let me = self.principal();
        me.is_owner() || me == owner || (act == Act::See && self.see_all_jobs)
    }

    /// The principal a handshake's token makes its holder: `token:LABEL` of the configured
    /// token it matches. Every token is compared, in constant time, whatever matches.
    pub fn token_principal(&self, token: Option<&str>) -> Option<Principal> {
        let given = token?.as_bytes();
        let mut matched = None;
        for named in self.tokens.iter() {
            if bool::from(given.ct_eq(named.secret.as_bytes())) {
                matched = Some(Principal::Token(named.label.clone()));
            }
        }
        matched
    }

    /// Only the daemon's owner, on its Unix socket, may `what` (the same check and error as
    /// for any other thing: the daemon is the owner's).
    pub fn owner_only(&self, what: &str) -> Result<(), Refusal> {
        self.check(Act::Touch, &Principal::Owner, "the daemon")
            .map_err(|refusal| {
                Refusal::new(
                    refusal.kind,
                    format!(
                        "{}: only its owner, on its Unix socket, may {what}",
                        refusal.message
                    ),
                )
            })
    }

    /// The argv to run for a client's argv, as this connection allows it: unchanged where any
    /// command may run, otherwise resolved through the daemon's catalog.
    pub fn allowed_command(
        &self,
        catalog: &Catalog,
        argv: Vec<OsString>,
    ) -> Result<Vec<OsString>, Refusal> {
        if self.commands == CommandPolicy::Any {
            return Ok(argv);
        }
        let Some(name) = argv.first() else {
            return Ok(argv); // the engine answers an empty command
        };
        catalog.resolve(name, &argv[1..]).ok_or_else(|| {
            Refusal::new(
                RefusalKind::PermissionDenied,
                format!(
                    "'{}' is not in this daemon's command catalog, and this listener runs catalog commands only (rule: commands = catalog; the daemon's --allow-any-command lifts it)",
                    name.to_string_lossy()
                ),
            )
        })
    }

    /// Sessions run any shell code: only where any command may run.
    pub fn sessions_allowed(&self) -> Result<(), Refusal> {
        if self.commands == CommandPolicy::Any {
            Ok(())
        } else {
            Err(Refusal::new(
                RefusalKind::PermissionDenied,
                "sessions run any shell code, and this listener runs catalog commands only (rule: commands = catalog)",
            ))
        }
    }
}

/// An error of the layers below that answers a request.
pub(crate) trait Answer: std::fmt::Display {
    /// Its kind.
    fn kind(&self) -> RefusalKind;

    /// Its refusal.
    fn refusal(&self) -> Refusal {
        Refusal::new(self.kind(), self.to_string())
    }
}

impl Answer for EngineError {
    fn kind(&self) -> RefusalKind {
        match self {
            EngineError::UnknownJob(_) => RefusalKind::UnknownJob,
            EngineError::Invalid(_) => RefusalKind::InvalidRequest,
            EngineError::Limit(_) => RefusalKind::LimitReached,
            EngineError::ShuttingDown => RefusalKind::ShuttingDown,
            EngineError::Io { .. } | EngineError::Store(_) => RefusalKind::Internal,
        }
    }
}

impl Answer for SessionError {
    fn kind(&self) -> RefusalKind {
        match self {
            SessionError::NotFound(_) | SessionError::Invalid(_) => RefusalKind::InvalidRequest,
            SessionError::Busy { .. } => RefusalKind::LimitReached,
            SessionError::Io { .. } => RefusalKind::Internal,
            SessionError::Engine(e) => e.kind(),
        }
    }
}

impl Answer for FileError {
    fn kind(&self) -> RefusalKind {
        match self {
            FileError::Io { .. } => RefusalKind::Internal,
            _ => RefusalKind::InvalidRequest,
        }
    }
}

/// Runs blocking work of the layers below (the history store, sessions' and files' I/O) off
/// the async threads; its error as a refusal.
pub(crate) async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Refusal>
where
    T: Send + 'static,
    E: Answer + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Refusal::new(RefusalKind::Internal, e.to_string()))?
        .map_err(|e| e.refusal())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(principal: Option<Principal>, see_all_jobs: bool) -> Access {
        let token = |label: &str, secret: &str| NamedToken {
            label: label.into(),
            secret: secret.into(),
        };
        Access {
            principal,
            tokens: Arc::from([token("default", "s3cret"), token("ci", "other")]),
            commands: CommandPolicy::Catalog,
            see_all_jobs,
            files_root: PathBuf::from("/files"),
        }
    }

    #[test]
    fn a_token_makes_its_holder_the_principal_of_its_label() {
        let handshaking = access(None, false);
        assert_eq!(
            handshaking.token_principal(Some("other")),
            Some(Principal::Token("ci".into()))
        );
        assert_eq!(
            handshaking.token_principal(Some("s3cret")),
            Some(Principal::Token("default".into()))
        );
        for wrong in [None, Some(""), Some("s3cre"), Some("s3cret ")] {
            assert_eq!(handshaking.token_principal(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn a_principal_may_see_and_touch_its_own_and_an_operator_see_all() {
        let ci = Principal::Token("ci".into());
        let alice = Principal::Certificate("alice".into());
        let client = access(Some(ci.clone()), false);
        assert!(client.may(Act::Touch, &ci));
        assert!(!client.may(Act::See, &alice));
        let refused = client
            .check(Act::See, &alice, "job 7")
            .expect_err("not its own");
        assert_eq!(
            refused.message,
            "job 7 is not yours (it belongs to cert:alice; you are token:ci)"
        );
        let operator = access(Some(ci), true);
        assert!(operator.may(Act::See, &alice));
        assert!(!operator.may(Act::Touch, &alice));
        let owner = access(Some(Principal::Owner), false);
        assert!(owner.may(Act::Touch, &alice));
    }
}
