//! The byte layers under the XML stanzas: framing, then Noise transport encryption.

pub mod cipher;
pub mod framing;
