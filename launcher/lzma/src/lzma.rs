//! The LZMA decoder of LZMA2 chunks: its probabilities, the state machine of what was
//! decoded last, the four most recent match distances, and the loop that turns one chunk's
//! compressed bytes into literals and matches in the dictionary.
//!
//! Every table is sized to a power of two and indexed through a mask, so the loop has no
//! bounds check to fail: a malformed chunk decodes into garbage, bounded by the chunk's
//! declared size, and is then refused as a whole.

use crate::dict::{copy_match, Dict};
use crate::range::{Prob, RangeDecoder, PROB_INIT};

/// What the state machine knows: 12 states, from 7 on the last symbol was a match of some
/// kind. Tables indexed by state have 16 rows.
const STATES: usize = 16;
const LIT_STATES: usize = 7;
/// The state after a literal, a match, a repeated match and a one-byte repeat.
const AFTER_LITERAL: [u8; STATES] = [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 4, 5, 0, 0, 0, 0];
/// At most 16 position states (pb at most 4) and 16 literal coders (lc + lp at most 4).
const POS_STATES: usize = 16;
const LIT_CODERS: usize = 16;
/// A literal coder's 0x300 probabilities, padded to a power of two.
const LIT_SIZE: usize = 0x400;
const MATCH_LEN_MIN: usize = 2;
/// The distance slots below 14 have their low bits coded with probabilities of their own, the
/// others with direct bits and the 4 align bits.
const END_POS_MODEL: usize = 14;
/// The align tree's 4 bits.
const ALIGN_LEN: usize = 16;

/// The probabilities of one length coder: two choices, then the trees of lengths 2-9 and
/// 10-17 (8 probabilities for each position state, node 0 unused), and of 18-273.
struct LenProbs {
    choice: [Prob; 2],
    trees: [Prob; LEN_TREES],
}

const LEN_TREES: usize = 2 * POS_STATES * 8 + 256;
const LEN_HIGH: usize = 2 * POS_STATES * 8;

struct Probs {
    is_match: [Prob; STATES * POS_STATES],
    is_rep: [Prob; STATES],
    is_rep0: [Prob; STATES],
    is_rep1: [Prob; STATES],
    is_rep2: [Prob; STATES],
    is_rep0_long: [Prob; STATES * POS_STATES],
    /// Six-bit slot trees, one per length class (2, 3, 4, 5 and more).
    dist_slot: [[Prob; 64]; 4],
    /// The reverse trees of the distances' low bits: the align tree of the large slots
    /// (`ALIGN_LEN`), then one tree for each slot below `END_POS_MODEL`, each right after the
    /// one before.
    dist_low: [Prob; 256],
    len: LenProbs,
    rep_len: LenProbs,
    literal: [[Prob; LIT_SIZE]; LIT_CODERS],
}

/// The coder's properties from an LZMA2 chunk header.
#[derive(Clone, Copy)]
struct Props {
    lc: u32,
    lp_mask: usize,
    pb_mask: usize,
    /// The literal coders in use, 2^(lc + lp).
    coders: usize,
}

pub struct Lzma {
    probs: Probs,
    props: Props,
    state: usize,
    reps: [usize; 4],
}

impl Lzma {
    /// A coder with no properties yet. Its probabilities are left at 0: the first LZMA chunk
    /// of every block sets properties, and `reset` with them.
    pub const fn new() -> Lzma {
        const LEN: LenProbs = LenProbs {
            choice: [0; 2],
            trees: [0; LEN_TREES],
        };
        Lzma {
            probs: Probs {
                is_match: [0; STATES * POS_STATES],
                is_rep: [0; STATES],
                is_rep0: [0; STATES],
                is_rep1: [0; STATES],
                is_rep2: [0; STATES],
                is_rep0_long: [0; STATES * POS_STATES],
                dist_slot: [[0; 64]; 4],
                dist_low: [0; 256],
                len: LEN,
                rep_len: LEN,
                literal: [[0; LIT_SIZE]; LIT_CODERS],
            },
            props: Props {
                lc: 0,
                lp_mask: 0,
                pb_mask: 0,
                coders: 0,
            },
            state: 0,
            reps: [0; 4],
        }
    }

