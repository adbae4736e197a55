//! Templates in step inputs: minijinja over `package`, `release`, `system`, `env` and `steps`.
//!
//! A run, a dry run and `hooks check` render with the same strictness: a variable that does not
//! exist is an error naming it. They differ in what is known: a run knows every value; a dry run
//! knows all but the outputs of the stage's earlier steps, shown as placeholders
//! (`<steps.build.outputs.tag>`); `hooks check` knows the names of the package and release values
//! (their values only when given with `--set`), and takes any `env.NAME`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::{json, Map, Value};

/// What templates see.
#[derive(Debug, Clone, Default)]
pub struct TemplateValues {
    /// `package`: name, version, qualified_name, uri, and any `--set package.x=...`.
    pub package: Map<String, Value>,
    /// `release`: message, previous_version, changelog, path.
    pub release: Map<String, Value>,
    /// `steps.<id>`: `outputs`, `state` and `err` of the stage's earlier steps.
    pub steps: Map<String, Value>,
}

/// What is known when rendering, which decides what a template may use and what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A run: every value is known.
    Run,
    /// A dry run, and the check before a run: package, release, system and env as the run sees
    /// them (env values shown as `<env.NAME>`, the environment holds secrets), and the stage's
    /// earlier steps with placeholders for their outputs, state and err.
    DryRun,
    /// `hooks check`: no run at hand. `package` has name, version, qualified_name and uri, and
    /// `release` message, previous_version, changelog and path, plus what `--set` gives; values not
    /// given are placeholders. Any `env.NAME` is a placeholder; earlier steps as in a dry run.
    Check,
}

/// The package keys every run may have (the others come from `--set` only).
const PACKAGE_KEYS: [&str; 4] = ["name", "version", "qualified_name", "uri"];

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// `{{ expr }}` alone: the expression, whose value keeps its JSON type.
fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

/// Checks that every template in `value` compiles.
pub(crate) fn check(value: &Value) -> Result<(), String> {
    let env = environment();
    match value {
        Value::String(text) => match whole_expression(text) {
            Some(expr) => env.compile_expression(expr).map(|_| ()).map_err(|e| format!("bad template: {e}")),
            None => env.template_from_str(text).map(|_| ()).map_err(|e| format!("bad template: {e}")),
        },
        Value::Array(items) => items.iter().try_for_each(check),
        Value::Object(fields) => fields.values().try_for_each(check),
        _ => Ok(()),
    }
}

/// The user running plugd, as rez's `system.user`: `$LOGNAME`, `$USER`, ..., else the account name.
fn system_user() -> String {
    plugd_plugins::system::user()
}

impl TemplateValues {
    /// A renderer for a step of `stage` after the steps `earlier` (their ids), over these values as
    /// they are now: the environment variables, host and time are read once for every value it
    /// renders. In a run, `steps` holds the earlier steps that ran; otherwise each of `earlier` is
    /// a placeholder.
    pub fn renderer(&self, scope: Scope, stage: &str, earlier: &[String]) -> Renderer {
        let tracker = Arc::new(Tracker::default());
        let node = |path: &str, hint: Hint, fields: Vec<(String, minijinja::Value)>| {
            minijinja::Value::from_object(Node { path: path.to_owned(), hint, fields, tracker: tracker.clone() })
        };
        let placeholder = |path: String| minijinja::Value::from_object(Placeholder { path, tracker: tracker.clone() });
        let known = |path: &str, map: &Map<String, Value>| -> Vec<(String, minijinja::Value)> {
            map.iter().map(|(k, v)| (k.clone(), tracked(&format!("{path}.{k}"), v, &tracker))).collect()
        };

        let mut package = known("package", &self.package);
        if scope == Scope::Check {
            for key in PACKAGE_KEYS {
                if !self.package.contains_key(key) {
                    package.push((key.to_owned(), placeholder(format!("package.{key}"))));
                }
            }
        }
        let mut steps = known("steps", &self.steps);
        if scope != Scope::Run {
            for id in earlier.iter().filter(|id| !self.steps.contains_key(*id)) {
                let fields = ["outputs", "state", "err"]
                    .iter()
                    .map(|k| ((*k).to_owned(), placeholder(format!("steps.{id}.{k}"))))
                    .collect();
                steps.push((id.clone(), node(&format!("steps.{id}"), Hint::Plain, fields)));
            }
        }
        let env = match scope {
            Scope::Check => placeholder("env".to_owned()),
            Scope::DryRun => {
                let vars = std::env::vars().map(|(k, _)| (k.clone(), minijinja::Value::from(format!("<env.{k}>"))));
                node("env", Hint::Env, vars.collect())
            }
            Scope::Run => node("env", Hint::Env, std::env::vars().map(|(k, v)| (k, v.into())).collect()),
        };
        let host = hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
        // `fqdn` is rez's name for the host (its emailer body says `{system.fqdn}`).
        let system = json!({"user": system_user(), "host": host, "fqdn": host, "time": chrono_like_now()});
        let system = known("system", system.as_object().expect("an object"));
        let root = vec![
            ("package".to_owned(), node("package", Hint::Set("package"), package)),
            ("release".to_owned(), node("release", Hint::Set("release"), known("release", &self.release))),
            ("system".to_owned(), node("system", Hint::Plain, system)),
            ("env".to_owned(), env),
            ("steps".to_owned(), node("steps", Hint::Steps { stage: stage.to_owned() }, steps)),
        ];
        let context = node("", Hint::Plain, root);
        Renderer { env: environment(), context, scope, tracker }
    }
}

