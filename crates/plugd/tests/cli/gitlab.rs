use std::path::Path;
use std::time::Duration;

use plugd_gitlab::fake::{FakeGitlab, FakeJob, FakeProject, Faults};
use serde_json::{json, Value};

use crate::serve::{database, Server};
use crate::util::Plugd;

const TOKEN: &str = "glpat-s3cr3t-t0ken";

/// A fake GitLab serving from a runtime of its own while the test drives the real binary.
struct Fake {
    server: FakeGitlab,
    _runtime: tokio::runtime::Runtime,
}

fn fake() -> Fake {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = runtime.block_on(FakeGitlab::start(TOKEN, Duration::ZERO));
    Fake { server, _runtime: runtime }
}

fn config(dir: &Path, url: &str) -> String {
    let path = dir.join("plugd-gitlab.yaml");
    std::fs::write(
        &path,
        format!("url: {url}\nnamespace: platform\ngroups: {{web: [shop-web, admin-web], src: [shop-src]}}\nvariables: {{BUILD_ARCH: \"false\"}}\n"),
    )
    .unwrap();
    path.display().to_string()
}

fn gitlab(args: &[&str]) -> crate::util::Finished {
    let mut all = vec!["gitlab"];
    all.extend_from_slice(args);
    let out = Plugd::new(&all).env("GITLAB_TOKEN", TOKEN).run();
    assert!(!out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN), "the token leaked: {out:?}");
    out
}

fn blocked() -> FakeProject {
    FakeProject {
        timeline: vec![(Duration::ZERO, "pending".into()), (Duration::from_millis(300), "manual".into())],
        jobs: vec![FakeJob { name: "deploy".into(), trace: "waiting\n".into() }],
        refs: vec!["sit".into()],
    }
}

#[test]
fn run_ci_collects_tags_and_writes_deploy_yaml() {
    let fake = fake();
    let gl = &fake.server;
    gl.page_size(1);
    gl.project(
        "platform/shop-web",
        FakeProject::succeeding(Duration::from_millis(900), "docker-build", "registry.example.com/shop/web:1.4.2"),
    );
    let mut admin = FakeProject::succeeding(Duration::from_millis(500), "docker-build", "ignored");
    admin.jobs[1].trace = "#8 [2/2] RUN make\r\n#9 exporting to image\r\n#9 naming to docker.io/shop/admin:2.0.1 done\r\n#9 DONE 0.1s\r\n".into();
    gl.project("platform/admin-web", admin);
    gl.project("platform/shop-src", blocked());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &gl.url);
    let out_file = dir.path().join("deploy.yaml");
    let out = gitlab(&[
        "run-ci",
        "--config",
        &cfg,
        "--group",
        "all",
        "--ref",
        "sit",
        "--var",
        "EXTRA=1",
        "--job",
        "docker-build",
        "--out",
        out_file.to_str().unwrap(),
        "--poll-interval",
        "200ms",
    ])
    .assert_code(1);
    let deploy = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(deploy, "service:\n  admin-web: 2.0.1\n  shop-web: 1.4.2\n");
    assert!(out.stderr.ends_with("error: 1 of 3 projects failed: shop-src\n"), "{}", out.stderr);
    assert!(out.stdout.contains("shop-src   manual"), "{}", out.stdout);
    assert!(out.stdout.contains("pipeline blocked (manual)"), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("wrote {} (2 of 3 projects)", out_file.display())), "{}", out.stdout);
    assert!(out.stderr.contains("shop-web: running"), "plain progress lines: {}", out.stderr);
    let created = gl.created();
    assert_eq!(created.len(), 3);
    let body = &created.iter().find(|c| c["project"] == "platform/shop-web").unwrap()["body"];
    assert_eq!(body["ref"], "sit");
    assert_eq!(
        body["variables"],
        json!([{"key": "BUILD_ARCH", "value": "false", "variable_type": "env_var"}, {"key": "EXTRA", "value": "1", "variable_type": "env_var"}])
    );
}

#[test]
fn rate_limits_server_errors_and_stalls_are_survived() {
    let fake = fake();
    let gl = &fake.server;
    gl.project("platform/shop-web", FakeProject::succeeding(Duration::from_millis(300), "docker-build", "r/web:7"));
    gl.inject(Faults { stalls: 1, retry_after: 1, ratelimit_reset: 1, server_errors: 3, post_server_errors: 0 });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &gl.url);
    let out = gitlab(&[
        "run-ci",
        "--config",
        &cfg,
        "--project",
        "shop-web",
        "--ref",
        "main",
        "--poll-interval",
        "100ms",
        "--request-timeout",
        "1s",
        "--json",
    ])
    .assert_code(0);
    let events: Vec<Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let finished = events.iter().find(|e| e["event"] == "finished").unwrap();
    assert_eq!((finished["status"].clone(), finished["tag"].clone()), (json!("success"), json!("7")));
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert!(summary["requests"].as_u64().unwrap() >= 9, "the faults were retried: {summary}");
    // Retry-After (1 s, not the RateLimit-Reset 30 s sent beside it), then RateLimit-Reset (about
    // 1 s), then the 1 s request timeout of the stall.
    let seconds = summary["seconds"].as_f64().unwrap();
    assert!((2.0..20.0).contains(&seconds), "the waits were honoured: {seconds}");

    // A 502 to the trigger is not resent: it may have created the pipeline.
    gl.inject(Faults { post_server_errors: 1, ..Faults::default() });
    let out = gitlab(&["run-ci", "--config", &cfg, "--project", "shop-web", "--json"]).assert_code(1);
    let summary: Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["requests"], 1, "{}", out.stdout);
}

