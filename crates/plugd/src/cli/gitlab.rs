//! `plugd gitlab run-ci | protect | unprotect`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use plugd_gitlab::client::{Client, Protection, RetryPolicy};
use plugd_gitlab::config::GitlabConfig;
use plugd_gitlab::trace::{tag_regex, DEFAULT_TAG_REGEX};
use plugd_gitlab::watch::{run_all, Event, Outcome, WatchOptions};
use serde_json::json;

use super::{parse_duration, runtime, CliError, CliResult};

/// Arguments of `plugd gitlab`.
#[derive(Debug, Args)]
pub(crate) struct GitlabArgs {
    #[command(subcommand)]
    command: GitlabCommand,
}

#[derive(Debug, Args)]
struct Common {
    /// Projects, comma-separated (names get the config's namespace; `group/name` is taken as is).
    #[arg(long = "project", value_name = "A,B,C")]
    projects: Vec<String>,
    /// A group of projects from the config (`all`: every project of every group).
    #[arg(long = "group", value_name = "NAME")]
    groups: Vec<String>,
    /// The config file [default: ./plugd-gitlab.yaml when it exists].
    #[arg(long)]
    config: Option<PathBuf>,
    /// The GitLab URL (overrides the config's).
    #[arg(long)]
    url: Option<String>,
    /// A file holding the token [default: the GITLAB_TOKEN environment variable].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Seconds one request may take before it is retried.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum GitlabCommand {
    /// Trigger a pipeline per project, watch them, read each image tag, write deploy.yaml.
    RunCi {
        #[command(flatten)]
        common: Common,
        /// The ref to build.
        #[arg(long = "ref", default_value = "main")]
        git_ref: String,
        /// A pipeline variable (repeatable; overrides the config's).
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
        /// The job whose log names the image tag [default: any job, newest first].
        #[arg(long)]
        job: Option<String>,
        /// How the tag is found in the log (anchored at line start; a `tag` group wins).
        #[arg(long, default_value = DEFAULT_TAG_REGEX)]
        tag_regex: String,
        /// Write `service: {project: tag}` here (atomically).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Time between two reads of a pipeline.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        poll_interval: Duration,
        /// Give up on pipelines still running after this long.
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
        /// Print one JSON event per line on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Protect a branch: only maintainers push and merge, no force push (a rule that says otherwise
    /// is replaced; one that says so already is left alone).
    Protect {
        #[command(flatten)]
        common: Common,
        /// The branch.
        #[arg(long)]
        branch: String,
    },
    /// Unprotect a branch; not protected: nothing to do.
    Unprotect {
        #[command(flatten)]
        common: Common,
        /// The branch.
        #[arg(long)]
        branch: String,
    },
}

fn usage(message: impl std::fmt::Display) -> CliError {
    CliError::Usage(message.to_string())
}

/// Projects as `(name as given, full path)`.
type Projects = Vec<(String, String)>;

/// The config, the projects, and a client.
fn setup(common: &Common) -> CliResult<(GitlabConfig, Projects, Client)> {
    let (config, found) = GitlabConfig::find(common.config.as_deref()).map_err(usage)?;
    // Without a config file there are no groups, and no URL unless --url gives one: say why.
    let not_found = "./plugd-gitlab.yaml not found (write one, or give --config FILE)";
    if found.is_none() && !common.groups.is_empty() {
        return Err(usage(format!("{not_found}: --group {} needs the groups it declares", common.groups.join(","))));
    }
    let projects = config.resolve(&common.projects, &common.groups).map_err(usage)?;
    let url = common.url.clone().or_else(|| config.url.clone()).ok_or_else(|| match found {
        Some(path) => usage(format!("no GitLab URL: give --url or url: in {}", path.display())),
        None => usage(format!("no GitLab URL: give --url, or url: in a config file; {not_found}")),
    })?;
    let token = match &common.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| usage(format!("--token-file {}: {}", path.display(), e.kind())))?,
        None => std::env::var("GITLAB_TOKEN")
            .map_err(|_| usage("no GitLab token: set GITLAB_TOKEN or give --token-file"))?,
    };
    let policy = RetryPolicy { request_timeout: common.request_timeout, ..RetryPolicy::default() };
    let client = Client::new(&url, &token, policy).map_err(|e| CliError::Failed(anyhow::anyhow!("{e}")))?;
    Ok((config, projects, client))
}

