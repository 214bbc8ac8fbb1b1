//! The xz container around the LZMA2 data: the stream header, each block's header (filters
//! x86 BCJ then LZMA2, or LZMA2 alone; no integrity check), the LZMA2 chunks of each block,
//! the index and the stream footer. The CRC32 fields of headers, index and footer are not
//! computed: the payload checksum has covered every byte before decoding starts. Sizes are
//! checked instead: each block against its header, all of them against the index.

use crate::bcj::X86;
use crate::dict::{Dict, CHUNK_MAX};
use crate::input::Input;
use crate::lzma::Lzma;
use crate::{Error, Source};

const HEADER_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
const FOOTER_MAGIC: [u8; 2] = *b"YZ";
/// Stream flags: no integrity check.
const FLAGS: [u8; 2] = [0, 0];
const FILTER_X86: u64 = 0x04;
const FILTER_LZMA2: u64 = 0x21;
/// The shortest `out` that `read` takes: one x86 instruction more than it may hold back.
pub const OUT_MIN: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    StreamHeader,
    BlockHeader,
    Chunks,
    Done,
}

/// What the current block's header promises, and what it has given so far.
#[derive(Clone, Copy)]
struct Block {
    header_len: u64,
    /// From its header, when given there.
    compressed: Option<u64>,
    uncompressed: Option<u64>,
    /// `consumed` where its LZMA2 data starts.
    data_start: u64,
    decoded: u64,
    x86: bool,
    /// The LZMA2 data has ended: what the x86 filter holds back is now final.
    ended: bool,
}

/// What every block together must add up to in the index.
#[derive(Clone, Copy, Default)]
struct Totals {
    blocks: u64,
    unpadded: u64,
    uncompressed: u64,
}

/// One xz stream's decoded bytes, read out in order.
pub struct Decoder<'a, S: Source> {
    input: Input<'a, S>,
    dict: Dict<'a>,
    lzma: Lzma,
    x86: X86,
    /// Decoded bytes the x86 filter could not finish yet: they need the bytes after them.
    held: [u8; 4],
    held_len: usize,
    stage: Stage,
    block: Block,
    totals: Totals,
    /// LZMA2's rules: the first chunk of a block resets the dictionary, and an LZMA chunk
    /// needs properties before it.
    need_reset: bool,
    need_props: bool,
}

impl<'a, S: Source> Decoder<'a, S> {
    /// A decoder of the stream `source` reads, with `input` as its read buffer (at least
    /// `INPUT_MIN` bytes) and `dict` as its dictionary (at least `dict_len` of the stream's
    /// dictionary size). None when a buffer is too small.
    pub fn new(source: S, input: &'a mut [u8], dict: &'a mut [u8]) -> Option<Self> {
        if input.len() < crate::INPUT_MIN {
            return None;
        }
        Some(Decoder {
            input: Input::new(source, input),
            dict: Dict::new(dict)?,
            lzma: Lzma::new(),
            x86: X86::new(),
            held: [0; 4],
            held_len: 0,
            stage: Stage::StreamHeader,
            block: Block {
                header_len: 0,
                compressed: None,
                uncompressed: None,
                data_start: 0,
                decoded: 0,
                x86: false,
                ended: false,
            },
            totals: Totals::default(),
            need_reset: true,
            need_props: true,
        })
    }

    /// Fills the start of `out` (at least `OUT_MIN` bytes) with the next decoded bytes and
    /// returns how many: 0 only once the stream has ended, index and footer checked, and the
    /// source has nothing more.
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, Error<S::Error>> {
        if out.len() < OUT_MIN {
            return Err(Error::Malformed);
        }
        loop {
            if self.dict.pending == 0 && !self.block.ended {
                if self.stage == Stage::Done {
                    return Ok(0);
                }
                self.advance()?;
            }
            // The bytes held back from the last call come first. `take` fills at most `rest`,
            // so `out` is cut to what was made without a check that could fail.
            let held = self.held_len.min(4);
            let (start, rest) = out.split_at_mut(held);
            start.copy_from_slice(&self.held[..held]);
            let made = held + self.dict.take(rest);
            let len = out.len();
            let out = &mut out[..made.min(len)];
            let mut done = if self.block.x86 {
                self.x86.filter(out)
            } else {
                out.len()
            };
            if self.block.ended && self.dict.pending == 0 {
                // The block's last bytes: those the filter could not take stay as they are.
                done = out.len();
                self.block.ended = false;
                self.x86 = X86::new();
            }
            // At most 4 bytes: the filter finishes all but an instruction's operand.
            let keep = out.len().saturating_sub(done).min(4);
            done = out.len() - keep;
            self.held_len = keep;
            self.held[..keep].copy_from_slice(&out[done..]);
            if done > 0 {
                return Ok(done);
            }
        }
    }

