/*!
The plugd runtime core: everything between a request to run a plugin and its outcome, without I/O.

- [`Registry`] holds many plugins and many versions of each, checks them at startup (semantic
  versions, unique name and version, compilable schemas) and looks them up by name and version.
- [`SchemaValidator`] validates inputs, context inputs and outputs against their JSON Schemas, with
  errors that name the JSON path and what was expected.
- [`Executor::step`] runs one execute of an [`Invocation`] and returns the [`Step`] to apply: the
  state machine of the bk-plugin contract (EMPTY → POLL/CALLBACK → SUCCESS/FAIL), the invoke count,
  storage and outputs carry-over, and the error prefixes. It persists nothing: `plugd run` keeps the
  invocation in memory, `plugd serve` writes each step to its store.
- [`coerce`] converts inputs the way pydantic v1 does (`"3"` for an integer), for `plugd serve`'s
  callers written against the Python framework.
- [`SignedCallbacks`] issues and verifies HMAC-signed callback URLs.

# Example

```
use std::sync::Arc;
use plugd_core::{Executor, Invocation, Registry, SignedCallbacks, Trigger};
# use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
# struct Noop;
# impl Plugin for Noop {
#     type Inputs = Empty; type ContextInputs = Empty; type Outputs = Empty;
#     const META: Meta = Meta::new("noop", "1.0.0");
#     async fn execute(&self, _: Empty, _: &mut Context<Empty>) -> Result<Outcome, PluginError> { Ok(Outcome::Success) }
# }

# tokio::runtime::Runtime::new().unwrap().block_on(async {
let registry = Arc::new(Registry::builder().plugin(Noop).build().unwrap());
let callbacks = Arc::new(SignedCallbacks::new(b"a secret of 32 bytes or more....", "http://127.0.0.1:8000"));
let executor = Executor::new(registry, callbacks);

let mut invocation = Invocation::new("noop", "1.0.0", serde_json::json!({}), serde_json::json!({}));
let step = executor.step(&invocation, Trigger::Start).await.unwrap();
invocation.apply(step);
assert_eq!(invocation.state, plugd_sdk::State::Success);
# });
```
*/
#![deny(missing_docs)]

mod callback;
pub mod cluster;
mod coerce;
mod executor;
mod invocation;
mod registry;
pub mod schedule;
pub mod schema;
mod state;
pub mod store;
pub mod transfer;
mod validate;

pub use callback::{CallbackClaims, SignedCallbacks, TokenError, DEFAULT_CALLBACK_TTL};
pub use coerce::coerce;
pub use executor::{Executor, Step, StepError};
pub use invocation::{new_trace_id, Invocation, Trigger};
pub use plugd_sdk::{is_valid_name, parse_version};
pub use registry::{LookupError, RegisteredPlugin, Registry, RegistryBuilder, RegistryError};
pub use state::{transition, TransitionError};
pub use validate::{FieldError, SchemaCompileError, SchemaValidator, ValidationErrors};

pub use plugd_sdk::State;
