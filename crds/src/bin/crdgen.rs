//! Writes the WhatsAppSession CRD into the Helm chart (or to stdout with `-`).
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let yaml = wasp_crds::crd::crd_yaml()?;
    match std::env::args().nth(1).as_deref() {
        Some("-") => print!("{yaml}"),
        Some("-h" | "--help") => {
            println!(
                "crdgen [PATH | -]\nWrites the WhatsAppSession CRD to PATH (default: {} in this repo), or stdout with -.",
                wasp_crds::crd::CRD_PATH
            )
        }
        other => {
            let path = other.map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(wasp_crds::crd::CRD_PATH)
            });
            std::fs::write(&path, yaml)?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