    /// One step that consumes input: a header, an LZMA2 chunk, or the index and footer.
    fn advance(&mut self) -> Result<(), Error<S::Error>> {
        match self.stage {
            Stage::StreamHeader => self.stream_header(),
            Stage::BlockHeader => self.block_header(),
            Stage::Chunks => self.chunk(),
            Stage::Done => Ok(()),
        }
    }

    fn stream_header(&mut self) -> Result<(), Error<S::Error>> {
        let h = self.input.peek(12)?;
        if h[..6] != HEADER_MAGIC || h[6..8] != FLAGS {
            return Err(Error::Malformed);
        }
        self.input.skip(12);
        self.stage = Stage::BlockHeader;
        Ok(())
    }

    /// A block header (its first byte, its length in 4-byte units less one, is never 0), or
    /// the index, which starts with a 0.
    fn block_header(&mut self) -> Result<(), Error<S::Error>> {
        let start = self.input.consumed;
        let size = self.input.byte()?;
        if size == 0 {
            return self.index(start);
        }
        let header_len = (size as u64 + 1) * 4;
        // The whole header is buffered before any field of it is read.
        self.input.peek(header_len as usize - 1)?;
        let flags = self.input.byte()?;
        if flags & 0x3c != 0 {
            return Err(Error::Malformed);
        }
        let compressed = (flags & 0x40 != 0).then(|| self.input.vli()).transpose()?;
        let uncompressed = (flags & 0x80 != 0).then(|| self.input.vli()).transpose()?;
        let x86 = match flags & 3 {
            0 => false,
            1 => {
                let (id, props) = (self.input.vli()?, self.input.vli()?);
                if id != FILTER_X86 || props != 0 {
                    return Err(Error::Malformed);
                }
                true
            }
            _ => return Err(Error::Malformed),
        };
        let (id, props) = (self.input.vli()?, self.input.vli()?);
        let code = self.input.byte()?;
        if id != FILTER_LZMA2 || props != 1 || code > 40 {
            return Err(Error::Malformed);
        }
        // Dictionary code c stands for (2 + c % 2) << (c / 2 + 11) bytes.
        if (2 + (code & 1) as u64) << (code / 2 + 11) > self.dict.len() as u64 {
            return Err(Error::Malformed);
        }
        // Zeros up to the CRC32 in the header's last 4 bytes.
        let used = self.input.consumed - start;
        if used > header_len - 4 {
            return Err(Error::Malformed);
        }
        let rest = (header_len - used) as usize;
        if self.input.peek(rest)?[..rest - 4].iter().any(|b| *b != 0) {
            return Err(Error::Malformed);
        }
        self.input.skip(rest);
        self.block = Block {
            header_len,
            compressed,
            uncompressed,
            data_start: self.input.consumed,
            decoded: 0,
            x86,
            ended: false,
        };
        self.need_reset = true;
        self.need_props = true;
        self.stage = Stage::Chunks;
        Ok(())
    }

    /// One LZMA2 chunk: its control byte says what it is and what it resets.
    fn chunk(&mut self) -> Result<(), Error<S::Error>> {
        let control = self.input.byte()?;
        match control {
            0 => self.block_end(),
            1 | 2 => {
                self.dict_reset(control == 1)?;
                let h = self.input.peek(2)?;
                let len = u16::from_be_bytes([h[0], h[1]]) as usize + 1;
                self.input.skip(2);
                let data = self.input.peek(len)?;
                self.dict.put(data);
                self.input.skip(len);
                self.block.decoded += len as u64;
                Ok(())
            }
            0x80.. => self.lzma_chunk(control),
            _ => Err(Error::Malformed),
        }
    }

