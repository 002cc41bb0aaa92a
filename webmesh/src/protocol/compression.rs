//! zlib for native binary frames, with the zlib state reused per thread.
//!
//! A new `flate2::Compress` allocates about 300 KiB and a `Decompress` about
//! 40 KiB, so one of each is kept per worker thread and reset between
//! messages instead of being created per message or per connection.

use std::cell::RefCell;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

use super::wire::DecodeError;

/// The first byte of every zlib stream webmesh writes (deflate, 32 KiB window).
/// It cannot start a MessagePack array or map, so it marks a compressed frame.
pub(crate) const ZLIB_HEADER: u8 = 0x78;

/// When native binary frames are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compression {
    /// Encoded envelopes of at least this many bytes are compressed;
    /// `usize::MAX` turns compression off.
    pub(crate) threshold: usize,
}

impl Default for Compression {
    fn default() -> Self {
        Self { threshold: 1024 }
    }
}

thread_local! {
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(flate2::Compression::fast(), true));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(true));
}

/// Compresses `input` into a zlib stream.
pub(crate) fn compress(input: &[u8]) -> Vec<u8> {
    DEFLATE.with(|state| {
        let mut state = state.borrow_mut();
        state.reset();
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        loop {
            let consumed = state.total_in() as usize;
            let status = state.compress_vec(&input[consumed..], &mut out, FlushCompress::Finish);
            match status {
                Ok(Status::StreamEnd) => return out,
                // Out of room: grow and go on. Compression of a byte slice
                // into a vector has no other failure.
                _ => out.reserve(out.capacity().max(64)),
            }
        }
    })
}

/// Inflates a zlib stream, failing as soon as the output would exceed `max` bytes.
pub(crate) fn decompress(input: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    INFLATE.with(|state| {
        let mut state = state.borrow_mut();
        state.reset(true);
        let mut out = Vec::with_capacity(input.len().saturating_mul(4).clamp(64, max.saturating_add(1)));
        loop {
            let (in_before, out_before) = (state.total_in(), state.total_out());
            let consumed = in_before as usize;
            let status = state
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Finish)
                .map_err(|e| DecodeError::Compression(e.to_string()))?;
            if out.len() > max {
                return Err(DecodeError::TooLarge { limit: max });
            }
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if out.len() == out.capacity() {
                // Grow geometrically, but never past the limit (plus one byte to detect overflow).
                let target = out.len().saturating_mul(2).min(max.saturating_add(1));
                if target <= out.len() {
                    return Err(DecodeError::TooLarge { limit: max });
                }
                out.reserve_exact(target - out.len());
            } else if state.total_in() == in_before && state.total_out() == out_before {
                return Err(DecodeError::Compression("truncated zlib stream".into()));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_reuses_state() {
        for n in [0usize, 1, 100, 70_000] {
            let input: Vec<u8> = (0..n).map(|i| (i % 7) as u8).collect();
            let packed = compress(&input);
            assert_eq!(packed[0], ZLIB_HEADER);
            assert_eq!(decompress(&packed, 1 << 20).unwrap(), input);
        }
    }

    #[test]
    fn limit_is_enforced_while_inflating() {
        let bomb = compress(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < (10 << 20) / 100, "{} bytes", bomb.len());
        assert!(matches!(decompress(&bomb, 1 << 20), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn truncated_and_corrupt_streams_are_errors() {
        let packed = compress(&[7u8; 5000]);
        assert!(decompress(&packed[..packed.len() / 2], 1 << 20).is_err());
        assert!(decompress(&[0x78, 0x9c, 0xff, 0xff, 0xff], 1 << 20).is_err());
        // The state is still usable after errors.
        assert_eq!(decompress(&packed, 1 << 20).unwrap(), vec![7u8; 5000]);
    }
}
