//! Templates in step inputs: minijinja over `package`, `release`, `system`, `env` and `steps`.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{json, Map, Value};

/// What templates see.
#[derive(Debug, Clone, Default)]
pub struct TemplateValues {
    /// `package`: name, version, qualified_name, uri, and any `--set package.x=...`.
    pub package: Map<String, Value>,
    /// `release`: message, previous_version, changelog.
    pub release: Map<String, Value>,
    /// `steps.<id>`: `outputs`, `state` and `err` of the stage's earlier steps.
    pub steps: Map<String, Value>,
}

/// How strict rendering is: a run refuses undefined values; a dry run shows what it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Undefined values are errors.
    Run,
    /// Undefined values render empty (later steps' outputs are not known yet), and `env.NAME`
    /// renders as `<env.NAME>`: a dry run prints what it renders, and the environment holds secrets.
    DryRun,
}

fn environment(scope: Scope) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(match scope {
        Scope::Run => UndefinedBehavior::Strict,
        Scope::DryRun => UndefinedBehavior::Chainable,
    });
    env
}

/// `{{ expr }}` alone: the expression, whose value keeps its JSON type.
fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

/// Checks that every template in `value` compiles.
pub(crate) fn check(value: &Value) -> Result<(), String> {
    let env = environment(Scope::Run);
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

impl TemplateValues {
    fn context(&self, scope: Scope) -> Value {
        let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_default();
        let host = hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
        let time = chrono_like_now();
        let env: Map<String, Value> = std::env::vars()
            .map(|(k, v)| {
                let shown = if scope == Scope::DryRun { format!("<env.{k}>") } else { v };
                (k, Value::String(shown))
            })
            .collect();
        json!({
            "package": self.package,
            "release": self.release,
            // `fqdn` is rez's name for the host (its emailer body says `{system.fqdn}`).
            "system": {"user": user, "host": host, "fqdn": host, "time": time},
            "env": env,
            "steps": self.steps,
        })
    }

    /// Renders every template in `value`.
    pub fn render(&self, value: &Value, scope: Scope) -> Result<Value, String> {
        self.renderer(scope).render(value)
    }

    /// A renderer over these values as they are now: the environment variables, host and time are
    /// read once for every value it renders.
    pub fn renderer(&self, scope: Scope) -> Renderer {
        Renderer { env: environment(scope), context: minijinja::Value::from_serialize(self.context(scope)), scope }
    }
}

/// Renders templates against one snapshot of [`TemplateValues`].
pub struct Renderer {
    env: Environment<'static>,
    context: minijinja::Value,
    scope: Scope,
}

impl Renderer {
    /// Renders every template in `value`.
    pub fn render(&self, value: &Value) -> Result<Value, String> {
        render(&self.env, &self.context, value, self.scope)
    }
}

fn render(env: &Environment<'_>, context: &minijinja::Value, value: &Value, scope: Scope) -> Result<Value, String> {
    Ok(match value {
        Value::String(text) => match whole_expression(text) {
            Some(expr) => {
                let result = env
                    .compile_expression(expr)
                    .and_then(|e| e.eval(context))
                    .map_err(|e| format!("template {text:?}: {e}"))?;
                if result.is_undefined() && scope == Scope::Run {
                    return Err(format!("template {text:?}: undefined value"));
                } else if result.is_undefined() {
                    Value::String(String::new())
                } else {
                    serde_json::to_value(&result).map_err(|e| format!("template {text:?}: {e}"))?
                }
            }
            None => Value::String(env.render_str(text, context).map_err(|e| format!("template {text:?}: {e}"))?),
        },
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| render(env, context, i, scope)).collect::<Result<_, _>>()?)
        }
        Value::Object(fields) => {
            let mut out = Map::new();
            for (key, item) in fields {
                out.insert(key.clone(), render(env, context, item, scope)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
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
            v.render(&input, Scope::Run).unwrap(),
            json!({"text": "foo-1.2.0 released", "n": 3, "tags": ["a", "b"], "nested": [{"k": "v1.2.0"}], "plain": 7})
        );
        let missing = v.render(&json!("{{ package.nme }}"), Scope::Run).unwrap_err();
        assert!(missing.contains("undefined"), "{missing}");
        assert_eq!(v.render(&json!("x{{ steps.later.outputs.y }}"), Scope::DryRun).unwrap(), json!("x"));
        assert!(check(&json!("{{ unclosed")).unwrap_err().starts_with("bad template"));
        assert!(check(&json!({"a": ["{% if %}"]})).is_err());
        let host = v.render(&json!("{{ system.host }}"), Scope::Run).unwrap();
        assert_eq!(v.render(&json!("{{ system.fqdn }}"), Scope::Run).unwrap(), host);
        assert_eq!(v.render(&json!("{{ env.PATH }}"), Scope::DryRun).unwrap(), json!("<env.PATH>"));
    }
}
