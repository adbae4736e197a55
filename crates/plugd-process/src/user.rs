//! [`PluginUser`]: the user plugin processes run as when plugd runs as root.

use std::path::PathBuf;

use nix::unistd::{Uid, User};

/// The user plugin processes run as (`--plugin-user`): its uid, its primary group, no
/// supplementary groups, and its home folder as `HOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginUser {
    /// The user name (`USER`).
    pub name: String,
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// The home folder (`HOME`).
    pub home: PathBuf,
}

/// Why [`PluginUser::lookup`] refused a user. The messages leave the name out (the caller shows it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginUserError {
    /// No user has this name, nor this uid.
    #[error("no such user")]
    NoSuchUser {
        /// The name (or uid) as given.
        name: String,
    },
    /// The user database could not be read.
    #[error("cannot look the user up: {reason}")]
    Lookup {
        /// The name (or uid) as given.
        name: String,
        /// What the system said.
        reason: String,
    },
    /// plugd is not root, so it cannot run processes as another user.
    #[error("plugd must run as root to run plugins as another user (it runs as uid {euid})")]
    NotRoot {
        /// The name (or uid) as given.
        name: String,
        /// The effective uid plugd runs as.
        euid: u32,
    },
}

impl PluginUser {
    /// Looks up the user `name` (or a numeric uid). Only root can run processes as another user,
    /// so a plugd that is not root is refused; the error says why, without the name.
    pub fn lookup(name: &str) -> Result<PluginUser, PluginUserError> {
        let user = match User::from_name(name) {
            Ok(Some(user)) => user,
            Ok(None) => match name.parse::<u32>().ok().map(|uid| User::from_uid(Uid::from_raw(uid))) {
                Some(Ok(Some(user))) => user,
                _ => return Err(PluginUserError::NoSuchUser { name: name.to_owned() }),
            },
            Err(e) => return Err(PluginUserError::Lookup { name: name.to_owned(), reason: e.to_string() }),
        };
        let me = nix::unistd::geteuid();
        if !me.is_root() {
            return Err(PluginUserError::NotRoot { name: name.to_owned(), euid: me.as_raw() });
        }
        Ok(PluginUser { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw(), home: user.dir })
    }

    /// `env` with `HOME`, `USER` and `LOGNAME` those of this user.
    pub(crate) fn apply_env(&self, env: &mut Vec<(String, String)>) {
        env.retain(|(key, _)| !matches!(key.as_str(), "HOME" | "USER" | "LOGNAME"));
        env.push(("HOME".to_owned(), self.home.display().to_string()));
        env.push(("USER".to_owned(), self.name.clone()));
        env.push(("LOGNAME".to_owned(), self.name.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up_by_name_or_uid() {
        let missing = PluginUser::lookup("no-such-user-here").unwrap_err();
        assert_eq!(missing, PluginUserError::NoSuchUser { name: "no-such-user-here".into() });
        assert_eq!(missing.to_string(), "no such user");
        if nix::unistd::geteuid().is_root() {
            let root = PluginUser::lookup("root").unwrap();
            assert_eq!((root.uid, root.gid), (0, 0));
            assert_eq!(PluginUser::lookup("0").unwrap().name, "root");
        } else {
            assert!(PluginUser::lookup("root").unwrap_err().to_string().starts_with("plugd must run as root"));
        }
    }
}
