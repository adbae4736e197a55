//! `email`: sends a message over SMTP (the rez `emailer` hook), to a list of recipients or to those
//! a rules file picks for the package.

use std::collections::BTreeSet;
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::secret::{redacted, Secret};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plain text (a local relay).
    None,
    /// Upgrade with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

fn default_port() -> u16 {
    25
}

fn default_timeout() -> u64 {
    30
}

/// Inputs of `email`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Inputs {
    /// The SMTP server.
    pub host: String,
    /// Its port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Connection security.
    #[serde(default)]
    pub tls: Tls,
    /// The environment variable holding the SMTP user name, if the server wants one.
    #[serde(default)]
    pub username_env: Option<String>,
    /// The environment variable holding the SMTP password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the SMTP password (instead of `password_env`).
    #[serde(default)]
    pub password_file: Option<String>,
    /// The From address.
    pub sender: String,
    /// Recipient addresses: a list, or one address.
    #[serde(default)]
    pub recipients: Recipients,
    /// A rules file (YAML, the rez emailer format): recipients chosen by filters on `package`.
    #[serde(default)]
    pub recipients_file: Option<String>,
    /// Package attributes the rules filter on (name, version, ...).
    #[serde(default)]
    pub package: Map<String, Value>,
    /// The subject.
    pub subject: String,
    /// The body (plain text).
    pub body: String,
    /// Seconds allowed for the whole delivery.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

/// Recipients as a list or a single address (rez accepts both).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Recipients {
    /// Several addresses.
    List(Vec<String>),
    /// One address.
    One(String),
}

impl Default for Recipients {
    fn default() -> Recipients {
        Recipients::List(Vec::new())
    }
}

/// Outputs of `email`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Outputs {
    /// Who the message went to, sorted.
    pub recipients: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Rules {
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    #[serde(default)]
    filters: Map<String, Value>,
    recipients: Vec<String>,
}

/// The rez rules: every filter of a rule must match (a list: the value is in it; null: the attribute
/// exists; anything else: equality); the recipients of all matching rules, sorted and deduplicated.
pub fn recipients_from_rules(rules_yaml: &str, package: &Map<String, Value>) -> Result<Vec<String>, String> {
    let rules: Rules = serde_yaml_ng::from_str(rules_yaml).map_err(|e| {
        // An error at the end of the input (an unclosed bracket) is placed on the line after the
        // last: show the last line with text instead; the position is not repeated.
        let last =
            rules_yaml.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).last().map_or(1, |(i, _)| i + 1);
        let line = e.location().map(|l| format!("line {}: ", l.line().min(last))).unwrap_or_default();
        let message = e.to_string();
        format!("{line}{}", message.split(" at line ").next().unwrap_or(&message))
    })?;
    let mut found = BTreeSet::new();
    for rule in rules.rules {
        // Values from `--set` are strings: compare scalars by their text.
        let same = |a: &Value, b: &Value| a == b || scalar_text(a).is_some_and(|t| Some(t) == scalar_text(b));
        let matches = rule.filters.iter().all(|(attribute, wanted)| match (package.get(attribute), wanted) {
            (None, _) => false,
            (Some(_), Value::Null) => true,
            (Some(value), Value::Array(options)) => options.iter().any(|o| same(value, o)),
            (Some(value), wanted) => same(value, wanted),
        });
        if matches {
            found.extend(rule.recipients);
        }
    }
    Ok(found.into_iter().collect())
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `email` 1.0.0.
#[derive(Debug, Clone, Copy)]
pub struct Email;

impl Plugin for Email {
    type Inputs = Inputs;
    type ContextInputs = Empty;
    type Outputs = Outputs;
    const META: Meta = Meta::new("email", "1.0.0").description(
        "Sends an email over SMTP to a list of recipients, or to those a rules file picks for the package.",
    );

