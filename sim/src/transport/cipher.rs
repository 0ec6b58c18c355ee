//! Post-handshake frame encryption: AES-256-GCM with a per-direction counter as the nonce,
//! exactly as the client's `NoiseSocket` expects (counters start at 0 and never wrap).

use thiserror::Error;
use wacore_noise::NoiseCipher;

#[derive(Debug, Error)]
pub enum CipherError {
    #[error("frame failed to decrypt: {0}")]
    Decrypt(wacore_noise::NoiseError),
    #[error("frame failed to encrypt: {0}")]
    Encrypt(wacore_noise::NoiseError),
    #[error("frame counter exhausted")]
    CounterExhausted,
}

/// The server's half of an established Noise transport.
pub struct FrameCipher {
    /// Client → server.
    read: NoiseCipher,
    /// Server → client.
    write: NoiseCipher,
    read_counter: u32,
    write_counter: u32,
}

impl FrameCipher {
    pub fn new(read: NoiseCipher, write: NoiseCipher) -> Self {
        Self {
            read,
            write,
            read_counter: 0,
            write_counter: 0,
        }
    }

    pub fn decrypt(&mut self, mut frame: Vec<u8>) -> Result<Vec<u8>, CipherError> {
        let counter = self.read_counter;
        self.read_counter = counter
            .checked_add(1)
            .ok_or(CipherError::CounterExhausted)?;
        self.read
            .decrypt_in_place_with_counter(counter, &mut frame)
            .map_err(CipherError::Decrypt)?;
        Ok(frame)
    }

    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
        let counter = self.write_counter;
        self.write_counter = counter
            .checked_add(1)
            .ok_or(CipherError::CounterExhausted)?;
        self.write
            .encrypt_with_counter(counter, plaintext)
            .map_err(CipherError::Encrypt)
    }
}
