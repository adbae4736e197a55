use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

use crate::util::{post, stderr_lines, Finished, Plugd, Running};

/// Starts `plugd run approval` and returns it with the callback URL it printed.
fn start_approval(extra: &[&str]) -> (Running, String, mpsc::Receiver<String>) {
    let mut args = vec!["run", "approval", "--subject", "release 1.2"];
    args.extend_from_slice(extra);
    let mut child = Running::new(Plugd::new(&args).spawn());
    let lines = stderr_lines(child.child());
    let mut seen = Vec::new();
    loop {
        let line = lines.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("no callback url: {seen:?}"));
        if let Some((_, url)) = line.split_once("callback url: ") {
            let url = url.trim().to_owned();
            let curl = lines.recv_timeout(Duration::from_secs(5)).unwrap();
            assert!(curl.ends_with(&printed_curl(&url)), "{curl}");
            return (child, url, lines);
        }
        seen.push(line);
    }
}

/// The curl command `plugd run approval` prints for `url`, with approval's example body.
fn printed_curl(url: &str) -> String {
    format!("curl -X POST -H 'Content-Type: application/json' -d '{{\"approved\":true}}' '{url}'")
}

fn finish(running: Running) -> Finished {
    let mut child = running.release();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = child.wait().unwrap();
    Finished { code: status.code().unwrap_or(-1), stdout, stderr: String::new() }
}

#[test]
fn an_approval_callback_resumes_the_run() {
    let (child, url, _lines) = start_approval(&["--json"]);
    assert!(url.contains("/bk_plugin/callback/") && url.ends_with('/'), "{url}");
    assert_eq!(post(&url, "not json"), (400, r#"{"result":false,"message":"invalid request body"}"#.into()));
    assert_eq!(
        post(&url, r#"{"approved": true, "by": "alice"}"#),
        (200, r#"{"result":true,"message":"callback success"}"#.into())
    );
    let out = finish(child).assert_code(0);
    let result = out.json();
    assert_eq!(result["state"], "SUCCESS");
    assert_eq!(result["invoke_count"], 2);
    assert_eq!(result["outputs"]["approved"], true);
    assert_eq!(result["outputs"]["approved_by"], "alice");
    assert_eq!(result["outputs"]["callback_url"], url.as_str());
}

#[test]
fn the_printed_curl_approves() {
    let (child, url, _lines) = start_approval(&["--json"]);
    // The command exactly as printed (checked by `start_approval`), run by a shell as a user would.
    let status = std::process::Command::new("sh").args(["-c", &printed_curl(&url)]).output().unwrap();
    assert!(status.status.success(), "{status:?}");
    let out = finish(child).assert_code(0);
    assert_eq!(out.json()["outputs"]["approved"], true);
}

#[test]
fn a_rejection_fails_with_the_reason() {
    let (child, url, _lines) = start_approval(&[]);
    assert_eq!(post(&url, r#"{"approved": false, "reason": "too risky"}"#).0, 200);
    let out = finish(child).assert_code(1);
    assert!(
        out.stdout.starts_with("state:        FAIL\nerror:        plugin schedule failed: not approved: too risky\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn forged_and_tampered_tokens_are_refused_and_change_nothing() {
    let (child, url, _lines) = start_approval(&["--json"]);
    let base = url.split("/bk_plugin/").next().unwrap();
    let (status, body) = post(&format!("{base}/bk_plugin/callback/abc/"), "{}");
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"result":false,"message":"invalid token abc: malformed callback token"}"#)
    );
    // Flip the last hex digit of the signature.
    let token = url.trim_end_matches('/').rsplit('/').next().unwrap();
    let last = token.chars().last().unwrap();
    let forged = format!("{}{}", &token[..token.len() - 1], if last == '0' { '1' } else { '0' });
    let (status, body) = post(&format!("{base}/bk_plugin/callback/{forged}"), "{}");
    assert_eq!(status, 400);
    assert!(body.ends_with(r#": callback token signature is invalid"}"#), "{body}");
    assert_eq!(post(&url, r#"{"approved": true}"#).0, 200);
    let out = finish(child).assert_code(0);
    assert_eq!(out.json()["invoke_count"], 2, "the refused callbacks did not run the plugin");
}

#[test]
fn an_approval_times_out_with_124() {
    let out = Plugd::new(&["run", "approval", "--timeout", "300ms", "--json"]).run().assert_code(124);
    assert_eq!(out.json()["state"], "CALLBACK");
}
