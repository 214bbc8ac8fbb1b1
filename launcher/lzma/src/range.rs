//! The range decoder of one LZMA chunk: the arithmetic decoding of bits against adaptive
//! probabilities, of bit trees, and of bits with no probability ("direct" bits). The chunk's
//! compressed bytes are one slice; reading past its end yields zeros, so no read can fail in
//! the middle of a symbol, and `finished` then refuses the chunk as a whole.

/// A probability: the chance, in 1/2048ths, that the next bit is 0.
pub type Prob = u16;

/// Every probability starts at one half.
pub const PROB_INIT: Prob = 1 << 10;
const PROB_BITS: u32 = 11;
/// How fast a probability adapts: it moves by 1/32 of its distance to the bit seen.
const ADAPT: u32 = 5;
/// The range is kept at 2^24 or more: one more byte is shifted in below that.
const TOP: u32 = 1 << 24;

pub struct RangeDecoder<'a> {
    input: &'a [u8],
    at: usize,
    range: u32,
    code: u32,
}

impl<'a> RangeDecoder<'a> {
    /// Starts on a chunk's compressed bytes: the encoder's first byte is always 0, the next
    /// four are the initial code.
    pub fn new(input: &'a [u8]) -> Option<RangeDecoder<'a>> {
        match input {
            [0, a, b, c, d, ..] => Some(RangeDecoder {
                input,
                at: 5,
                range: u32::MAX,
                code: u32::from_be_bytes([*a, *b, *c, *d]),
            }),
            _ => None,
        }
    }

    /// Whether the chunk ended where the encoder's flush ends it: every byte read, none
    /// beyond, and the code back at zero.
    pub fn finished(&self) -> bool {
        self.at == self.input.len() && self.code == 0
    }

    #[inline(always)]
    fn normalize(&mut self) {
        if self.range < TOP {
            let byte = self.input.get(self.at).copied().unwrap_or(0);
            self.at += 1;
            self.range <<= 8;
            self.code = (self.code << 8) | byte as u32;
        }
    }

    /// One bit against probability `p`, which then adapts to it.
    #[inline(always)]
    pub fn bit(&mut self, p: &mut Prob) -> usize {
        let prob = *p as u32;
        let bound = (self.range >> PROB_BITS) * prob;
        let bit = if self.code < bound {
            self.range = bound;
            *p = (prob + (((1 << PROB_BITS) - prob) >> ADAPT)) as Prob;
            0
        } else {
            self.range -= bound;
            self.code -= bound;
            *p = (prob - (prob >> ADAPT)) as Prob;
            1
        };
        self.normalize();
        bit
    }

    /// A symbol of `bits` bits, most significant first, each bit's probability chosen by the
    /// bits above it: node `m` of the tree is `probs[base + m]`, the root is 1.
    #[inline(always)]
    pub fn tree<const N: usize>(&mut self, probs: &mut [Prob; N], base: usize, bits: u32) -> usize {
        let leaves = 1 << bits;
        let mut m = 1;
        while m < leaves {
            m = (m << 1) | self.bit(&mut probs[(base + m) & (N - 1)]);
        }
        m - leaves
    }

    /// A symbol of `bits` bits, least significant first, through the tree whose node `m` is
    /// `probs[base + m]`.
    #[inline(always)]
    pub fn reverse_tree<const N: usize>(
        &mut self,
        probs: &mut [Prob; N],
        base: usize,
        bits: u32,
    ) -> usize {
        let mut m = 1;
        let mut symbol = 0;
        for i in 0..bits {
            let bit = self.bit(&mut probs[(base + m) & (N - 1)]);
            m = (m << 1) | bit;
            symbol |= bit << i;
        }
        symbol
    }

    /// `count` bits of even chance, most significant first.
    pub fn direct(&mut self, count: u32) -> u32 {
        let mut value = 0u32;
        for _ in 0..count {
            self.range >>= 1;
            let bit = self.code >= self.range;
            if bit {
                self.code -= self.range;
            }
            value = (value << 1) | bit as u32;
            self.normalize();
        }
        value
    }
}
