/*!
GitLab batch CI for plugd: trigger one pipeline per project, watch them all at once, read each
pipeline's job log for the docker image tag, and write `deploy.yaml` (`plugd gitlab run-ci`); protect
and unprotect branches; and the `gitlab-pipeline` plugin, the same logic one POLL at a time.

- [`client`] is the REST client (auth, timeouts, 429 and 5xx retries, pagination).
- [`trace`] cleans job logs of ANSI codes and section markers, and finds the tag.
- [`watch`] triggers, watches and reads many projects at once.
- [`config`] reads `plugd-gitlab.yaml`.
- `fake` (feature `fake`) is a fake GitLab server built from the API contract's bodies, for tests
  and benchmarks.
*/
#![deny(missing_docs)]

pub mod client;
pub mod config;
#[cfg(feature = "fake")]
pub mod fake;
pub mod plugin;
pub mod trace;
pub mod watch;

pub use plugin::GitlabPipeline;