    /// Takes the properties byte `(pb * 5 + lp) * 9 + lc`; LZMA2 allows lc + lp up to 4.
    pub fn set_props(&mut self, byte: u8) -> Option<()> {
        let b = byte as u32;
        let (lc, lp, pb) = (b % 9, b / 9 % 5, b / 45);
        if pb > 4 || lc + lp > 4 {
            return None;
        }
        self.props = Props {
            lc,
            lp_mask: (1 << lp) - 1,
            pb_mask: (1 << pb) - 1,
            coders: 1 << (lc + lp),
        };
        Some(())
    }

    /// Back to the initial state: every probability one half, every distance 0.
    // Out of line: inlined, it takes registers from the decoding loop around it, which grows
    // by more than the call costs.
    #[inline(never)]
    pub fn reset(&mut self) {
        let p = &mut self.probs;
        let coders = self.props.coders;
        let literal = p.literal.as_flattened_mut();
        let literal_len = (coders * LIT_SIZE).min(literal.len());
        for table in [
            &mut p.is_match[..],
            &mut p.is_rep,
            &mut p.is_rep0,
            &mut p.is_rep1,
            &mut p.is_rep2,
            &mut p.is_rep0_long,
            p.dist_slot.as_flattened_mut(),
            &mut p.dist_low,
            &mut p.len.choice,
            &mut p.len.trees,
            &mut p.rep_len.choice,
            &mut p.rep_len.trees,
            &mut literal[..literal_len],
        ] {
            table.fill(PROB_INIT);
        }
        self.state = 0;
        self.reps = [0; 4];
    }

    /// Decodes one chunk, `input` its compressed bytes, into `out_len` bytes at the end of
    /// `dict`. None when the chunk is malformed: a distance beyond the history, a match
    /// past the chunk's end, or compressed bytes that do not end where the coder does.
    pub fn decode(&mut self, input: &[u8], dict: &mut Dict, out_len: usize) -> Option<()> {
        if out_len > dict.len() - dict.pending {
            return None;
        }
        let mut rc = RangeDecoder::new(input)?;
        let probs = &mut self.probs;
        let Props {
            lc,
            lp_mask,
            pb_mask,
            ..
        } = self.props;
        let buf = &mut *dict.buf;
        let mask = buf.len() - 1;
        let start_filled = dict.filled;
        let mut pos = dict.pos;
        let mut left = out_len;
        let mut state = self.state;
        let [mut rep0, mut rep1, mut rep2, mut rep3] = self.reps;
        let mut prev = if start_filled > 0 {
            buf[pos.wrapping_sub(1) & mask]
        } else {
            0
        };
        while left > 0 {
            let pos_state = pos & pb_mask;
            if rc.bit(&mut probs.is_match[(state << 4 | pos_state) & 0xff]) == 0 {
                let coder = (((pos & lp_mask) << lc) + (prev as usize >> (8 - lc))) & 15;
                let probs = &mut probs.literal[coder];
                // After a match, the byte at the last distance guides the literal's bits.
                let matched = buf[pos.wrapping_sub(rep0 + 1) & mask];
                prev = literal(&mut rc, probs, matched, state >= LIT_STATES);
                buf[pos & mask] = prev;
                pos = (pos + 1) & mask;
                left -= 1;
                state = AFTER_LITERAL[state & 15] as usize;
                continue;
            }
            let len = if rc.bit(&mut probs.is_rep[state & 15]) == 0 {
                let len = length(&mut rc, &mut probs.len, pos_state);
                state = if state < LIT_STATES { 7 } else { 10 };
                rep3 = rep2;
                rep2 = rep1;
                rep1 = rep0;
                rep0 = distance(&mut rc, probs, len)?;
                len
            } else {
                // A repeated match: one of the four last distances, rep0 after it.
                if rc.bit(&mut probs.is_rep0[state & 15]) == 0 {
                    if rc.bit(&mut probs.is_rep0_long[(state << 4 | pos_state) & 0xff]) == 0 {
                        // One byte from the last distance.
                        if rep0 >= history(start_filled, out_len - left, mask) {
                            return None;
                        }
                        state = if state < LIT_STATES { 9 } else { 11 };
                        prev = buf[pos.wrapping_sub(rep0 + 1) & mask];
                        buf[pos & mask] = prev;
                        pos = (pos + 1) & mask;
                        left -= 1;
                        continue;
                    }
                } else {
                    let dist = if rc.bit(&mut probs.is_rep1[state & 15]) == 0 {
                        rep1
                    } else if rc.bit(&mut probs.is_rep2[state & 15]) == 0 {
                        let d = rep2;
                        rep2 = rep1;
                        d
                    } else {
                        let d = rep3;
                        rep3 = rep2;
                        rep2 = rep1;
                        d
                    };
                    rep1 = rep0;
                    rep0 = dist;
                }
                state = if state < LIT_STATES { 8 } else { 11 };
                length(&mut rc, &mut probs.rep_len, pos_state)
            };
            if rep0 >= history(start_filled, out_len - left, mask) || len > left {
                return None;
            }
            pos = copy_match(buf, pos, rep0, len);
            prev = buf[pos.wrapping_sub(1) & mask];
            left -= len;
        }
        if !rc.finished() {
            return None;
        }
        self.state = state;
        self.reps = [rep0, rep1, rep2, rep3];
        dict.pos = pos;
        dict.wrote(out_len);
        Some(())
    }
}

