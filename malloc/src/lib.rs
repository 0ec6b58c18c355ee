//! glibc's allocator keeps what a process freed: a pod that peaked during pairing (prekeys,
//! the first app-state sync) stays resident at that peak, and every thread that ever allocated
//! leaves an arena of its own. For one idle session that was ~0.5 MiB of the 1.4 MiB private
//! memory per pod (docs/benchmarks.md, "memory per extra session"). These are the two calls
//! that give it back. On other C libraries (musl, macOS) both do nothing: they have no arenas
//! per thread and return free pages themselves.

/// One malloc arena for the whole process. Call first thing in `main`, before any thread
/// starts. A session pod runs one runtime thread; its short-lived blocking helpers (DNS,
/// encrypting a large frame) would each leave a 132 KiB arena behind.
pub fn one_arena() -> bool {
    imp::one_arena()
}

/// Returns the allocator's free pages to the kernel (`malloc_trim(0)`: also the free pages in
/// the middle of the heap, not only its top). Live allocations are untouched. Cheap on a
/// small heap; call it when the process is quiet, not in a hot loop. True if anything was
/// returned.
pub fn release_free_memory() -> bool {
    imp::release_free_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub fn one_arena() -> bool {
        // SAFETY: mallopt takes two integers and no pointers; glibc locks its own state.
        #[allow(unsafe_code)]
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        ok == 1
    }

    pub fn release_free_memory() -> bool {
        // SAFETY: malloc_trim takes one integer and no pointers; glibc locks every arena it
        // walks, so it is safe from any thread at any time.
        #[allow(unsafe_code)]
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn one_arena() -> bool {
        false
    }

    pub fn release_free_memory() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    /// A freed allocation in the middle of the heap (kept there by a live one above it) is
    /// resident until trimmed: the trim must give its pages back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_pages_below_a_live_allocation_go_back_to_the_kernel() {
        fn rss_anon_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("RssAnon")
        }
        assert!(super::one_arena());
        // Many small blocks (below the mmap threshold, so they live in the heap), touched.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 1024]).collect();
        let pin = vec![1u8; 1024];
        let before_free = rss_anon_kib();
        blocks.clear();
        blocks.shrink_to_fit();
        let freed = rss_anon_kib();
        assert!(super::release_free_memory());
        let trimmed = rss_anon_kib();
        assert!(
            trimmed + 2048 <= freed,
            "4 MiB freed: RssAnon {before_free} → {freed} after free → {trimmed} KiB after trim"
        );
        drop(pin);
    }
}