#[test]
fn errors_are_reported_per_project_and_usage_errors_exit_2() {
    let fake = fake();
    let gl = &fake.server;
    gl.project("platform/shop-web", FakeProject::succeeding(Duration::from_millis(100), "docker-build", "r/web:1"));
    let slow =
        FakeProject { timeline: vec![(Duration::ZERO, "running".into())], jobs: vec![], refs: vec!["main".into()] };
    gl.project("platform/admin-web", slow);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &gl.url);
    let out = gitlab(&["run-ci", "--config", &cfg, "--project", "shop-web", "--ref", "nope"]).assert_code(1);
    assert!(
        out.stdout.contains("POST /projects/platform%2Fshop-web/pipeline: HTTP 400 Bad Request: Reference not found"),
        "{}",
        out.stdout
    );
    let out =
        gitlab(&["run-ci", "--config", &cfg, "--project", "admin-web", "--poll-interval", "100ms", "--timeout", "1s"])
            .assert_code(1);
    assert!(
        out.stdout.contains("timeout") && out.stdout.contains("still running when the timeout expired"),
        "{}",
        out.stdout
    );
    let out =
        gitlab(&["run-ci", "--config", &cfg, "--project", "shop-web", "--job", "package", "--poll-interval", "100ms"])
            .assert_code(1);
    assert!(out.stdout.contains("no job named \"package\""), "{}", out.stdout);

    let out = gitlab(&["run-ci", "--config", &cfg, "--project", "billing"]).assert_code(2);
    assert_eq!(out.stderr, "error: unknown project \"billing\"; projects: admin-web, shop-src, shop-web\n");
    let out = gitlab(&["run-ci", "--config", &cfg, "--group", "api"]).assert_code(2);
    assert_eq!(out.stderr, "error: unknown group \"api\"; groups: src, web, all\n");
    // A YAML error at the end of the file names its last line.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "url: http://x\ngroups: {web: [a]\n").unwrap();
    let out = gitlab(&["run-ci", "--config", broken.to_str().unwrap(), "--group", "web"]).assert_code(2);
    assert_eq!(out.stderr, format!("error: {}:2: did not find expected ',' or '}}'\n", broken.display()));
    // No config file: say so, rather than that the group is unknown.
    let empty = tempfile::tempdir().unwrap();
    let out = Plugd::new(&["gitlab", "run-ci", "--group", "web"]).current_dir(empty.path()).run().assert_code(2);
    assert_eq!(
        out.stderr,
        "error: ./plugd-gitlab.yaml not found (write one, or give --config FILE): --group web needs the groups it declares\n"
    );
    let out = Plugd::new(&["gitlab", "run-ci", "--project", "platform/shop-web"])
        .current_dir(empty.path())
        .run()
        .assert_code(2);
    assert_eq!(
        out.stderr,
        "error: no GitLab URL: give --url, or url: in a config file; ./plugd-gitlab.yaml not found (write one, or give --config FILE)\n"
    );
    let out = Plugd::new(&["gitlab", "run-ci", "--config", &cfg, "--project", "shop-web"])
        .env_remove("GITLAB_TOKEN")
        .run()
        .assert_code(2);
    assert_eq!(out.stderr, "error: no GitLab token: set GITLAB_TOKEN or give --token-file\n");
    let out = Plugd::new(&["gitlab", "run-ci", "--config", &cfg, "--project", "shop-web"])
        .env("GITLAB_TOKEN", "wrong-token")
        .run()
        .assert_code(1);
    assert!(
        out.stdout.contains("HTTP 401 Unauthorized: 401 Unauthorized") && !out.stdout.contains("wrong-token"),
        "{}",
        out.stdout
    );
}

