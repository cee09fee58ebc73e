//! LINSTOR's rule for resource definition and snapshot names, checked
//! before a call is sent: 2 to 48 characters, a letter or `_` first, then
//! letters, digits, `_` and `-`.

use std::fmt;

/// Which kind of name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    ResourceDefinition,
    Snapshot,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::ResourceDefinition => "resource definition",
            NameKind::Snapshot => "snapshot",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {name:?}: {reason}")]
pub struct NameError {
    pub kind: NameKind,
    pub name: String,
    pub reason: &'static str,
}

pub const MIN_NAME_LEN: usize = 2;
pub const MAX_NAME_LEN: usize = 48;

/// Checks `name` against LINSTOR's naming rule.
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), NameError> {
    let refuse = |reason| {
        Err(NameError {
            kind,
            name: name.to_owned(),
            reason,
        })
    };
    let len = name.chars().count();
    if len < MIN_NAME_LEN {
        return refuse("shorter than 2 characters");
    }
    if len > MAX_NAME_LEN {
        return refuse("longer than 48 characters");
    }
    let mut chars = name.chars();
    if !chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
    {
        return refuse("must start with a letter or '_'");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return refuse("only letters, digits, '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_linstor_names() {
        for ok in [
            "ab",
            "_x",
            "pvc-win2019-app-disk0",
            "test-420570c7-1756882765",
            &"a".repeat(48),
        ] {
            assert_eq!(validate_name(NameKind::Snapshot, ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_what_linstor_refuses() {
        for bad in [
            "",
            "a",
            "1abc",
            "-abc",
            "snap shot",
            "snap.1",
            "snäp",
            &"a".repeat(49),
        ] {
            let err = validate_name(NameKind::ResourceDefinition, bad).unwrap_err();
            assert_eq!(err.kind, NameKind::ResourceDefinition);
        }
    }
}