/// What the last render looked up and did not find, and whether it used a placeholder.
#[derive(Debug, Default)]
struct Tracker {
    miss: Mutex<Option<RenderError>>,
    placeholder: AtomicBool,
}

impl Tracker {
    fn reset(&self) {
        *self.miss.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.placeholder.store(false, Ordering::Relaxed);
    }

    fn last_miss(&self) -> Option<RenderError> {
        self.miss.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How a missing key of a map is explained.
#[derive(Debug, Clone)]
enum Hint {
    /// Its keys are listed.
    Plain,
    /// `package` or `release`: `--set` gives more.
    Set(&'static str),
    /// `steps`: the earlier steps of the stage.
    Steps { stage: String },
    /// The environment.
    Env,
}

/// A map whose missing keys are remembered, with what exists, for the error that follows.
#[derive(Debug)]
struct Node {
    path: String,
    hint: Hint,
    fields: Vec<(String, minijinja::Value)>,
    tracker: Arc<Tracker>,
}

impl Node {
    fn explain(&self, key: &str) -> RenderError {
        let path = if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) };
        let keys: Vec<&str> = self.fields.iter().map(|(k, _)| k.as_str()).collect();
        let close = closest(key, &keys).map(|k| {
            let prefix = if self.path.is_empty() { String::new() } else { format!("{}.", self.path) };
            format!(" (did you mean {prefix}{k}?)")
        });
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        let has = if sorted.is_empty() { "is empty".to_owned() } else { format!("has: {}", sorted.join(", ")) };
        let why = match (&self.hint, close) {
            (Hint::Steps { stage }, _) => {
                let earlier = if keys.is_empty() { "none".to_owned() } else { keys.join(", ") };
                format!(": no earlier step of {stage} has the id {key:?} (earlier steps: {earlier})")
            }
            (_, Some(close)) => close,
            (Hint::Env, None) => ": not set in the environment".to_owned(),
            (Hint::Set(root), None) if key == "qualified_name" => {
                format!(" (it is <name>-<version>: give --set {root}.name=... and --set {root}.version=...)")
            }
            (Hint::Set(root), None) => format!(" ({root} {has}; give --set {root}.{key}=VALUE)"),
            (Hint::Plain, None) if self.path.is_empty() => {
                " (templates see package, release, system, env and steps)".to_owned()
            }
            (Hint::Plain, None) => format!(" ({} {has})", self.path),
        };
        RenderError::UndefinedVariable { variable: path, hint: why }
    }
}

impl Object for Node {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let name = key.as_str()?;
        match self.fields.iter().find(|(k, _)| k == name) {
            Some((_, value)) => {
                if value.downcast_object_ref::<Placeholder>().is_some() {
                    self.tracker.placeholder.store(true, Ordering::Relaxed);
                }
                Some(value.clone())
            }
            None => {
                *self.tracker.miss.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.explain(name));
                None
            }
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.fields.iter().map(|(k, _)| minijinja::Value::from(k.as_str())).collect())
    }
}

/// A value known only at run time: `<path>` when shown; any attribute of it is one too.
#[derive(Debug)]
struct Placeholder {
    path: String,
    tracker: Arc<Tracker>,
}

impl Object for Placeholder {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        self.tracker.placeholder.store(true, Ordering::Relaxed);
        let path = format!("{}.{}", self.path, key);
        Some(minijinja::Value::from_object(Placeholder { path, tracker: self.tracker.clone() }))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.tracker.placeholder.store(true, Ordering::Relaxed);
        write!(f, "<{}>", self.path)
    }
}

