//! How the pod's binary is linked (session-pod/build.rs).

/// `-no-pie` is what keeps the relocated read-only data shared between pods; a toolchain
/// change that silently brought back a PIE would cost every pod ~0.3 MiB of private memory.
#[test]
fn the_pod_binary_is_a_fixed_address_executable_unless_asked_for_a_pie() {
    let elf = std::fs::read(env!("CARGO_BIN_EXE_wasp-session-pod")).expect("pod binary");
    assert_eq!(&elf[..4], b"\x7fELF");
    // e_type, little-endian at offset 16: 2 = ET_EXEC, 3 = ET_DYN (a PIE).
    let e_type = u16::from_le_bytes([elf[16], elf[17]]);
    let want = if option_env!("WASP_POD_PIE") == Some("1") {
        3
    } else {
        2
    };
    assert_eq!(e_type, want, "ELF type of the session pod binary");
}
