//! The `gitlab-pipeline` plugin: EMPTY triggers a pipeline, POLL watches it, SUCCESS outputs its tag.
//! The pipeline id lives in storage, so a restarted `plugd serve` resumes watching the same pipeline.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::{phase, Client, Phase, RetryPolicy};
use crate::trace::{pipeline_tag, tag_regex, DEFAULT_TAG_REGEX};

fn default_timeout() -> u64 {
    1800
}

fn default_poll_interval() -> u64 {
    10
}

fn default_ref() -> String {
    "main".into()
}

/// Inputs of `gitlab-pipeline`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Inputs {
    /// The GitLab host, e.g. `https://gitlab.example.com` [default: `GITLAB_URL` of the
    /// environment]. The token (`GITLAB_TOKEN`) is only sent to the host `GITLAB_URL` names.
    #[serde(default)]
    pub url: Option<String>,
    /// The project's path (`group/project`) or id.
    pub project: String,
    /// The ref to build.
    #[serde(rename = "ref", default = "default_ref")]
    pub git_ref: String,
    /// Pipeline variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The job whose log names the image tag (default: any job, newest first).
    #[serde(default)]
    pub job: Option<String>,
    /// How the tag is found in the log, anchored at line start (default: docker and buildkit lines).
    #[serde(default)]
    pub tag_regex: Option<String>,
    /// Seconds before giving up on the pipeline.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Seconds between two reads of the pipeline.
    #[serde(default = "default_poll_interval")]
    #[schemars(range(min = 1))]
    pub poll_interval: u64,
}

/// Outputs of `gitlab-pipeline`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Outputs {
    /// The pipeline.
    pub pipeline_id: u64,
    /// Its page.
    pub web_url: String,
    /// Its final status.
    pub status: String,
    /// The image tag from the job log.
    pub image_tag: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Watching {
    pipeline_id: u64,
    web_url: String,
    started_at: u64,
}

/// `gitlab-pipeline` 1.0.0.
#[derive(Debug, Clone, Copy)]
pub struct GitlabPipeline;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The GitLab to talk to: `input` if given, else `GITLAB_URL`. The token belongs to the GitLab of
/// `GITLAB_URL`, so a caller of `plugd serve` cannot send it to a host of its choosing.
fn gitlab_url(input: Option<&str>, configured: Option<String>) -> Result<String, String> {
    let Some(configured) = configured.filter(|c| !c.is_empty()) else {
        return Err("GITLAB_URL is not set: set it to the GitLab that GITLAB_TOKEN belongs to".into());
    };
    let parse = |url: &str, what: &str| {
        reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| format!("{what} {url:?} is not an http(s) URL"))
    };
    let origin = parse(&configured, "GITLAB_URL")?.origin();
    let Some(input) = input else { return Ok(configured) };
    let asked = parse(input, "url")?;
    if asked.origin() != origin {
        return Err(format!(
            "url {} is not the GitLab of GITLAB_URL ({}): GITLAB_TOKEN is sent there only",
            asked.origin().ascii_serialization(),
            origin.ascii_serialization()
        ));
    }
    Ok(input.to_owned())
}

impl Plugin for GitlabPipeline {
    type Inputs = Inputs;
    type ContextInputs = Empty;
    type Outputs = Outputs;
    const META: Meta = Meta::new("gitlab-pipeline", "1.0.0")
        .description("Triggers a GitLab pipeline, watches it, and outputs the image tag its job log names.");

    async fn execute(&self, inputs: Inputs, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        let token = std::env::var("GITLAB_TOKEN").map_err(|_| PluginError::failed("GITLAB_TOKEN is not set"))?;
        let url = gitlab_url(inputs.url.as_deref(), std::env::var("GITLAB_URL").ok()).map_err(PluginError::failed)?;
        let regex = tag_regex(inputs.tag_regex.as_deref().unwrap_or(DEFAULT_TAG_REGEX)).map_err(PluginError::failed)?;
        // One HTTP client for every execute: a poll reuses its connection instead of a new TLS handshake.
        static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
        let policy = RetryPolicy::default();
        let http = match HTTP.get() {
            Some(http) => http.clone(),
            None => {
                let http = Client::http(&policy).map_err(PluginError::failed)?;
                HTTP.get_or_init(|| http).clone()
            }
        };
        let client = Client::with_http(http, &url, &token, policy);
        let poll = Outcome::Poll(Duration::from_secs(inputs.poll_interval));
        let Some(watching) = ctx.storage_get::<Watching>("watching")? else {
            let variables: Vec<(String, String)> = inputs.variables.clone().into_iter().collect();
            let pipeline = client
                .create_pipeline(&inputs.project, &inputs.git_ref, &variables)
                .await
                .map_err(PluginError::failed)?;
            tracing::info!(pipeline = pipeline.id, "triggered {}", pipeline.web_url);
            let watching = Watching { pipeline_id: pipeline.id, web_url: pipeline.web_url, started_at: now() };
            ctx.storage_set("watching", &watching)?;
            return Ok(poll);
        };
        let pipeline = client.pipeline(&inputs.project, watching.pipeline_id).await.map_err(PluginError::failed)?;
        match phase(&pipeline.status) {
            Phase::Running if now().saturating_sub(watching.started_at) >= inputs.timeout => Err(PluginError::failed(
                format!("pipeline {} still {} after {}s", pipeline.id, pipeline.status, inputs.timeout),
            )),
            Phase::Running => Ok(poll),
            Phase::Blocked => {
                Err(PluginError::failed(format!("pipeline {} is blocked ({})", pipeline.id, pipeline.status)))
            }
            Phase::Finished if pipeline.status != "success" => {
                Err(PluginError::failed(format!("pipeline {} {}: {}", pipeline.id, pipeline.status, watching.web_url)))
            }
            Phase::Finished => {
                let tag = pipeline_tag(&client, &inputs.project, pipeline.id, inputs.job.as_deref(), &regex)
                    .await
                    .map_err(PluginError::failed)?;
                if let Some(tag) = tag {
                    ctx.set_outputs(&Outputs {
                        pipeline_id: pipeline.id,
                        web_url: watching.web_url,
                        status: pipeline.status,
                        image_tag: tag,
                    })?;
                    return Ok(Outcome::Success);
                }
                Err(PluginError::failed(format!(
                    "pipeline {} succeeded but no job log names an image tag",
                    pipeline.id
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::gitlab_url;

    #[test]
    fn the_token_goes_only_to_the_gitlab_of_gitlab_url() {
        let configured = || Some("https://gitlab.example.com".to_owned());
        assert_eq!(gitlab_url(None, configured()).unwrap(), "https://gitlab.example.com");
        assert_eq!(
            gitlab_url(Some("https://gitlab.example.com/"), configured()).unwrap(),
            "https://gitlab.example.com/"
        );
        assert_eq!(
            gitlab_url(Some("http://gitlab.example.com"), configured()).unwrap_err(),
            "url http://gitlab.example.com is not the GitLab of GITLAB_URL (https://gitlab.example.com): \
             GITLAB_TOKEN is sent there only"
        );
        assert!(gitlab_url(Some("https://evil.example/x"), configured()).is_err());
        assert_eq!(
            gitlab_url(Some("https://gitlab.example.com"), None).unwrap_err(),
            "GITLAB_URL is not set: set it to the GitLab that GITLAB_TOKEN belongs to"
        );
        assert_eq!(gitlab_url(None, Some("gitlab".into())).unwrap_err(), "GITLAB_URL \"gitlab\" is not an http(s) URL");
    }
}