    fn dict_reset(&mut self, reset: bool) -> Result<(), Error<S::Error>> {
        if reset {
            self.dict.reset();
            self.need_reset = false;
        }
        if self.need_reset {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// An LZMA chunk: bits 5-6 of `control` say what it resets (1: the state, 2: the state
    /// with new properties, 3: the dictionary too); bits 0-4 and the next two bytes are its
    /// decoded size less one, the two after its compressed size less one.
    fn lzma_chunk(&mut self, control: u8) -> Result<(), Error<S::Error>> {
        let resets = (control >> 5) & 3;
        self.dict_reset(resets == 3)?;
        let header = if resets >= 2 { 5 } else { 4 };
        let h = self.input.peek(header)?;
        let out_len = ((control as usize & 0x1f) << 16 | (h[0] as usize) << 8 | h[1] as usize) + 1;
        let in_len = ((h[2] as usize) << 8 | h[3] as usize) + 1;
        if resets >= 2 {
            self.lzma.set_props(h[4]).ok_or(Error::Malformed)?;
            self.need_props = false;
        }
        if self.need_props {
            return Err(Error::Malformed);
        }
        if resets >= 1 {
            self.lzma.reset();
        }
        self.input.skip(header);
        let data = self.input.peek(in_len)?;
        self.lzma
            .decode(data, &mut self.dict, out_len)
            .ok_or(Error::Malformed)?;
        self.input.skip(in_len);
        self.block.decoded += out_len as u64;
        Ok(())
    }

    /// The end of a block's LZMA2 data: its sizes checked against its header, then the
    /// padding to a multiple of 4 bytes.
    fn block_end(&mut self) -> Result<(), Error<S::Error>> {
        let b = &mut self.block;
        let compressed = self.input.consumed - b.data_start;
        let agrees = |promised: Option<u64>, got| promised.is_none_or(|p| p == got);
        if !agrees(b.compressed, compressed) || !agrees(b.uncompressed, b.decoded) {
            return Err(Error::Malformed);
        }
        b.ended = true;
        let padding = (4 - (compressed % 4) as usize) % 4;
        if self.input.peek(padding)?.iter().any(|b| *b != 0) {
            return Err(Error::Malformed);
        }
        self.input.skip(padding);
        let t = &mut self.totals;
        t.blocks += 1;
        t.unpadded += b.header_len + compressed;
        t.uncompressed += b.decoded;
        self.stage = Stage::BlockHeader;
        Ok(())
    }

    /// The index (its indicator byte at `start` read already): one record per block, which
    /// together must match the blocks decoded; then the footer, and nothing after it.
    // Out of line, as `Lzma::reset`: read once a stream, and inlined into the decoding loop
    // around it only makes that larger.
    #[inline(never)]
    fn index(&mut self, start: u64) -> Result<(), Error<S::Error>> {
        let count = self.input.vli()?;
        let mut sums = Totals {
            blocks: count,
            ..Totals::default()
        };
        for _ in 0..count {
            sums.unpadded = sums.unpadded.wrapping_add(self.input.vli()?);
            sums.uncompressed = sums.uncompressed.wrapping_add(self.input.vli()?);
        }
        let t = self.totals;
        if (sums.blocks, sums.unpadded, sums.uncompressed) != (t.blocks, t.unpadded, t.uncompressed)
        {
            return Err(Error::Malformed);
        }
        // Zeros to a multiple of 4 bytes, then the index's CRC32.
        let padding = (4 - ((self.input.consumed - start) % 4) as usize) % 4;
        if self.input.peek(padding + 4)?[..padding]
            .iter()
            .any(|b| *b != 0)
        {
            return Err(Error::Malformed);
        }
        self.input.skip(padding + 4);
        let index_len = self.input.consumed - start;
        // The footer: its CRC32, the index's length, the stream flags again, the magic.
        let Ok([_, _, _, _, b0, b1, b2, b3, f0, f1, y, z]) =
            <[u8; 12]>::try_from(self.input.peek(12)?)
        else {
            return Err(Error::Malformed);
        };
        let backward = u32::from_le_bytes([b0, b1, b2, b3]) as u64;
        if (backward + 1) * 4 != index_len || [f0, f1] != FLAGS || [y, z] != FOOTER_MAGIC {
            return Err(Error::Malformed);
        }
        self.input.skip(12);
        if !self.input.at_end()? {
            return Err(Error::Malformed);
        }
        self.stage = Stage::Done;
        Ok(())
    }
}

/// The dictionary a stream of dictionary size `dict_size` needs: a power of two, and room for
/// one chunk at least.
pub fn dict_len(dict_size: u64) -> usize {
    (dict_size.max(CHUNK_MAX as u64) as usize).next_power_of_two()
}
