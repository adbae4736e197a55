//! `approval`: waits for a person (or a system) to approve through a callback URL.

use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Inputs of `approval`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Inputs {
    /// What is being approved, shown to whoever approves.
    #[serde(default)]
    pub subject: Option<String>,
}

/// Outputs of `approval`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Outputs {
    /// Where to POST the decision: `{"approved": true}`, or `{"approved": false, "reason": "..."}`.
    pub callback_url: String,
    /// Whether it was approved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    /// Who approved, when the callback says (`"by": "alice"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

/// What the callback body may say.
#[derive(Debug, Deserialize)]
struct Decision {
    #[serde(default)]
    approved: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

/// `approval` 1.0.0.
#[derive(Debug, Clone, Copy)]
pub struct Approval;

impl Plugin for Approval {
    type Inputs = Inputs;
    type ContextInputs = Empty;
    type Outputs = Outputs;
    const META: Meta = Meta::new("approval", "1.0.0").description(
        "Waits for a callback: succeeds when its JSON says {\"approved\": true}, fails with the reason otherwise.",
    );

    async fn execute(&self, inputs: Inputs, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        let Some(callback) = ctx.callback.clone() else {
            let prepared = ctx.prepare_callback_with_example(&serde_json::json!({"approved": true}))?;
            ctx.storage_set("callback_id", &prepared.id)?;
            if let Some(subject) = inputs.subject {
                ctx.storage_set("subject", &subject)?;
            }
            ctx.set_outputs(&Outputs { callback_url: prepared.url, approved: None, approved_by: None })?;
            return Ok(Outcome::Callback);
        };
        let expected: Option<String> = ctx.storage_get("callback_id")?;
        if expected.as_deref() != Some(callback.id.as_str()) {
            // Not the callback this invocation handed out: keep waiting for the right one.
            return Ok(Outcome::Callback);
        }
        let decision: Decision = serde_json::from_value(callback.data).map_err(|e| {
            PluginError::failed(format!("invalid decision: {e}; expected {{\"approved\": true|false}}"))
        })?;
        ctx.outputs.insert("approved".into(), decision.approved.into());
        if let Some(by) = decision.by {
            ctx.outputs.insert("approved_by".into(), by.into());
        }
        if decision.approved {
            Ok(Outcome::Success)
        } else {
            Err(PluginError::failed(format!(
                "not approved: {}",
                decision.reason.as_deref().unwrap_or("no reason given")
            )))
        }
    }
}
