/*!
The plugins that ship with plugd.

Each module is one plugin, written against the public kit only: nothing about them is special, and
each doubles as an example of a kit feature.

| plugin | versions | shows |
|---|---|---|
| [`hello`] | 1.0.0, 2.0.0 | typed inputs with defaults; a second version adding an input and changing outputs |
| [`countdown`] | 1.0.0 | POLL: storage carried between executes |
| [`approval`] | 1.0.0 | CALLBACK: a prepared callback URL, re-waiting on callbacks it does not know |
| [`webhook`] | 1.0.0 | HTTP with HMAC signatures and retries (release hooks) |
| [`email`] | 1.0.0 | SMTP, with the rez recipients rules (release hooks) |
| [`amqp`] | 1.0.0 | the rez release message, with publisher confirms (release hooks) |

The `command` plugin lives in `plugd-process`, beside the code that runs processes. Secrets (SMTP and
AMQP passwords, webhook secrets) come from the environment or files, never from inputs, and are
redacted from every message.
*/
#![deny(missing_docs)]

pub mod amqp;
pub mod approval;
pub mod countdown;
pub mod email;
pub mod hello;
pub mod secret;
pub mod system;
pub mod webhook;

use plugd_sdk::DynPlugin;
use std::sync::Arc;

/// Every built-in plugin version, ready for a registry.
pub fn all() -> Vec<Arc<dyn DynPlugin>> {
    use plugd_sdk::TypedPlugin;
    vec![
        Arc::new(TypedPlugin(hello::HelloV1)),
        Arc::new(TypedPlugin(hello::HelloV2)),
        Arc::new(TypedPlugin(countdown::Countdown)),
        Arc::new(TypedPlugin(approval::Approval)),
        Arc::new(TypedPlugin(webhook::Webhook)),
        Arc::new(TypedPlugin(email::Email)),
        Arc::new(TypedPlugin(amqp::Amqp)),
    ]
}
