//! Who a connection acts for: its principal. Every job, session and peer records the principal
//! that made it, and requests may see or touch only what their principal owns (the daemon's
//! policy decides; see `ferry_daemon`'s `policy`).
//!
//! Written as text in records: `owner`, `cert:NAME`, `token:LABEL`, `anonymous:DIALECT:UID`
//! (`anonymous:DIALECT` where the user at the other end is not known).

use std::fmt;
use std::str::FromStr;

/// Who a connection acts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Principal {
    /// The daemon's own user, on its Unix socket.
    #[default]
    Owner,
    /// A client certificate's common name.
    Certificate(String),
    /// The label of the token a client showed.
    Token(String),
    /// An anonymous peer of a dialect without authentication of its own: on loopback (or a
    /// FIFO pair), the user at the other end is known, and each user is a principal of its
    /// own; beyond it (a listener opted out of loopback) it is not.
    Anonymous {
        /// The dialect.
        dialect: String,
        /// The uid at the other end, where it is known.
        uid: Option<u32>,
    },
}

impl Principal {
    /// An anonymous peer of `dialect`, from the user `uid` where it is known.
    pub fn anonymous(dialect: &str, uid: Option<u32>) -> Principal {
        Principal::Anonymous {
            dialect: dialect.into(),
            uid,
        }
    }

    /// Whether this is the daemon's owner.
    pub fn is_owner(&self) -> bool {
        *self == Principal::Owner
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Owner => f.write_str("owner"),
            Principal::Certificate(name) => write!(f, "cert:{name}"),
            Principal::Token(label) => write!(f, "token:{label}"),
            Principal::Anonymous { dialect, uid: None } => write!(f, "anonymous:{dialect}"),
            Principal::Anonymous {
                dialect,
                uid: Some(uid),
            } => write!(f, "anonymous:{dialect}:{uid}"),
        }
    }
}

/// Text that names no principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a principal (owner, cert:NAME, token:LABEL or anonymous:DIALECT[:UID])")]
pub struct BadPrincipal(String);

impl FromStr for Principal {
    type Err = BadPrincipal;

    fn from_str(text: &str) -> Result<Principal, BadPrincipal> {
        let principal = match text.split_once(':') {
            None if text == "owner" => Principal::Owner,
            Some(("cert", name)) if !name.is_empty() => Principal::Certificate(name.into()),
            Some(("token", label)) if !label.is_empty() => Principal::Token(label.into()),
            Some(("anonymous", rest)) if !rest.is_empty() => match rest.split_once(':') {
                None => Principal::anonymous(rest, None),
                Some((dialect, uid)) if !dialect.is_empty() => match uid.parse() {
                    Ok(uid) => Principal::anonymous(dialect, Some(uid)),
                    Err(_) => return Err(BadPrincipal(text.into())),
                },
                Some(_) => return Err(BadPrincipal(text.into())),
            },
            _ => return Err(BadPrincipal(text.into())),
        };
        Ok(principal)
    }
}

impl serde::Serialize for Principal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Principal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Principal, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_read_back_as_written() {
        for principal in [
            Principal::Owner,
            Principal::Certificate("alice".into()),
            Principal::Token("ci".into()),
            Principal::anonymous("tsockm", None),
            Principal::anonymous("c2", Some(1000)),
        ] {
            assert_eq!(principal.to_string().parse(), Ok(principal.clone()));
        }
        for bad in [
            "",
            "root",
            "cert:",
            "token",
            "wizard:merlin",
            "anonymous:c2:x",
            "anonymous::1",
        ] {
            assert!(bad.parse::<Principal>().is_err(), "{bad}");
        }
    }
}
