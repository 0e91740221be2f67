//! Unsigned LEB128, as Go's `binary.AppendUvarint` writes it.

use super::error::{read_exact, LtxError, Result};

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn decode(mut next_byte: impl FnMut() -> Result<u8>) -> Result<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = next_byte()?;
        if shift == 63 && b > 1 {
            break;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(LtxError::BadIndex("varint overflows 64 bits".into()))
}

/// Reads one uvarint from `buf` at `*pos`, advancing it.
pub fn get_uvarint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    decode(|| {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| LtxError::BadIndex("varint runs past the end".into()))?;
        *pos += 1;
        Ok(b)
    })
}

/// Reads one uvarint from a stream, appending its bytes to `raw` (they are checksummed).
pub fn read_uvarint(r: &mut impl std::io::Read, raw: &mut Vec<u8>) -> Result<u64> {
    decode(|| {
        let mut b = [0u8; 1];
        read_exact(r, &mut b, "page index")?;
        raw.push(b[0]);
        Ok(b[0])
    })
}
