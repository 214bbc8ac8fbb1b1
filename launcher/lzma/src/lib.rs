//! tote's decoder of the packer's compressed data: one xz stream whose blocks are filtered
//! with the x86 branch converter and LZMA2, with no integrity check (the payload checksum is
//! verified before anything is decoded). `no_std` and no allocation: the caller lends the
//! read buffer and the dictionary, and reads the decoded bytes out in order.
//!
//! Any input is either decoded or refused with `Error::Malformed`: no panic, no access out of
//! bounds, and every loop is bounded by the bytes read or the bytes made.

#![no_std]

mod bcj;
mod dict;
mod input;
mod lzma;
mod range;
mod xz;

pub use xz::{dict_len, Decoder, OUT_MIN};

/// The smallest read buffer: an LZMA2 chunk's header and its 64 KiB of compressed bytes.
pub const INPUT_MIN: usize = 65 * 1024;

/// Where the compressed bytes come from, in order.
pub trait Source {
    type Error;

    /// Fills the start of `buf` with the next bytes and returns how many; 0 at the end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

/// Why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The bytes are not a stream this decoder takes, or are damaged.
    Malformed,
    /// The source failed.
    Source(E),
}
