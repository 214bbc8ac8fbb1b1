//! A fixed-capacity, always NUL-terminated path: the launcher has no allocator, and every path
//! it builds (cache root, bundle dir, program) fits in PATH_MAX or is refused.

use crate::sys::{Errno, Result};
use core::ffi::CStr;

pub const PATH_MAX: usize = 4096;
const ENAMETOOLONG: Errno = Errno(36);

#[derive(Clone)]
pub struct Path {
    buf: [u8; PATH_MAX],
    len: usize,
}

impl Path {
    pub const fn new() -> Path {
        Path {
            buf: [0; PATH_MAX],
            len: 0,
        }
    }

    pub fn from(bytes: &[u8]) -> Result<Path> {
        let mut p = Path::new();
        p.push(bytes)?;
        Ok(p)
    }

    /// Appends raw bytes; one byte is always kept for the terminating NUL.
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.contains(&0) || self.len + bytes.len() >= PATH_MAX {
            return Err(ENAMETOOLONG);
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self.buf[self.len] = 0;
        Ok(())
    }

    /// Appends `/` and a component or relative path.
    pub fn join(&mut self, rel: &[u8]) -> Result<()> {
        if !self.bytes().ends_with(b"/") {
            self.push(b"/")?;
        }
        self.push(rel)
    }

    pub fn joined(&self, rel: &[u8]) -> Result<Path> {
        let mut p = self.clone();
        p.join(rel)?;
        Ok(p)
    }

    pub fn truncate(&mut self, len: usize) {
        self.len = len.min(self.len);
        self.buf[self.len] = 0;
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn cstr(&self) -> &CStr {
        // The buffer always holds a NUL at `len` and none before it (push refuses NULs).
        match CStr::from_bytes_until_nul(&self.buf[..=self.len]) {
            Ok(c) => c,
            Err(_) => c"",
        }
    }
}

/// Turns a NUL-free byte string into a `CStr` in `buf`, or fails when it does not fit.
pub fn cstr_in<'a>(bytes: &[u8], buf: &'a mut [u8]) -> Result<&'a CStr> {
    if bytes.contains(&0) || bytes.len() >= buf.len() {
        return Err(ENAMETOOLONG);
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    buf[bytes.len()] = 0;
    CStr::from_bytes_until_nul(&buf[..=bytes.len()]).map_err(|_| ENAMETOOLONG)
}