#[test]
fn protect_and_unprotect_are_idempotent() {
    let fake = fake();
    let gl = &fake.server;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &gl.url);
    for project in ["platform/shop-web", "platform/admin-web"] {
        gl.project(project, FakeProject::succeeding(Duration::ZERO, "docker-build", "r/x:1"));
    }
    let out = gitlab(&["protect", "--config", &cfg, "--group", "web", "--branch", "release/1.2"]).assert_code(0);
    assert_eq!(out.stdout, "shop-web: release/1.2 protected\nadmin-web: release/1.2 protected\n");
    assert_eq!(gl.protection("platform/shop-web", "release/1.2"), Some((40, 40)));
    let out = gitlab(&["protect", "--config", &cfg, "--project", "shop-web", "--branch", "release/1.2"]).assert_code(0);
    assert_eq!(out.stdout, "shop-web: release/1.2 was protected already; nothing to do\n");
    // Developers may push: the rule is replaced by one for maintainers only.
    gl.protect("platform/admin-web", "release/1.2", 30, 30);
    let out =
        gitlab(&["protect", "--config", &cfg, "--project", "admin-web", "--branch", "release/1.2"]).assert_code(0);
    assert_eq!(out.stdout, "admin-web: release/1.2 was protected with other access levels; its rule was replaced\n");
    assert_eq!(gl.protection("platform/admin-web", "release/1.2"), Some((40, 40)));
    // A replacement that fails half-way says the branch is left unprotected.
    gl.protect("platform/admin-web", "release/2", 30, 30);
    gl.inject(Faults { post_server_errors: 1, ..Faults::default() });
    let out = gitlab(&["protect", "--config", &cfg, "--project", "admin-web", "--branch", "release/2"]).assert_code(1);
    assert!(
        out.stderr.ends_with("(the old rule was deleted: release/2 stays unprotected until protect succeeds)\n"),
        "{}",
        out.stderr
    );
    assert_eq!(gl.protection("platform/admin-web", "release/2"), None);
    let out =
        gitlab(&["unprotect", "--config", &cfg, "--project", "shop-web", "--branch", "release/1.2"]).assert_code(0);
    assert_eq!(out.stdout, "shop-web: release/1.2 unprotected\n");
    let out =
        gitlab(&["unprotect", "--config", &cfg, "--project", "shop-web", "--branch", "release/1.2"]).assert_code(0);
    assert_eq!(out.stdout, "shop-web: release/1.2 was not protected; nothing to do\n");
    assert_eq!(gl.protection("platform/shop-web", "release/1.2"), None);
    // A project GitLab does not know is an error, not "nothing to do".
    let out = gitlab(&["unprotect", "--config", &cfg, "--project", "shop-src", "--branch", "main"]).assert_code(1);
    assert_eq!(
        out.stderr,
        "error: shop-src: GET /projects/platform%2Fshop-src: HTTP 404 Not Found: 404 Project Not Found\n"
    );
}

#[test]
fn the_gitlab_pipeline_plugin_runs_locally_and_resumes_after_a_restart() {
    let fake = fake();
    let gl = &fake.server;
    gl.project("platform/shop-web", FakeProject::succeeding(Duration::from_millis(1500), "docker-build", "r/web:3.1"));
    let url = gl.url.clone();
    let out = Plugd::new(&[
        "run",
        "gitlab-pipeline",
        "--project",
        "platform/shop-web",
        "--job",
        "docker-build",
        "--poll-interval",
        "1",
        "--json",
    ])
    .env("GITLAB_TOKEN", TOKEN)
    .env("GITLAB_URL", &url)
    .run()
    .assert_code(0);
    let result = out.json();
    assert_eq!(result["outputs"]["image_tag"], "3.1");
    assert_eq!(result["outputs"]["status"], "success");

    // Under serve: a crash in the middle of a watch resumes the same pipeline.
    let (_db_dir, db) = database();
    let enable = ["--enable-plugin", "gitlab-pipeline"];
    let server = Server::start_env(&db, &enable, &[("GITLAB_TOKEN", TOKEN), ("GITLAB_URL", url.as_str())]);
    // A caller cannot send the server's token elsewhere.
    let elsewhere = json!({"url": "http://192.0.2.1:9", "project": "platform/shop-web"});
    let refused = server.invoke("gitlab-pipeline", "1.0.0", elsewhere, json!({})).unwrap();
    assert_eq!(
        refused["data"]["err"],
        format!(
            "plugin execute failed: url http://192.0.2.1:9 is not the GitLab of GITLAB_URL ({url}): \
             GITLAB_TOKEN is sent there only"
        )
    );
    let inputs = json!({"url": url, "project": "platform/shop-web", "job": "docker-build", "poll_interval": 1});
    let started = server.invoke("gitlab-pipeline", "1.0.0", inputs, json!({})).unwrap();
    assert_eq!(started["data"]["state"], 2);
    let trace_id = started["trace_id"].as_str().unwrap().to_owned();
    server.kill_9();
    let server = Server::start_env(&db, &enable, &[("GITLAB_TOKEN", TOKEN), ("GITLAB_URL", url.as_str())]);
    let done = server.wait_final("gitlab-pipeline", &trace_id);
    assert_eq!(done["outputs"]["image_tag"], "3.1", "{done}");
    let pipelines = gl.created().len();
    assert_eq!(pipelines, 2, "one pipeline for the local run, one for the served invocation: not re-triggered");
}
