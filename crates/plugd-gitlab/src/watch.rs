//! Trigger, watch and read one pipeline per project, all projects at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::sync::Semaphore;

use crate::client::{phase, Client, GitlabError, Phase};
use crate::trace::pipeline_tag;

/// What to run, and how patiently.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The ref to build.
    pub git_ref: String,
    /// Pipeline variables.
    pub variables: Vec<(String, String)>,
    /// The job whose log names the tag; `None` reads the jobs newest first until one does.
    pub job: Option<String>,
    /// How the tag is found in the log.
    pub tag_regex: Regex,
    /// Requests in flight at once, across all projects.
    pub concurrency: usize,
    /// Time between two reads of a pipeline.
    pub poll_interval: Duration,
    /// Overall limit, from the start.
    pub timeout: Duration,
}

/// Progress of one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Its pipeline was created.
    Triggered {
        /// The project.
        project: String,
        /// The pipeline id.
        pipeline: u64,
        /// Its page.
        web_url: String,
    },
    /// Its pipeline changed status.
    Status {
        /// The project.
        project: String,
        /// The new status.
        status: String,
    },
    /// It is done (see [`Outcome`]).
    Finished(Outcome),
}

/// How one project ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The project, as named on the command line.
    pub project: String,
    /// Its pipeline, when one was created.
    pub pipeline_id: Option<u64>,
    /// The pipeline's page.
    pub web_url: String,
    /// The last status seen (`timeout` and `error` are plugd's own).
    pub status: String,
    /// The image tag, when found.
    pub tag: Option<String>,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Outcome {
    /// Succeeded with a tag.
    pub fn ok(&self) -> bool {
        self.status == "success" && self.tag.is_some() && self.error.is_none()
    }
}

struct Watch<'a> {
    client: &'a Client,
    options: &'a WatchOptions,
    slots: &'a Semaphore,
    deadline: Instant,
}

impl Watch<'_> {
    /// Runs `call` holding one of the concurrency slots, and no later than the overall deadline.
    async fn limited<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, GitlabError>>,
    ) -> Result<T, GitlabError> {
        let limited = async {
            let _slot = self.slots.acquire().await.expect("the semaphore is never closed");
            call.await
        };
        tokio::time::timeout_at(self.deadline.into(), limited).await.unwrap_or_else(|_| Err(GitlabError::timeout()))
    }

    async fn run(&self, project: &str, path: &str, events: &(dyn Fn(Event) + Sync)) -> Outcome {
        let started = Instant::now();
        let mut outcome = Outcome {
            project: project.to_owned(),
            pipeline_id: None,
            web_url: String::new(),
            status: "error".into(),
            tag: None,
            error: None,
            elapsed: Duration::ZERO,
        };
        self.follow(project, path, events, &mut outcome).await;
        outcome.elapsed = started.elapsed();
        outcome
    }

    /// Triggers, watches and reads one pipeline, filling `outcome` as it goes.
    async fn follow(&self, project: &str, path: &str, events: &(dyn Fn(Event) + Sync), outcome: &mut Outcome) {
        let created =
            self.limited(self.client.create_pipeline(path, &self.options.git_ref, &self.options.variables)).await;
        let mut pipeline = match created {
            Ok(pipeline) => pipeline,
            Err(e) => {
                outcome.error = Some(e.to_string());
                return;
            }
        };
        outcome.pipeline_id = Some(pipeline.id);
        outcome.web_url = pipeline.web_url.clone();
        events(Event::Triggered {
            project: project.to_owned(),
            pipeline: pipeline.id,
            web_url: pipeline.web_url.clone(),
        });
        events(Event::Status { project: project.to_owned(), status: pipeline.status.clone() });
        let timed_out = |outcome: &mut Outcome, status: &str| {
            outcome.status = "timeout".into();
            outcome.error = Some(format!("still {status} when the timeout expired"));
        };
        while phase(&pipeline.status) == Phase::Running {
            if Instant::now() >= self.deadline {
                return timed_out(outcome, &pipeline.status);
            }
            // One last read at the deadline, rather than giving up a poll early.
            let jitter = self.options.poll_interval.mul_f64(rand::random_range(0.0..0.05));
            let wake = (Instant::now() + self.options.poll_interval + jitter).min(self.deadline);
            tokio::time::sleep_until(wake.into()).await;
            match self.limited(self.client.pipeline(path, pipeline.id)).await {
                Ok(next) => {
                    if next.status != pipeline.status {
                        events(Event::Status { project: project.to_owned(), status: next.status.clone() });
                    }
                    pipeline = next;
                }
                Err(e) if e.is_timeout() => return timed_out(outcome, &pipeline.status),
                Err(e) => {
                    outcome.status = pipeline.status.clone();
                    outcome.error = Some(e.to_string());
                    return;
                }
            }
        }
        outcome.status = pipeline.status.clone();
        match phase(&pipeline.status) {
            Phase::Blocked => {
                outcome.error =
                    Some(format!("pipeline blocked ({}): it waits for a manual action or a schedule", pipeline.status))
            }
            _ if pipeline.status != "success" => outcome.error = Some(format!("pipeline {}", pipeline.status)),
            _ => {
                let options = self.options;
                let tag = pipeline_tag(self.client, path, pipeline.id, options.job.as_deref(), &options.tag_regex);
                match self.limited(tag).await {
                    Ok(Some(tag)) => outcome.tag = Some(tag),
                    Ok(None) => outcome.error = Some("no image tag found in the job log".into()),
                    Err(e) => outcome.error = Some(e.to_string()),
                }
            }
        }
    }
}

/// Runs every `(name, full path)` project at once; `events` hears each step as it happens.
pub async fn run_all(
    client: &Client,
    projects: &[(String, String)],
    options: &WatchOptions,
    events: Arc<dyn Fn(Event) + Send + Sync>,
) -> Vec<Outcome> {
    let slots = Semaphore::new(options.concurrency.max(1));
    let watch = Watch { client, options, slots: &slots, deadline: Instant::now() + options.timeout };
    let runs = projects.iter().map(|(name, path)| {
        let events = events.clone();
        let watch = &watch;
        async move {
            let outcome = watch.run(name, path, &*events).await;
            events(Event::Finished(outcome.clone()));
            outcome
        }
    });
    futures_util::future::join_all(runs).await
}
