//! Links the session pod's binary as a position-dependent executable (`-no-pie`) on Linux.
//!
//! A PIE's read-only data (vtables, string and slice tables: 312 KiB here) is relocated by the
//! dynamic loader at start, which copies those pages into every pod as private memory; a
//! fixed-address executable keeps them as clean page cache shared by every pod on the node.
//! Measured: 0.96 → 0.67 MiB private memory per extra session (docs/benchmarks.md). The price
//! is that the binary's own image is not address-randomised (its heap, stack, mmap regions and
//! shared libraries still are). `WASP_POD_PIE=1` at build time keeps the PIE.
fn main() {
    println!("cargo:rerun-if-env-changed=WASP_POD_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let keep_pie = std::env::var("WASP_POD_PIE").is_ok_and(|v| v == "1");
    if linux && !keep_pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
