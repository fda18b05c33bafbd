//! RFC 6455 text frames, built and masked in one pass: the scan path hands Python one buffer of
//! frames per batch instead of one object per file.
//!
//! A client must mask every frame it sends with a fresh, unpredictable 4-byte key (§5.3), so a
//! proxy cannot be fed a chosen byte sequence. Keys come from `MaskKeys`, a wyrand generator
//! seeded from the kernel's `getrandom` each time one is made (once per batch, so a forked
//! process never repeats its parent's keys).

use std::io;

const TEXT_FIN: u8 = 0x81; // FIN bit + opcode 1 (text)
const MASK_BIT: u8 = 0x80;

/// A stream of mask keys.
pub struct MaskKeys {
    state: u64,
    spare: Option<[u8; 4]>,
}

impl MaskKeys {
    /// Seeded from the operating system's entropy.
    pub fn from_os() -> io::Result<MaskKeys> {
        Ok(MaskKeys::from_seed(os_seed()?))
    }

    /// Seeded with `seed` (tests: reproducible keys).
    pub fn from_seed(seed: u64) -> MaskKeys {
        MaskKeys {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // wyrand: one multiply per 64 bits, passes BigCrush/PractRand.
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let product = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        (product >> 64) as u64 ^ product as u64
    }

    /// The next key; two keys are drawn from each 64-bit output.
    pub fn next_key(&mut self) -> [u8; 4] {
        if let Some(key) = self.spare.take() {
            return key;
        }
        let bytes = self.next_u64().to_le_bytes();
        self.spare = Some([bytes[4], bytes[5], bytes[6], bytes[7]]);
        [bytes[0], bytes[1], bytes[2], bytes[3]]
    }
}

/// 64 bits from `getrandom(2)`.
pub fn os_seed() -> io::Result<u64> {
    let mut seed = [0u8; 8];
    let mut filled = 0;
    while filled < seed.len() {
        // SAFETY: the pointer and length describe the unfilled part of `seed`.
        let result =
            unsafe { libc::getrandom(seed[filled..].as_mut_ptr().cast(), seed.len() - filled, 0) };
        if result < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        filled += result as usize;
    }
    Ok(u64::from_le_bytes(seed))
}

/// XORs `data` with `key` repeated (RFC 6455 §5.3), `data[0]` against `key[0]`.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let value = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, hence of 4: the key's phase is 0 again.
    for (byte, mask) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= mask;
    }
}

/// Appends one unfragmented text frame carrying `payload`, masked when `key` is given.
pub fn push_text_frame(out: &mut Vec<u8>, payload: &[u8], key: Option<[u8; 4]>) {
    let mask_bit = if key.is_some() { MASK_BIT } else { 0 };
    let length = payload.len();
    out.reserve(length + 14);
    out.push(TEXT_FIN);
    if length < 126 {
        out.push(mask_bit | length as u8);
    } else if length < 65536 {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(length as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(length as u64).to_be_bytes());
    }
    let start = out.len() + if key.is_some() { 4 } else { 0 };
    if let Some(key) = key {
        out.extend_from_slice(&key);
    }
    out.extend_from_slice(payload);
    if let Some(key) = key {
        apply_mask(&mut out[start..], key);
    }
}

/// Frames of every item of `payloads`, in order; masked with keys from `keys` when given.
pub fn text_frames<'a>(
    payloads: impl IntoIterator<Item = &'a [u8]>,
    mut keys: Option<&mut MaskKeys>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in payloads {
        let key = keys.as_deref_mut().map(MaskKeys::next_key);
        push_text_frame(&mut out, payload, key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference decoder written from the RFC: (masked, key, payload) of each frame.
    fn decode(mut data: &[u8]) -> Vec<(bool, [u8; 4], Vec<u8>)> {
        let mut frames = Vec::new();
        while !data.is_empty() {
            assert_eq!(data[0], 0x81);
            let masked = data[1] & 0x80 != 0;
            let (length, mut position) = match data[1] & 0x7f {
                126 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(data[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                small => (small as usize, 2),
            };
            let mut key = [0u8; 4];
            if masked {
                key.copy_from_slice(&data[position..position + 4]);
                position += 4;
            }
            let payload: Vec<u8> = data[position..position + length]
                .iter()
                .enumerate()
                .map(|(i, byte)| if masked { byte ^ key[i % 4] } else { *byte })
                .collect();
            frames.push((masked, key, payload));
            data = &data[position + length..];
        }
        frames
    }

    fn payloads() -> Vec<Vec<u8>> {
        let mut payloads = vec![Vec::new(), b"a".to_vec(), "é€😀".as_bytes().to_vec()];
        for length in [7, 8, 9, 125, 126, 127, 65535, 65536, 70001] {
            payloads.push((0..length).map(|i| (i * 7 % 251) as u8).collect());
        }
        payloads
    }

    #[test]
    fn masked_frames_decode_to_their_payloads() {
        let payloads = payloads();
        let mut keys = MaskKeys::from_seed(42);
        let data = text_frames(payloads.iter().map(Vec::as_slice), Some(&mut keys));
        let frames = decode(&data);
        assert_eq!(frames.len(), payloads.len());
        for ((masked, _key, payload), expected) in frames.iter().zip(&payloads) {
            assert!(masked);
            assert_eq!(payload, expected);
        }
    }

    #[test]
    fn unmasked_frames_carry_their_payloads_as_is() {
        let payloads = payloads();
        let data = text_frames(payloads.iter().map(Vec::as_slice), None);
        let frames = decode(&data);
        for ((masked, _key, payload), expected) in frames.iter().zip(&payloads) {
            assert!(!masked);
            assert_eq!(payload, expected);
        }
    }

    #[test]
    fn every_frame_has_its_own_key() {
        let mut keys = MaskKeys::from_seed(7);
        let data = text_frames(std::iter::repeat(&b"abcd"[..]).take(1000), Some(&mut keys));
        let mut seen: Vec<[u8; 4]> = decode(&data).into_iter().map(|f| f.1).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn mask_matches_the_bytewise_definition() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for length in 0..40 {
            let original: Vec<u8> = (0..length as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, key);
            let expected: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(data, expected);
        }
    }

    #[test]
    fn os_seeds_differ() {
        assert_ne!(os_seed().unwrap(), os_seed().unwrap());
    }
}
