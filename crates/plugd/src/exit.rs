//! Exit codes of the `plugd` command line.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | the invocation ended in SUCCESS (or the command did its job) |
//! | 1 | the invocation ended in FAIL, or an operational error (a port could not be bound, ...) |
//! | 2 | usage or validation error: unknown plugin, version or flag, bad input, bad registry |
//! | 3 | `plugd hooks run`: a pre_build/pre_release hook cancelled the release |
//! | 124 | `--timeout` expired before the invocation ended (as coreutils' `timeout`) |

/// SUCCESS, or a command that did its job.
pub const SUCCESS: u8 = 0;
/// The invocation ended in FAIL, or an operational error.
pub const FAILED: u8 = 1;
/// A usage or validation error: nothing ran.
pub const USAGE: u8 = 2;
/// A release hook cancelled the release.
pub const CANCELLED: u8 = 3;
/// The `--timeout` expired.
pub const TIMEOUT: u8 = 124;
