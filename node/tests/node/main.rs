//! The node (`wasp_node::LocalNode`, and the `wasp-node` binary) against the real apiserver and
//! controller-manager, with real processes: `/bin/sh`, `redis-server` and `kubectl` stand in for
//! images' binaries.

mod accounts;
mod basics;
mod binary;
mod common;
mod probes;
mod services;
mod volumes;
