//! Job logs: strip ANSI codes and section markers, then find the image tag.

use std::sync::LazyLock;

use regex::Regex;

use crate::client::{Client, GitlabError};

/// Docker's `Successfully tagged <image>` and buildkit's `naming to <image>`, at the start of a line.
pub const DEFAULT_TAG_REGEX: &str = r"(?:Successfully tagged |#\d+ naming to |naming to )(?:docker\.io/)?(?P<image>\S+?)(?:\s+[\d.]+s)?(?:\s+done)?\s*$";

/// The log as a person reads it: no colour codes, no `section_start`/`section_end` markers, and
/// one line per line (`\r\n` and carriage-return progress lines split).
pub fn clean(log: &str) -> String {
    // Compiled once: `clean` runs on every job log of every watched pipeline.
    // A marker ends at its `\r` (usually followed by `ESC[0K`), or at a colour code when a runner
    // left the `\r` out; the section header text after it stays.
    static SECTIONS: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"section_(?:start|end):\d+:[^\r\n\x1b]*\r?(?:\x1b\[0K)?").expect("a valid regex"));
    static ANSI: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").expect("a valid regex"));
    let log = SECTIONS.replace_all(log, "");
    let log = ANSI.replace_all(&log, "");
    log.replace("\r\n", "\n").replace('\r', "\n")
}

/// A tag regex that does not compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid tag regex: {error}")]
pub struct TagPatternError {
    /// The pattern as given (before it is anchored).
    pub pattern: String,
    /// What the regex compiler said.
    pub error: regex::Error,
}

/// Compiles a tag regex, anchored at the start of each line (so that an echoed command such as
/// `$ echo "IMAGE_TAG=$TAG"` never matches).
pub fn tag_regex(pattern: &str) -> Result<Regex, TagPatternError> {
    Regex::new(&format!("(?m)^(?:{pattern})")).map_err(|error| TagPatternError { pattern: pattern.to_owned(), error })
}

/// The tag the last matching line names: the `tag` group, else the part after the last `:` of the
/// `image` group (or of group 1, or of the match), skipping `:latest`.
pub fn find_tag(log: &str, regex: &Regex) -> Option<String> {
    let clean = clean(log);
    regex
        .captures_iter(&clean)
        .filter_map(|captures| {
            if let Some(tag) = captures.name("tag") {
                return Some(tag.as_str().to_owned());
            }
            let image = captures.name("image").or_else(|| captures.get(1)).or_else(|| captures.get(0))?.as_str();
            let tag = image.rsplit_once(':').map_or(image, |(_, tag)| tag);
            (tag != "latest").then(|| tag.to_owned())
        })
        .last()
}

/// The tag the job logs of a finished pipeline name, reading the newest job first: only the log of
/// `job` when given (an error names the jobs there are when it is missing), else the log of every
/// job that ran.
pub async fn pipeline_tag(
    client: &Client,
    project: &str,
    pipeline: u64,
    job: Option<&str>,
    regex: &Regex,
) -> Result<Option<String>, GitlabError> {
    let mut jobs = client.jobs(project, pipeline).await?;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
    if let Some(name) = job {
        let Some(found) = jobs.iter().position(|j| j.name == name) else {
            let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(GitlabError::new(format!(
                "no job named {name:?} in pipeline {pipeline}; jobs: {}",
                names.join(", ")
            )));
        };
        jobs = vec![jobs.swap_remove(found)];
    }
    for candidate in jobs {
        // Without a job name, jobs that never ran have no log worth reading (or none at all).
        if job.is_none() && matches!(candidate.status.as_str(), "created" | "manual" | "skipped" | "canceled") {
            continue;
        }
        let trace = match client.trace(project, candidate.id).await {
            Ok(trace) => trace,
            Err(e) if job.is_none() && e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        if let Some(tag) = find_tag(&trace, regex) {
            return Ok(Some(tag));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "\x1b[0KRunning with gitlab-runner 16.5.0\r\n\
        section_start:1700000000:build_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting build script\x1b[0;m\r\n\
        $ echo \"Successfully tagged registry/app:fake\"\r\n\
        Step 5/5 : CMD run\r\nProgress 10%\rProgress 100%\r\n\
        Successfully built 1234abcd\r\n\x1b[32;1mSuccessfully tagged registry.example.com/shop/web:1.4.2\x1b[0;m\r\n\
        Successfully tagged registry.example.com/shop/web:latest\r\n\
        section_end:1700000001:build_script\r\x1b[0K\r\n";

    #[test]
    fn tags_come_from_clean_lines_only() {
        let regex = tag_regex(DEFAULT_TAG_REGEX).unwrap();
        assert_eq!(find_tag(TRACE, &regex).as_deref(), Some("1.4.2"));
        let buildkit = "#12 naming to docker.io/shop/admin:2.0.1 done\n#12 DONE 0.0s\n";
        assert_eq!(find_tag(buildkit, &regex).as_deref(), Some("2.0.1"));
        let timed = "#9 naming to docker.io/library/app:1.2 0.0s done\n";
        assert_eq!(find_tag(timed, &regex).as_deref(), Some("1.2"));
        let unanchored = tag_regex(r"IMAGE_TAG=(?P<tag>\S+)").unwrap();
        assert_eq!(find_tag("$ echo \"IMAGE_TAG=$TAG\"\n", &unanchored), None, "echoed commands never match");
        assert_eq!(find_tag("nothing here\n", &regex), None);
        let custom = tag_regex(r"^IMAGE_TAG=(?P<tag>\S+)").unwrap();
        assert_eq!(find_tag("$ echo \"IMAGE_TAG=$TAG\"\nIMAGE_TAG=v9\n", &custom).as_deref(), Some("v9"));
        assert!(clean(TRACE).contains("\nProgress 10%\nProgress 100%\n"));
        assert!(!clean(TRACE).contains("section_"));
        let bare = "section_start:1700000000:step_script\nline\nsection_end:1700000001:step_script\n";
        assert_eq!(clean(bare), "\nline\n\n");
        let header = "section_start:1:prepare[collapsed=true]\r\x1b[0K\x1b[0K\x1b[36;1mPreparing\x1b[0;m\n";
        assert_eq!(clean(header), "Preparing\n");
        assert!(tag_regex("(").is_err());
    }
}
