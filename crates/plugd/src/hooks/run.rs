//! Running a stage: each step's plugin through the local runner, with rez's error semantics.

use std::time::{Duration, Instant};

use plugd_core::Invocation;
use plugd_sdk::State;
use serde_json::{json, Map, Value};

use super::template::{Scope, TemplateValues};
use super::{HooksFile, Stage, Step};
use crate::local::{LocalRunner, RunObserver};

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Its plugin succeeded.
    Success,
    /// Its plugin failed, or it could not start.
    Failed,
    /// An earlier failure stopped the stage (or cancelled the release) first.
    Skipped,
}

impl StepState {
    /// `SUCCESS`, `FAIL` or `SKIPPED`.
    pub fn label(self) -> &'static str {
        match self {
            StepState::Success => "SUCCESS",
            StepState::Failed => "FAIL",
            StepState::Skipped => "SKIPPED",
        }
    }
}

/// One step's result.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step's name.
    pub name: String,
    /// Its plugin, as resolved (`name@version`) or as written.
    pub plugin: String,
    /// How it ended.
    pub state: StepState,
    /// How long it ran.
    pub duration: Duration,
    /// Why it failed.
    pub error: Option<String>,
    /// Its outputs.
    pub outputs: Map<String, Value>,
}

/// A stage's result.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The stage.
    pub stage: String,
    /// Each step, in order.
    pub steps: Vec<StepReport>,
    /// The step that cancelled the release, and why.
    pub cancelled_by: Option<(String, String)>,
}

impl StageReport {
    /// 0 when every step succeeded, 3 when the release was cancelled, 1 for other failures.
    pub fn exit_code(&self) -> u8 {
        if self.cancelled_by.is_some() {
            crate::exit::CANCELLED
        } else if self.steps.iter().any(|s| s.state == StepState::Failed) {
            crate::exit::FAILED
        } else {
            crate::exit::SUCCESS
        }
    }
}

/// Runs step `index` of `stage` to its end; `Err` when it failed, with the reason.
async fn run_step(
    file: &HooksFile,
    stage: &Stage,
    index: usize,
    values: &TemplateValues,
    runner: &LocalRunner,
    observer: &mut dyn RunObserver,
) -> (String, Result<Map<String, Value>, String>) {
    let step = &stage.steps[index];
    let plugin = match runner.executor().registry().get_spec(&step.uses) {
        Ok(plugin) => plugin,
        Err(e) => return (step.uses.clone(), Err(e.to_string())),
    };
    let id = plugin.id();
    let (inputs, context) = match file.render_step(stage, index, values, Scope::Run) {
        Ok(rendered) => rendered,
        Err(e) => return (id, Err(format!("template error: {e}"))),
    };
    let (inputs, context) = (Value::Object(inputs), Value::Object(context));
    let mut invocation = Invocation::new(&plugin.info.name, &plugin.info.version, inputs, context);
    if let Err(e) = runner.run(&mut invocation, observer).await {
        return (id, Err(e.to_string()));
    }
    match invocation.state {
        State::Success => (id, Ok(invocation.outputs)),
        _ => (id, Err(invocation.err.unwrap_or_else(|| format!("ended in state {}", invocation.state)))),
    }
}

/// Runs the steps of `stage`; `announce` is told before each step starts.
pub async fn run_stage(
    file: &HooksFile,
    stage: &str,
    mut values: TemplateValues,
    runner: &LocalRunner,
    observer: &mut dyn RunObserver,
    announce: &mut dyn FnMut(&Step),
) -> StageReport {
    let mut report = StageReport { stage: stage.to_owned(), steps: Vec::new(), cancelled_by: None };
    let Some(steps) = file.stage(stage) else { return report };
    let mut stopped = false;
    let mut cancels: Vec<(String, String)> = Vec::new();
    for (index, step) in steps.steps.iter().enumerate() {
        if stopped {
            let plugin =
                runner.executor().registry().get_spec(&step.uses).map_or_else(|_| step.uses.clone(), |p| p.id());
            report.steps.push(StepReport {
                name: step.name.clone(),
                plugin,
                state: StepState::Skipped,
                duration: Duration::ZERO,
                error: None,
                outputs: Map::new(),
            });
            continue;
        }
        announce(step);
        let started = Instant::now();
        let (plugin, result) = run_step(file, steps, index, &values, runner, observer).await;
        let duration = started.elapsed();
        match result {
            Ok(outputs) => {
                values.steps.insert(step.id.clone(), json!({"outputs": outputs, "state": "SUCCESS", "err": null}));
                report.steps.push(StepReport {
                    name: step.name.clone(),
                    plugin,
                    state: StepState::Success,
                    duration,
                    error: None,
                    outputs,
                });
            }
            Err(error) => {
                values.steps.insert(step.id.clone(), json!({"outputs": {}, "state": "FAIL", "err": error}));
                // As in rez, the remaining steps still run unless stop_on_error, and the release is
                // cancelled at the end of the stage.
                if step.cancel_on_error {
                    cancels.push((step.name.clone(), error.clone()));
                }
                stopped = step.stop_on_error;
                report.steps.push(StepReport {
                    name: step.name.clone(),
                    plugin,
                    state: StepState::Failed,
                    duration,
                    error: Some(error),
                    outputs: Map::new(),
                });
            }
        }
    }
    if let Some((first, _)) = cancels.first() {
        let reasons: Vec<String> = cancels.iter().map(|(name, error)| format!("{name}: {error}")).collect();
        let reason = if cancels.len() == 1 { cancels[0].1.clone() } else { reasons.join("; ") };
        report.cancelled_by = Some((first.clone(), reason));
    }
    report
}