/// How progress is shown: lines in place on a terminal, timestamped lines otherwise, or JSON events.
enum Display {
    Live { bars: BTreeMap<String, ProgressBar>, urls: BTreeMap<String, String> },
    Lines,
    Json,
}

fn timestamp(started: Instant) -> String {
    format!("[{:>7.1}s]", started.elapsed().as_secs_f64())
}

impl Display {
    fn new(projects: &[(String, String)], json: bool) -> Display {
        if json {
            return Display::Json;
        }
        if !std::io::stderr().is_terminal() {
            return Display::Lines;
        }
        let multi = MultiProgress::new();
        let width = projects.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let style = ProgressStyle::with_template(&format!("{{spinner}} {{prefix:{width}}}  {{msg}} [{{elapsed}}]"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = projects
            .iter()
            .map(|(name, _)| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()).with_prefix(name.clone()));
                bar.enable_steady_tick(Duration::from_millis(200));
                bar.set_message("triggering");
                (name.clone(), bar)
            })
            .collect();
        Display::Live { bars, urls: BTreeMap::new() }
    }

    fn show(&mut self, event: &Event, started: Instant) {
        match (self, event) {
            (Display::Json, event) => {
                let value = match event {
                    Event::Triggered { project, pipeline, web_url } => {
                        json!({"event": "triggered", "project": project, "pipeline": pipeline, "web_url": web_url})
                    }
                    Event::Status { project, status } => {
                        json!({"event": "status", "project": project, "status": status})
                    }
                    Event::Finished(o) => json!({"event": "finished", "project": o.project, "status": o.status,
                        "pipeline": o.pipeline_id, "web_url": o.web_url, "tag": o.tag, "error": o.error,
                        "seconds": o.elapsed.as_secs_f64()}),
                };
                let mut value = value;
                value["elapsed"] = json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
                println!("{value}");
            }
            (Display::Lines, Event::Triggered { project, pipeline, web_url }) => {
                eprintln!("{} {project}: pipeline {pipeline} {web_url}", timestamp(started))
            }
            (Display::Lines, Event::Status { project, status }) => {
                eprintln!("{} {project}: {status}", timestamp(started))
            }
            (Display::Lines, Event::Finished(o)) => eprintln!(
                "{} {}: {} {}",
                timestamp(started),
                o.project,
                o.status,
                o.tag.as_deref().or(o.error.as_deref()).unwrap_or("")
            ),
            (Display::Live { urls, .. }, Event::Triggered { project, web_url, .. }) => {
                urls.insert(project.clone(), web_url.clone());
            }
            (Display::Live { bars, urls }, Event::Status { project, status }) => {
                if let Some(bar) = bars.get(project) {
                    bar.set_message(format!("{status:<10} {}", urls.get(project).map(String::as_str).unwrap_or("")));
                }
            }
            (Display::Live { bars, .. }, Event::Finished(o)) => {
                if let Some(bar) = bars.get(&o.project) {
                    let detail = o.tag.as_deref().or(o.error.as_deref()).unwrap_or("");
                    bar.finish_with_message(format!("{:<10} {detail}  {}", o.status, o.web_url));
                }
            }
        }
    }
}

/// Writes `service: {project: tag}` through a temp file and a rename, so readers never see half.
fn write_deploy(path: &Path, outcomes: &[Outcome]) -> CliResult<usize> {
    let tags: BTreeMap<&str, &str> =
        outcomes.iter().filter(|o| o.ok()).filter_map(|o| Some((o.project.as_str(), o.tag.as_deref()?))).collect();
    let text = serde_yaml_ng::to_string(&BTreeMap::from([("service", &tags)]))
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot write {}: {e}", path.display())))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("deploy.yaml"),
        std::process::id()
    ));
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot write {}: {e}", path.display())))?;
    Ok(tags.len())
}

