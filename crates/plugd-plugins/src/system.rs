//! Facts about the machine and user plugd runs as, shared by the release-hook plugins and templates.

/// The user running plugd, as Python's `getpass.getuser()` (rez's `system.user`) finds it: the first
/// non-empty of `$LOGNAME`, `$USER`, `$LNAME` and `$USERNAME`, else the name of the account of the
/// real user id (containers and CI jobs often set none of the variables), else empty.
pub fn user() -> String {
    for key in ["LOGNAME", "USER", "LNAME", "USERNAME"] {
        if let Some(user) = std::env::var(key).ok().filter(|u| !u.is_empty()) {
            return user;
        }
    }
    account_name().unwrap_or_default()
}

#[cfg(unix)]
fn account_name() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|user| user.name)
}

#[cfg(not(unix))]
fn account_name() -> Option<String> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn the_account_name_is_the_fallback() {
        let expected = std::process::Command::new("id").arg("-un").output().unwrap();
        let expected = String::from_utf8(expected.stdout).unwrap();
        assert_eq!(super::account_name().as_deref(), Some(expected.trim()));
    }
}