/// A JSON value for templates: objects become [`Node`]s, so that a missing key is named.
fn tracked(path: &str, value: &Value, tracker: &Arc<Tracker>) -> minijinja::Value {
    match value {
        Value::Object(map) => minijinja::Value::from_object(Node {
            path: path.to_owned(),
            hint: Hint::Plain,
            fields: map.iter().map(|(k, v)| (k.clone(), tracked(&format!("{path}.{k}"), v, tracker))).collect(),
            tracker: tracker.clone(),
        }),
        other => minijinja::Value::from_serialize(other),
    }
}

/// The known key nearest to `key` (at most two edits away), for "did you mean".
fn closest<'a>(key: &str, keys: &[&'a str]) -> Option<&'a str> {
    keys.iter().map(|k| (distance(key, k), *k)).filter(|(d, _)| *d <= 2 && *d < key.len()).min().map(|(_, k)| k)
}

/// Levenshtein distance, with a swap of two neighbours counted as one edit.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// A template that cannot be rendered. The message says what is wrong, not where: the caller names
/// the file, line, step and input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A variable that does not exist: `undefined variable package.nmae (did you mean package.name?)`.
    #[error("undefined variable {variable}{hint}")]
    UndefinedVariable {
        /// Its dotted path, e.g. `package.nmae`.
        variable: String,
        /// The rest of the message: what exists instead, or why it is missing, e.g.
        /// ` (did you mean package.name?)` or `: not set in the environment`.
        hint: String,
    },
    /// Any other error of the template engine (a value it cannot name, a bad filter, a wrong
    /// type), without its position.
    #[error("{message}")]
    Template {
        /// What the engine said.
        message: String,
    },
}

/// Renders templates against one snapshot of [`TemplateValues`].
pub struct Renderer {
    env: Environment<'static>,
    context: minijinja::Value,
    scope: Scope,
    tracker: Arc<Tracker>,
}

