use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::serve::{database, Server};
use crate::util::Plugd;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Compiling a generated Rust project takes minutes: run only when asked (`.ci/run` asks).
#[test]
#[ignore = "slow: compiles a generated Rust plugin project (about two minutes)"]
fn a_generated_rust_plugin_builds_tests_runs_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("greet-rs");
    Plugd::new(&["new", "greet-rs", "--lang", "rust", "--dir", project.to_str().unwrap()]).run().assert_code(0);
    // The same dependency versions as this workspace, and a target folder of its own (the outer
    // `cargo test` holds the workspace's).
    std::fs::copy(workspace().join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("scaffold");
    let cargo = |args: &[&str]| {
        let status = Command::new(env!("CARGO"))
            .args(args)
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .unwrap();
        assert!(status.success(), "cargo {args:?} failed");
    };
    cargo(&["test", "--quiet"]);
    cargo(&["build", "--quiet"]);
    let binary = target.join("debug/greet-rs");
    let out = Command::new(&binary).args(["run", "greet-rs", "--name", "rust", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["outputs"], json!({"message": "hello, rust"}));

    // The same binary serves the plugin, with the whole plugd command line.
    let (_db_dir, db) = database();
    let server = Server::start_binary(&binary, &db, &[]);
    let done = server.invoke("greet-rs", "0.1.0", json!({"name": "served"}), json!({})).unwrap();
    assert_eq!(done["data"]["outputs"], json!({"message": "hello, served"}));
}
