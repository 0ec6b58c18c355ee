//! Pairing by phone number: the companion asks for a code, the user types it on the phone.

use crate::pairing::PairingError;
use crate::sim::{Sim, SimError};
use crate::world::DeviceAddr;

impl Sim {
    /// The phone's user enters the 8-character code a companion displayed.
    pub fn enter_pair_code(&self, phone: &str, code: &str) -> Result<DeviceAddr, SimError> {
        let _ = (phone, code);
        Err(PairingError::BadPairingCode.into())
    }
}