fn summary(outcomes: &[Outcome]) -> String {
    let header = ["PROJECT", "STATUS", "TAG", "DURATION", "PIPELINE / ERROR"].map(str::to_owned);
    let rows = outcomes.iter().map(|o| {
        let detail = o.error.clone().unwrap_or_else(|| o.web_url.clone());
        [
            o.project.clone(),
            o.status.clone(),
            o.tag.clone().unwrap_or_else(|| "-".into()),
            format!("{:.1}s", o.elapsed.as_secs_f64()),
            detail,
        ]
    });
    let table: Vec<[String; 5]> = std::iter::once(header).chain(rows).collect();
    super::table::aligned(&table).into_iter().map(|line| line + "\n").collect()
}

pub(crate) fn gitlab(args: GitlabArgs) -> CliResult {
    match args.command {
        GitlabCommand::RunCi {
            common,
            git_ref,
            vars,
            job,
            tag_regex: pattern,
            out,
            concurrency,
            poll_interval,
            timeout,
            json,
        } => {
            let (config, projects, client) = setup(&common)?;
            let mut variables = config.variables.clone();
            for var in &vars {
                let (key, value) =
                    var.split_once('=').ok_or_else(|| usage(format!("invalid --var {var:?}: expected KEY=VALUE")))?;
                variables.insert(key.to_owned(), value.to_owned());
            }
            let options = WatchOptions {
                git_ref,
                variables: variables.into_iter().collect(),
                job,
                tag_regex: tag_regex(&pattern).map_err(usage)?,
                concurrency,
                poll_interval,
                timeout,
            };
            let started = Instant::now();
            let display = Arc::new(Mutex::new(Display::new(&projects, json)));
            let shown = display.clone();
            let events =
                Arc::new(move |event: Event| shown.lock().unwrap_or_else(|p| p.into_inner()).show(&event, started));
            let outcomes = runtime()?.block_on(run_all(&client, &projects, &options, events));
            drop(display);
            let failed: Vec<&str> = outcomes.iter().filter(|o| !o.ok()).map(|o| o.project.as_str()).collect();
            let written = match &out {
                Some(path) => Some((path, write_deploy(path, &outcomes)?)),
                None => None,
            };
            if json {
                println!(
                    "{}",
                    json!({"event": "summary", "succeeded": outcomes.len() - failed.len(), "failed": failed,
                           "requests": client.requests(), "seconds": started.elapsed().as_secs_f64(),
                           "out": out.as_ref().map(|p| p.display().to_string())})
                );
            } else {
                print!("{}", summary(&outcomes));
                if let Some((path, count)) = written {
                    println!("wrote {} ({count} of {} projects)", path.display(), outcomes.len());
                }
            }
            if failed.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: {} of {} projects failed: {}", failed.len(), outcomes.len(), failed.join(", "));
                Ok(ExitCode::from(crate::exit::FAILED))
            }
        }
        GitlabCommand::Protect { common, branch } => protection(&common, &branch, true),
        GitlabCommand::Unprotect { common, branch } => protection(&common, &branch, false),
    }
}

fn protection(common: &Common, branch: &str, protect: bool) -> CliResult {
    let (_, projects, client) = setup(common)?;
    let mut failed = 0;
    runtime()?.block_on(async {
        for (name, path) in &projects {
            let done = if protect {
                client.protect(path, branch).await.map(|done| match done {
                    Protection::Created => "protected",
                    Protection::Unchanged => "was protected already; nothing to do",
                    Protection::Replaced => "was protected with other access levels; its rule was replaced",
                })
            } else {
                client.unprotect(path, branch).await.map(|was| {
                    if was {
                        "unprotected"
                    } else {
                        "was not protected; nothing to do"
                    }
                })
            };
            match done {
                Ok(done) => println!("{name}: {branch} {done}"),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {name}: {e}");
                }
            }
        }
    });
    Ok(ExitCode::from(if failed == 0 { crate::exit::SUCCESS } else { crate::exit::FAILED }))
}
