//! The decoding side of the xz format's x86 branch converter (BCJ). Before compression the
//! encoder turned the 32-bit relative targets of CALL (E8) and JMP (E9) instructions into
//! absolute ones, so calls of one function from many places look alike; this turns them back.
//!
//! The rule, which both sides apply to the same bytes: an E8 or E9 byte starts a candidate
//! when the last of its four operand bytes is 0x00 or 0xFF (a small displacement). A candidate
//! is converted unless the three bytes before it hold more than one earlier candidate that was
//! left alone, or one such whose own last operand byte was 0x00 or 0xFF; a converted candidate
//! is skipped whole. Converted targets keep 25 significant bits, sign-extended; where the
//! position of an earlier candidate lands inside the new value, the value is turned again as
//! the format specifies.

/// Which numbers of left-alone candidates among the three bytes before (bit 0: one byte
/// before, bit 2: three before) let a candidate be converted.
const CONVERTIBLE: [bool; 8] = [true, true, true, false, true, false, false, false];
/// The distance of the nearest left-alone candidate, by the same index.
const NEAREST: [u32; 8] = [0, 1, 2, 2, 3, 3, 3, 3];

pub struct X86 {
    /// The position, in the block's decoded bytes, of the next buffer's first byte.
    pos: u32,
    /// The position of the last E8 or E9 byte seen.
    last: u32,
    /// The candidates left alone near `last`, as seen from it: bit k (0 to 3) is one k bytes
    /// before it, bit 4 + k says that one's last operand byte was 0x00 or 0xFF. `age` moves
    /// the record to the next E8 or E9 byte.
    recent: u32,
}

/// Whether `b` is the top byte of a small displacement, forwards or backwards.
fn small(b: u8) -> bool {
    b == 0 || b == 0xff
}

impl X86 {
    pub const fn new() -> X86 {
        X86 {
            pos: 0,
            last: 0u32.wrapping_sub(5),
            recent: 0,
        }
    }

    /// Converts `buf` in place as far as it can: up to the last position with four bytes
    /// after it. Returns how many leading bytes are final; the rest must come again at the
    /// start of the next buffer, or be left as they are at the block's end.
    pub fn filter(&mut self, buf: &mut [u8]) -> usize {
        let Some(limit) = buf.len().checked_sub(4) else {
            return 0;
        };
        // Far apart, positions could wrap around: an E8 more than 5 bytes back is forgotten
        // anyway.
        if self.pos.wrapping_sub(self.last) > 5 {
            self.last = self.pos.wrapping_sub(5);
        }
        let mut recent = self.recent;
        let mut i = 0;
        while i < limit {
            let window = buf.get_mut(i..i + 5);
            let Some([op, a, b, c, top]) = window.and_then(|w| <&mut [u8; 5]>::try_from(w).ok())
            else {
                break;
            };
            if *op & 0xfe != 0xe8 {
                i += 1;
                continue;
            }
            let at = self.pos.wrapping_add(i as u32);
            let gap = at.wrapping_sub(self.last);
            self.last = at;
            recent = if gap > 5 { 0 } else { age(recent, gap) };
            let top_small = small(*top);
            let nearby = (recent >> 1) as usize;
            if top_small && nearby < 8 && CONVERTIBLE[nearby & 7] {
                let absolute = u32::from_le_bytes([*a, *b, *c, *top]);
                [*a, *b, *c, *top] = relative(absolute, at, nearby).to_le_bytes();
                i += 5;
                recent = 0;
            } else {
                i += 1;
                recent |= if top_small { 0x11 } else { 1 };
            }
        }
        self.pos = self.pos.wrapping_add(i as u32);
        self.recent = recent;
        i
    }
}

/// Moves the record of left-alone candidates `gap` bytes on; what falls beyond three bytes
/// back is forgotten.
fn age(mut recent: u32, gap: u32) -> u32 {
    for _ in 0..gap {
        recent = (recent & 0x77) << 1;
    }
    recent
}

/// The relative target of the instruction at `at` whose operand holds absolute target
/// `absolute`; `nearby` the left-alone candidates among the three bytes before.
fn relative(absolute: u32, at: u32, nearby: usize) -> u32 {
    let mut value = absolute;
    let dest = loop {
        let dest = value.wrapping_sub(at.wrapping_add(5));
        if nearby == 0 {
            break dest;
        }
        let shift = 8 * NEAREST[nearby & 7];
        if !small((dest >> (24 - shift)) as u8) {
            break dest;
        }
        value = dest ^ ((1u32 << (32 - shift)) - 1);
    };
    // 25 significant bits, sign-extended.
    (((dest << 7) as i32) >> 7) as u32
}