    async fn execute(&self, inputs: Inputs, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        let mut recipients: BTreeSet<String> = match &inputs.recipients {
            Recipients::List(list) => list.iter().cloned().collect(),
            Recipients::One(one) => BTreeSet::from([one.clone()]),
        };
        if let Some(path) = &inputs.recipients_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| PluginError::failed(format!("recipients_file {path}: {e}")))?;
            let picked = recipients_from_rules(&text, &inputs.package)
                .map_err(|e| PluginError::failed(format!("recipients_file {path}: {e}")))?;
            recipients.extend(picked);
        }
        let recipients: Vec<String> = recipients.into_iter().collect();
        if recipients.is_empty() {
            tracing::warn!("no recipients: nothing sent");
            ctx.set_outputs(&Outputs { recipients })?;
            return Ok(Outcome::Success);
        }
        let parse = |address: &str| {
            address.parse::<Mailbox>().map_err(|e| PluginError::failed(format!("invalid address {address:?}: {e}")))
        };
        let mut message = Message::builder().from(parse(&inputs.sender)?).subject(inputs.subject.clone());
        for recipient in &recipients {
            message = message.to(parse(recipient)?);
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(inputs.body.clone())
            .map_err(|e| PluginError::failed(format!("cannot build the message: {e}")))?;

        let password = Secret::load(inputs.password_env.as_deref(), inputs.password_file.as_deref(), "SMTP password")
            .map_err(PluginError::failed)?;
        let username = Secret::load(inputs.username_env.as_deref(), None, "SMTP user").map_err(PluginError::failed)?;
        let builder = match inputs.tls {
            Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&inputs.host),
            Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&inputs.host)?,
            Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&inputs.host)?,
        };
        let mut builder = builder.port(inputs.port).timeout(Some(Duration::from_secs(inputs.timeout)));
        match (&username, &password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.expose().to_owned(), password.expose().to_owned()));
            }
            (None, None) => {}
            _ => return Err(PluginError::failed("SMTP credentials need both username_env and a password")),
        }
        let transport = builder.build();
        tracing::info!("sending email to {}", recipients.join(", "));
        let sent = tokio::time::timeout(Duration::from_secs(inputs.timeout), transport.send(message)).await;
        match sent {
            Ok(Ok(_)) => {
                ctx.set_outputs(&Outputs { recipients })?;
                Ok(Outcome::Success)
            }
            Ok(Err(e)) => Err(PluginError::failed(redacted(password.as_ref(), format!("email delivery failed: {e}")))),
            Err(_) => Err(PluginError::failed(format!("email delivery timed out after {}s", inputs.timeout))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_pick_recipients_as_rez_does() {
        let rules = "rules:\n- filters:\n    name: [maya_utils, maya_tools]\n  recipients: [maya@x.com]\n\
                     - filters:\n    package_type: external\n  recipients: [ext@x.com]\n\
                     - filters:\n    name: maya_utils\n    beta:\n  recipients: [beta@x.com]\n\
                     - recipients: [all@x.com, maya@x.com]\n";
        let package = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            recipients_from_rules(rules, &package(json!({"name": "maya_utils"}))).unwrap(),
            ["all@x.com", "maya@x.com"]
        );
        assert_eq!(
            recipients_from_rules(
                rules,
                &package(json!({"name": "maya_utils", "beta": false, "package_type": "external"}))
            )
            .unwrap(),
            ["all@x.com", "beta@x.com", "ext@x.com", "maya@x.com"]
        );
        assert_eq!(
            recipients_from_rules(rules, &package(json!({"name": "other"}))).unwrap(),
            ["all@x.com", "maya@x.com"]
        );
        let typed = "rules:\n- filters: {beta: true, version: 1.0}\n  recipients: [b@x.com]\n";
        let strings = package(json!({"beta": "true", "version": "1.0"}));
        assert_eq!(recipients_from_rules(typed, &strings).unwrap(), ["b@x.com"]);
        assert!(recipients_from_rules("rules: {}", &Map::new()).unwrap_err().contains("invalid type"));
        // An unclosed bracket is reported on the last line, not on the one after it.
        assert_eq!(
            recipients_from_rules("rules:\n- recipients: [a@x.com\n\n", &Map::new()).unwrap_err(),
            "line 2: did not find expected ',' or ']'"
        );
    }
}
