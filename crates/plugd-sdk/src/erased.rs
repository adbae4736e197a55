//! The type-erased face of a plugin, which runtimes drive: [`DynPlugin`].
//!
//! Rust plugins reach it through [`TypedPlugin`]; plugins in other languages (process plugins)
//! implement it directly. Either way the runtime sees JSON in and JSON out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::{
    schema_for, ApiError, ApiReply, ApiRequest, ApiRoute, Callback, CallbackPreparer, Context, Outcome, Plugin,
    PluginError, Report, State,
};

/// A boxed, sendable future, as returned by [`DynPlugin::execute`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Owned metadata of a plugin version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's name.
    pub name: String,
    /// Its version, as declared (checked as semver at registration).
    pub version: String,
    /// Its description, possibly empty.
    pub description: String,
    /// Whether the finish callback is enabled.
    pub enable_plugin_callback: bool,
    /// The render form's JavaScript, if it ships one.
    pub form: Option<String>,
    /// Where the plugin comes from, to tell two registrations apart in errors: a Rust type path
    /// or a manifest file.
    pub origin: String,
}

/// The three JSON Schemas of a plugin version, each in the shape of [`schema_for`].
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSchemas {
    /// Schema of the inputs.
    pub inputs: Value,
    /// Schema of the context inputs.
    pub context_inputs: Value,
    /// Schema of the outputs.
    pub outputs: Value,
}

/// Everything one execute needs; the runtime has validated `inputs` and `context` already.
pub struct ExecuteRequest {
    /// The invocation's id.
    pub trace_id: String,
    /// The state before this execute.
    pub state: State,
    /// 1-based count of executes, this one included.
    pub invoke_count: u32,
    /// The raw inputs.
    pub inputs: Value,
    /// The raw context inputs.
    pub context: Value,
    /// Storage from the previous execute.
    pub storage: Map<String, Value>,
    /// Outputs from the previous execute.
    pub outputs: Map<String, Value>,
    /// The callback that triggered this execute, if any.
    pub callback: Option<Callback>,
    /// Where callback URLs come from.
    pub callbacks: Arc<dyn CallbackPreparer>,
}

/// What one execute produced.
#[derive(Debug)]
pub struct ExecuteResponse {
    /// The outcome, or why there is none.
    pub result: Result<Outcome, ExecuteError>,
    /// Storage after the execute.
    pub storage: Map<String, Value>,
    /// Outputs after the execute.
    pub outputs: Map<String, Value>,
    /// Reports attached by this execute, already validated.
    pub reports: Vec<Report>,
}

/// Why an execute produced no [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecuteError {
    /// The inputs passed the schema but not the plugin's own deserialization.
    Inputs(String),
    /// The context inputs passed the schema but not the plugin's own deserialization.
    Context(String),
    /// The plugin returned an error.
    Plugin(PluginError),
}

/// A plugin version as runtimes see it: metadata, schemas and a JSON execute.
pub trait DynPlugin: Send + Sync + 'static {
    /// Name, version and description.
    fn info(&self) -> PluginInfo;
    /// The JSON Schemas of inputs, context inputs and outputs.
    fn schemas(&self) -> PluginSchemas;
    /// Runs one execute.
    fn execute(&self, request: ExecuteRequest) -> BoxFuture<'_, ExecuteResponse>;
    /// Data-source APIs served under `bk_plugin/plugin_api/`.
    fn api_routes(&self) -> Vec<ApiRoute> {
        Vec::new()
    }
    /// Answers a data-source API call by its path, for a plugin whose APIs are not a fixed list of
    /// routes (a bk-plugin project resolves its own Django URL patterns). Runtimes ask the newest
    /// version of a plugin, for a call no route of [`DynPlugin::api_routes`] takes. `None` (the
    /// default): the plugin answers no API by path. An [`ApiError`] with status 404 means no API has
    /// that path.
    fn call_api(&self, request: ApiRequest) -> Option<BoxFuture<'_, Result<ApiReply, ApiError>>> {
        let _ = request;
        None
    }
    /// Whether the plugin validates and converts its inputs and context inputs itself, with its
    /// own messages (answering [`ExecuteError::Inputs`] or [`ExecuteError::Context`]): runtimes then
    /// hand it the raw values, unchecked against the schemas. A Python bk-plugin does (pydantic).
    fn validates_inputs(&self) -> bool {
        false
    }
    /// The description of the plugin as a whole (`meta`), when it is not this version's own.
    fn plugin_description(&self) -> Option<String> {
        None
    }
    /// The language the plugin is written in, as `meta` reports it.
    fn language(&self) -> &'static str {
        "rust"
    }
}

/// Adapts a typed [`Plugin`] to [`DynPlugin`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TypedPlugin<P>(pub P);

impl<P: Plugin> DynPlugin for TypedPlugin<P> {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: P::META.name.to_owned(),
            version: P::META.version.to_owned(),
            description: P::META.description.to_owned(),
            enable_plugin_callback: P::META.enable_plugin_callback,
            form: P::META.form.map(str::to_owned),
            origin: std::any::type_name::<P>().to_owned(),
        }
    }

    fn schemas(&self) -> PluginSchemas {
        PluginSchemas {
            inputs: schema_for::<P::Inputs>(),
            context_inputs: schema_for::<P::ContextInputs>(),
            outputs: schema_for::<P::Outputs>(),
        }
    }

    fn api_routes(&self) -> Vec<ApiRoute> {
        self.0.api_routes()
    }

    fn execute(&self, request: ExecuteRequest) -> BoxFuture<'_, ExecuteResponse> {
        Box::pin(async move {
            let ExecuteRequest {
                trace_id,
                state,
                invoke_count,
                inputs,
                context,
                storage,
                outputs,
                callback,
                callbacks,
            } = request;
            let fail =
                |error, storage, outputs| ExecuteResponse { result: Err(error), storage, outputs, reports: Vec::new() };
            let inputs: P::Inputs = match deserialize(inputs) {
                Ok(inputs) => inputs,
                Err(e) => return fail(ExecuteError::Inputs(e), storage, outputs),
            };
            let data: P::ContextInputs = match deserialize(context) {
                Ok(data) => data,
                Err(e) => return fail(ExecuteError::Context(e), storage, outputs),
            };
            let mut ctx = Context::new(trace_id, data, state, invoke_count, storage, outputs, callback, callbacks);
            let result = self.0.execute(inputs, &mut ctx).await.map_err(ExecuteError::Plugin);
            ExecuteResponse { result, storage: ctx.storage, outputs: ctx.outputs, reports: ctx.reports }
        })
    }
}

/// Deserializes with the JSON path of the first error, e.g. `/target/port: invalid type ...`.
fn deserialize<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::from("/") } else { format!("/{}", path.replace('.', "/")) };
        format!("{path}: {}", e.into_inner())
    })
}
