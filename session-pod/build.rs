//! Links the session pod's binaries as position-dependent executables (`-no-pie`).
//!
//! A PIE is relocated at load time: every pointer in its read-only data (vtables, string and
//! slice tables, ~0.5 MiB in the release binary) is written once by the dynamic loader, so those
//! pages become private anonymous memory in every pod. Linked at a fixed address the same pages
//! stay clean file-backed page cache, shared by every pod on the node that runs the same binary
//! (docs/benchmarks.md, "Session pod: memory per extra session"). The price is that the binary's
//! own image is not randomised (its heap, stack and libraries still are).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
