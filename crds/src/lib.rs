//! The `WhatsAppSession` custom resource (group `wasp.dev`, version `v1alpha1`): one per user,
//! reconciled by wasp-operator into one isolated session pod.
#![forbid(unsafe_code)]

pub mod conditions;
pub mod crd;
pub mod labels;
pub mod names;
pub mod session;
pub mod validate;

pub use session::*;
