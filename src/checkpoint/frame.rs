//! The envelope of convcg's binary files (checkpoints, the feature state):
//! `magic [u8; 8] | version u32 | body length u64 | body | CRC-32 (IEEE) u32 of all before it`,
//! little-endian. [`unframe`] checks all of it before the body is read.

use std::path::Path;

use super::CheckpointError;

/// Magic, version and body length.
pub(crate) const HEADER_LEN: usize = 8 + 4 + 8;
/// The trailing CRC-32.
pub(crate) const CRC_LEN: usize = 4;

/// The bytes of the file at `path`, or a [`CheckpointError`] that names it.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|e| CheckpointError {
        path: path.to_owned(),
        problem: format!("cannot read it: {e}"),
    })
}

/// `body` in the envelope.
pub(crate) fn frame(magic: &[u8; 8], version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CRC_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The body of a file in the envelope, once its magic, version, length and checksum are right;
/// else what is wrong. `kind` names the file kind in messages ("a convcg checkpoint").
pub(crate) fn unframe<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    version: u32,
    kind: &str,
) -> Result<&'a [u8], String> {
    if bytes.len() < HEADER_LEN + CRC_LEN {
        return Err(format!(
            "truncated: {} bytes, shorter than the {} of an empty file",
            bytes.len(),
            HEADER_LEN + CRC_LEN
        ));
    }
    if bytes[..8] != magic[..] {
        return Err(format!(
            "not {kind} (it does not start with {})",
            String::from_utf8_lossy(magic)
        ));
    }
    let found = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if found != version {
        return Err(format!(
            "format version {found}, but this build reads version {version}"
        ));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let body = u64::from_le_bytes(len);
    let expected = body.checked_add((HEADER_LEN + CRC_LEN) as u64);
    let actual = bytes.len() as u64;
    match expected {
        Some(e) if e > actual => {
            return Err(format!(
                "truncated: the header promises {e} bytes, the file has {actual}"
            ));
        }
        Some(e) if e < actual => {
            return Err(format!(
                "corrupted: {} bytes after the end the header gives ({e} bytes)",
                actual - e
            ));
        }
        Some(_) => {}
        None => return Err(format!("corrupted: a body length of {body} bytes")),
    }
    let (content, stored) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32fast::hash(content);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is corrupted"
        ));
    }
    Ok(&content[HEADER_LEN..])
}
