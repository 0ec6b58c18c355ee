//! Label and annotation keys wasp puts on the objects it owns.

pub const APP_NAME: &str = "app.kubernetes.io/name";
pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";
pub const APP_COMPONENT: &str = "app.kubernetes.io/component";
pub const APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const APP_PART_OF: &str = "app.kubernetes.io/part-of";

/// Name of the WhatsAppSession a pod or secret belongs to.
pub const SESSION: &str = "wasp.dev/session";
/// Hash of the user id (the raw id may not be a valid label value).
pub const USER_HASH: &str = "wasp.dev/user-hash";
/// Hash of the desired pod; a different hash means the pod must be replaced.
pub const POD_SPEC_HASH: &str = "wasp.dev/pod-spec-hash";
/// Finalizer that logs the device out and purges the user's data before the CR goes.
pub const FINALIZER: &str = "wasp.dev/session-cleanup";
