use std::path::Path;

use serde_json::json;

use crate::serve::{database, Server};
use crate::util::Plugd;

/// A CI plugin as CODING publishes them (also a GitHub Action): a version computed from the job's
/// environment, printed and appended to `$CI_ENV_FILE`; colours on its error.
const QCI: &str =
    "version: '1.0'\nid: magic_version\nname: magic version\nentry:\n  start: bash ${QCI_PLUGIN_RUNTIME}/version.sh\n";
const SCRIPT: &str = r#"#!/usr/bin/env bash
if [ -n "$TAG_NAME" ]; then
  version="${TAG_NAME#${TAG_PREFIX}}"
elif [ -n "$CHANGE_ID" ]; then
  version="mr-${CHANGE_ID}-${GIT_COMMIT_SHORT}"
elif [ -n "$BRANCH_NAME" ]; then
  version="${BRANCH_NAME//\//-}-${GIT_COMMIT_SHORT}"
elif [[ "$GITHUB_REF" == refs/tags/* ]]; then
  version="${GITHUB_REF#refs/tags/}"
elif [[ "$GITHUB_REF" == refs/heads/* ]]; then
  version="${GITHUB_REF#refs/heads/}-${GITHUB_SHA:0:7}"
elif [ -n "$CI_COMMIT_TAG" ]; then
  version="$CI_COMMIT_TAG"
elif [ -n "$CI_COMMIT_REF_SLUG" ]; then
  version="${CI_COMMIT_REF_SLUG}-${CI_COMMIT_SHORT_SHA}"
else
  echo -e "\033[31menv variables not found\033[0m" >&2
  exit 1
fi
echo "version: $version"
echo "MAGIC_VERSION=$version" >> "$CI_ENV_FILE"
[ -n "$PLUGD_AUTH_TOKENS$PLUGD_CALLBACK_SECRET" ] && echo "LEAKED=yes" >> "$CI_ENV_FILE"
exit 0
"#;

/// The variables of every CI system the script knows; each case sets some of them.
const CI_VARIABLES: [&str; 11] = [
    "TAG_NAME",
    "TAG_PREFIX",
    "CHANGE_ID",
    "BRANCH_NAME",
    "GIT_COMMIT_SHORT",
    "GITHUB_REF",
    "GITHUB_SHA",
    "CI_COMMIT_TAG",
    "CI_COMMIT_REF_SLUG",
    "CI_COMMIT_SHORT_SHA",
    "CI_ENV_FILE",
];

/// Variables a case sets.
type Variables = &'static [(&'static str, &'static str)];

fn plugin(dir: &Path) -> String {
    let plugin = dir.join("magic-version");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(plugin.join("qciplugin.yml"), QCI).unwrap();
    std::fs::write(plugin.join("version.sh"), SCRIPT).unwrap();
    plugin.display().to_string()
}

#[test]
fn a_ci_plugin_sees_its_job_s_environment_under_run_but_never_plugd_s_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let folder = plugin(dir.path());
    let cases: [(Variables, Option<&str>); 8] = [
        (&[("TAG_NAME", "v1.4.0"), ("TAG_PREFIX", "v")], Some("1.4.0")),
        (&[("TAG_NAME", "1.4.0")], Some("1.4.0")),
        (&[("CHANGE_ID", "42"), ("BRANCH_NAME", "feature/x"), ("GIT_COMMIT_SHORT", "abc1234")], Some("mr-42-abc1234")),
        (&[("BRANCH_NAME", "feature/x"), ("GIT_COMMIT_SHORT", "abc1234")], Some("feature-x-abc1234")),
        (&[("GITHUB_REF", "refs/tags/2.0.1")], Some("2.0.1")),
        (&[("GITHUB_REF", "refs/heads/main"), ("GITHUB_SHA", "0123456789abcdef")], Some("main-0123456")),
        (&[("CI_COMMIT_REF_SLUG", "main"), ("CI_COMMIT_SHORT_SHA", "fedcba9")], Some("main-fedcba9")),
        (&[], None),
    ];
    for (variables, expected) in cases {
        let job_env = dir.path().join("job.env");
        std::fs::write(&job_env, "").unwrap();
        let mut plugd = Plugd::new(&["run", &folder, "--json"])
            .env("CI_ENV_FILE", job_env.to_str().unwrap())
            .env("PLUGD_AUTH_TOKENS", "ci:secret-token")
            .env("PLUGD_CALLBACK_SECRET", "callback-secret-0123");
        for name in CI_VARIABLES.iter().filter(|n| **n != "CI_ENV_FILE") {
            plugd = plugd.env_remove(name);
        }
        for (name, value) in variables {
            plugd = plugd.env(name, value);
        }
        let job_env = || std::fs::read_to_string(dir.path().join("job.env")).unwrap();
        match expected {
            Some(version) => {
                let out = plugd.run().assert_code(0);
                assert_eq!(out.json()["outputs"], json!({"MAGIC_VERSION": version}), "{variables:?}");
                assert_eq!(job_env(), format!("MAGIC_VERSION={version}\n"), "the job's file gets the outputs");
            }
            None => {
                let out = plugd.run().assert_code(1);
                // The error is read as text: no colour codes.
                assert_eq!(out.json()["err"], "plugin execute failed: exit code 1: env variables not found");
                assert_eq!(job_env(), "");
            }
        }
    }
}

#[test]
fn served_plugins_see_a_cleared_environment_plus_what_their_manifest_passes_through() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    plugin(&plugins);
    let passthrough = plugins.join("echo-env");
    std::fs::create_dir_all(&passthrough).unwrap();
    std::fs::write(
        passthrough.join("plugin.yaml"),
        "id: echo-env\nversion: 1.0.0\noutputs:\n  properties:\n    TAG_NAME: {type: string}\n    BRANCH_NAME: {type: string}\n\
         entry:\n  env_passthrough: [TAG_NAME]\n  start: [sh, -c, 'echo \"TAG_NAME=$TAG_NAME\" >> \"$PLUGD_OUTPUT_FILE\"; \
         echo \"BRANCH_NAME=$BRANCH_NAME\" >> \"$PLUGD_OUTPUT_FILE\"']\n",
    )
    .unwrap();
    let (_db_dir, db) = database();
    let plugins = plugins.display().to_string();
    let server = Server::start_env(&db, &["--plugins", &plugins], &[("TAG_NAME", "v9.9.9"), ("BRANCH_NAME", "main")]);
    let failed = server.invoke("magic_version", "1.0", json!({}), json!({})).unwrap();
    assert_eq!(failed["data"]["err"], "plugin execute failed: exit code 1: env variables not found", "{failed}");
    let done = server.invoke("echo-env", "1.0.0", json!({}), json!({})).unwrap();
    assert_eq!(done["data"]["outputs"], json!({"TAG_NAME": "v9.9.9", "BRANCH_NAME": ""}), "{done}");

    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("plugin.yaml"),
        "id: bad\nversion: 1.0.0\nentry:\n  env_passthrough: [PLUGD_AUTH_TOKENS]\n  start: [\"true\"]\n",
    )
    .unwrap();
    let out = Plugd::new(&["run", bad.to_str().unwrap()]).run().assert_code(2);
    let expected = "plugin.yaml:4: entry.env_passthrough: PLUGD_AUTH_TOKENS is plugd's own: it never reaches a plugin";
    assert!(out.stderr.contains(expected), "{}", out.stderr);
}
