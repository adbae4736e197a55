//! Release hooks: a `plugd-hooks.yaml` declares `pre_build`, `pre_release` and `post_release`
//! stages, each a list of steps that run plugins with templated inputs, with the error semantics of
//! rez's release hooks (`cancel_on_error`, `stop_on_error`).
//!
//! [`HooksFile::load`] parses and checks the file against a registry (every error names the file and
//! line); [`run_stage`] runs a stage with the local runner.

mod config;
mod run;
mod template;

pub use config::{
    check_stage, Defaults, HooksError, HooksFile, Inputs, PlannedStep, Stage, Step, UnknownStageError, STAGES,
};
pub use run::{run_stage, StageReport, StepReport, StepState};
pub use template::{RenderError, Renderer, Scope, TemplateValues};