impl Renderer {
    /// Renders every template in `value`; an error names the variable that does not exist.
    pub fn render(&self, value: &Value) -> Result<Value, RenderError> {
        Ok(match value {
            Value::String(text) => self.render_text(text)?,
            Value::Array(items) => Value::Array(items.iter().map(|i| self.render(i)).collect::<Result<_, _>>()?),
            Value::Object(fields) => {
                let mut out = Map::new();
                for (key, item) in fields {
                    out.insert(key.clone(), self.render(item)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    fn render_text(&self, text: &str) -> Result<Value, RenderError> {
        self.tracker.reset();
        let rendered = match whole_expression(text) {
            Some(expr) => self.env.compile_expression(expr).and_then(|e| e.eval(&self.context)).map(|result| {
                if result.is_undefined() {
                    None
                } else {
                    Some(serde_json::to_value(&result).unwrap_or_else(|e| Value::String(e.to_string())))
                }
            }),
            None => self.env.render_str(text, &self.context).map(|s| Some(Value::String(s))),
        };
        match rendered {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(self
                .tracker
                .last_miss()
                .unwrap_or_else(|| RenderError::Template { message: "undefined value".to_owned() })),
            Err(e) if e.kind() == ErrorKind::UndefinedError => {
                Err(self.tracker.last_miss().unwrap_or_else(|| RenderError::Template { message: describe(&e) }))
            }
            // An operation on a placeholder (`{{ steps.a.outputs.n + 1 }}`) has no value before the
            // run: shown as written.
            Err(_) if self.scope != Scope::Run && self.tracker.placeholder.load(Ordering::Relaxed) => {
                Ok(Value::String(text.to_owned()))
            }
            Err(e) => Err(RenderError::Template { message: describe(&e) }),
        }
    }
}

/// A minijinja error without its `(in <string>:1)`: the caller says where.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
fn chrono_like_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues {
        TemplateValues {
            package: json!({"name": "foo", "version": "1.2.0", "qualified_name": "foo-1.2.0"})
                .as_object()
                .unwrap()
                .clone(),
            steps: json!({"build": {"outputs": {"n": 3, "tags": ["a", "b"]}}}).as_object().unwrap().clone(),
            ..TemplateValues::default()
        }
    }

    fn render(v: &TemplateValues, scope: Scope, earlier: &[&str], value: Value) -> Result<Value, String> {
        let earlier: Vec<String> = earlier.iter().map(|s| (*s).to_owned()).collect();
        v.renderer(scope, "pre_release", &earlier).render(&value).map_err(|e| e.to_string())
    }

    #[test]
    fn templates_render_and_whole_expressions_keep_types() {
        let v = values();
        let input = json!({
            "text": "{{ package.qualified_name }} released",
            "n": "{{ steps.build.outputs.n }}",
            "tags": "{{ steps.build.outputs.tags }}",
            "nested": [{"k": "v{{ package.version }}"}],
            "plain": 7,
        });
        assert_eq!(
            render(&v, Scope::Run, &[], input).unwrap(),
            json!({"text": "foo-1.2.0 released", "n": 3, "tags": ["a", "b"], "nested": [{"k": "v1.2.0"}], "plain": 7})
        );
        assert!(check(&json!("{{ unclosed")).unwrap_err().starts_with("bad template"));
        assert!(check(&json!({"a": ["{% if %}"]})).is_err());
        let host = render(&v, Scope::Run, &[], json!("{{ system.host }}")).unwrap();
        assert_eq!(render(&v, Scope::Run, &[], json!("{{ system.fqdn }}")).unwrap(), host);
        assert_eq!(render(&v, Scope::DryRun, &[], json!("{{ env.PATH }}")).unwrap(), json!("<env.PATH>"));
    }

    #[test]
    fn undefined_variables_are_named_in_every_scope() {
        let v = values();
        for scope in [Scope::Run, Scope::DryRun, Scope::Check] {
            assert_eq!(
                render(&v, scope, &[], json!("released {{ package.nmae }} v{{ package.version }}")).unwrap_err(),
                "undefined variable package.nmae (did you mean package.name?)"
            );
            assert_eq!(
                render(&v, scope, &[], json!("{{ pakage.name }}")).unwrap_err(),
                "undefined variable pakage (did you mean package?)"
            );
            assert_eq!(
                render(&v, scope, &[], json!("{{ system.usr | upper }}")).unwrap_err(),
                "undefined variable system.usr (did you mean system.user?)"
            );
        }
        // `package.version` not given: the run and the dry run know; check does not.
        assert_eq!(
            v.renderer(Scope::Run, "pre_release", &[]).render(&json!("{{ pakage.name }}")).unwrap_err(),
            RenderError::UndefinedVariable { variable: "pakage".into(), hint: " (did you mean package?)".into() }
        );
        let unset = TemplateValues { package: json!({"name": "foo"}).as_object().unwrap().clone(), ..values() };
        for scope in [Scope::Run, Scope::DryRun] {
            assert_eq!(
                render(&unset, scope, &[], json!("v{{ package.version }}")).unwrap_err(),
                "undefined variable package.version (package has: name; give --set package.version=VALUE)"
            );
        }
        assert_eq!(
            render(&unset, Scope::Check, &[], json!("v{{ package.version }}")).unwrap(),
            json!("v<package.version>")
        );
        assert_eq!(
            render(&v, Scope::Run, &[], json!("{{ steps.build.outputs.m }}")).unwrap_err(),
            "undefined variable steps.build.outputs.m (steps.build.outputs has: n, tags)"
        );
        assert_eq!(
            render(&v, Scope::Run, &[], json!("{{ env.PLUGD_NO_SUCH_VARIABLE }}")).unwrap_err(),
            "undefined variable env.PLUGD_NO_SUCH_VARIABLE: not set in the environment"
        );
        assert_eq!(
            render(&v, Scope::Check, &[], json!("{{ env.PLUGD_NO_SUCH_VARIABLE }}")).unwrap(),
            json!("<env.PLUGD_NO_SUCH_VARIABLE>")
        );
    }

    #[test]
    fn earlier_steps_are_placeholders_before_the_run() {
        let v = TemplateValues::default();
        let input = json!({"tag": "image:{{ steps.build.outputs.tag }}", "state": "{{ steps.build.state }}", "sum": "{{ steps.build.outputs.n + 1 }}"});
        for scope in [Scope::DryRun, Scope::Check] {
            assert_eq!(
                render(&v, scope, &["build"], input.clone()).unwrap(),
                json!({"tag": "image:<steps.build.outputs.tag>", "state": "<steps.build.state>", "sum": "{{ steps.build.outputs.n + 1 }}"})
            );
            assert_eq!(
                render(&v, scope, &["build"], json!("{{ steps.deploy.outputs.url }}")).unwrap_err(),
                "undefined variable steps.deploy: no earlier step of pre_release has the id \"deploy\" (earlier steps: build)"
            );
            assert_eq!(
                render(&v, scope, &["build"], json!("{{ steps.build.output.tag }}")).unwrap_err(),
                "undefined variable steps.build.output (did you mean steps.build.outputs?)"
            );
        }
    }
}