/// How many bytes of history a match may reach back into: those there before the chunk, and
/// the `made` so far, up to the whole ring.
#[inline(always)]
fn history(before: usize, made: usize, mask: usize) -> usize {
    (before + made).min(mask + 1)
}

/// A literal: eight bits down the coder's tree. After a match (`after_match`), while its bits
/// agree with `matched`, the byte at the last distance, each bit is coded with the
/// probabilities of that byte's bit; from the first difference on, as a plain literal.
#[inline(always)]
fn literal(
    rc: &mut RangeDecoder,
    probs: &mut [Prob; LIT_SIZE],
    matched: u8,
    after_match: bool,
) -> u8 {
    let mut m = 1;
    let mut matched = matched as usize;
    // 0x100 while the bits agree, 0 from the first difference (or from the start).
    let mut offset = if after_match { 0x100 } else { 0 };
    for _ in 0..8 {
        matched <<= 1;
        let match_bit = matched & offset;
        let bit = rc.bit(&mut probs[(offset + match_bit + m) & (LIT_SIZE - 1)]);
        m = (m << 1) | bit;
        offset &= if bit == 1 { match_bit } else { !match_bit };
    }
    m as u8
}

/// A match length, 2 to 273: one tree walk of 3 or 8 bits, whichever tree the choices pick.
#[inline(always)]
fn length(rc: &mut RangeDecoder, probs: &mut LenProbs, pos_state: usize) -> usize {
    let row = (pos_state & (POS_STATES - 1)) * 8;
    let (tree, bits, min) = if rc.bit(&mut probs.choice[0]) == 0 {
        (row, 3, MATCH_LEN_MIN)
    } else if rc.bit(&mut probs.choice[1]) == 0 {
        (POS_STATES * 8 + row, 3, MATCH_LEN_MIN + 8)
    } else {
        (LEN_HIGH, 8, MATCH_LEN_MIN + 16)
    };
    min + rc.tree(&mut probs.trees, tree, bits)
}

/// A match distance for a match of `len` bytes; None for the end marker, which LZMA2 does
/// not allow.
#[inline(always)]
fn distance(rc: &mut RangeDecoder, probs: &mut Probs, len: usize) -> Option<usize> {
    let class = (len - MATCH_LEN_MIN).min(3);
    let slot = rc.tree(&mut probs.dist_slot[class & 3], 0, 6);
    if slot < 4 {
        return Some(slot);
    }
    let bits = (slot as u32 >> 1) - 1;
    let base = (2 | (slot & 1)) << bits;
    // Slots below END_POS_MODEL code all their low bits with a tree of their own; the others
    // the top ones direct, and the last 4 with the align tree.
    let (high, tree, tree_bits) = if slot < END_POS_MODEL {
        (0, ALIGN_LEN + base - slot - 1, bits)
    } else {
        ((rc.direct(bits - 4) as usize) << 4, 0, 4)
    };
    let dist = base + high + rc.reverse_tree(&mut probs.dist_low, tree, tree_bits);
    if dist == u32::MAX as usize {
        return None;
    }
    Some(dist)
}
