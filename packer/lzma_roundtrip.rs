//! The launcher's decoder (`launcher/lzma`) against xz2's encoder: varied data (zeros, random
//! bytes, real ELF files, text, x86-like code dense in CALL and JMP bytes) at every level, of
//! sizes around the LZMA2 chunk limits, in one block and in many, with and without the x86
//! filter, read in pieces of every size. Each must decode to exactly the bytes encoded.

use crate::progress::Progress;
use fastrand::Rng;
use std::io::Write;
use tote_lzma::{dict_len, Decoder, Error, Source, INPUT_MIN, OUT_MIN};

/// Compressed bytes handed out in pieces of a random size up to `max` (all at once when
/// `max` is 0).
pub struct Pieces<'a> {
    pub data: &'a [u8],
    pub rng: Rng,
    pub max: usize,
}

impl Source for Pieces<'_> {
    type Error = ();

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        let limit = if self.max == 0 {
            buf.len()
        } else {
            self.rng.usize(1..=self.max)
        };
        let n = buf.len().min(limit).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Buffers a decoder works in, made once and reused.
pub struct Buffers {
    pub input: Vec<u8>,
    pub dict: Vec<u8>,
}

impl Buffers {
    pub fn new(dict_size: u64) -> Buffers {
        Buffers {
            input: vec![0; INPUT_MIN],
            dict: vec![0; dict_len(dict_size)],
        }
    }
}

/// Decodes `source` reading `out_len` bytes at a time; stops with what it has once more than
/// `limit` bytes came out.
pub fn decode(
    source: Pieces,
    buffers: &mut Buffers,
    out_len: usize,
    limit: usize,
) -> Result<Vec<u8>, Error<()>> {
    let mut d =
        Decoder::new(source, &mut buffers.input, &mut buffers.dict).expect("buffers large enough");
    let mut out = vec![0; out_len];
    let mut all = Vec::new();
    while all.len() <= limit {
        match d.read(&mut out)? {
            0 => return Ok(all),
            n => all.extend_from_slice(&out[..n]),
        }
    }
    Ok(all)
}

/// xz2's multi-threaded encoder as the packer runs it, with this block size and dictionary,
/// the x86 filter or not.
pub fn encode(raw: &[u8], level: u32, dict: u32, block: u64, x86: bool) -> Vec<u8> {
    use xz2::stream::{Check, Filters, LzmaOptions, MtStreamBuilder};
    let preset = if level >= 9 { 9 | 1 << 31 } else { level };
    let mut lzma = LzmaOptions::new_preset(preset).expect("a preset");
    lzma.dict_size(dict);
    let mut filters = Filters::new();
    if x86 {
        filters.x86();
    }
    filters.lzma2(&lzma);
    let stream = MtStreamBuilder::new()
        .filters(filters)
        .check(Check::None)
        .threads(2)
        .block_size(block)
        .encoder()
        .expect("an encoder");
    let mut out = Vec::new();
    let mut enc = xz2::write::XzEncoder::new_stream(&mut out, stream);
    enc.write_all(raw).expect("encoded");
    enc.finish().expect("encoded");
    out
}

/// Decodes `xz` whole and in pieces and checks every result is `raw`.
fn round_trip(name: &str, raw: &[u8], xz: &[u8], rng: &mut Rng) {
    let mut buffers = Buffers::new(64 << 20);
    for (max, out_len) in [(0, 16 * 1024), (rng.usize(1..=7), OUT_MIN), (997, 1001)] {
        let source = Pieces {
            data: xz,
            rng: Rng::with_seed(rng.u64(..)),
            max,
        };
        let got = decode(source, &mut buffers, out_len, usize::MAX)
            .unwrap_or_else(|e| panic!("{name}: {e:?} (pieces of {max}, out {out_len})"));
        assert!(
            got == raw,
            "{name}: decoded {} bytes differ from the {} encoded (pieces of {max}, out {out_len})",
            got.len(),
            raw.len()
        );
    }
}

fn random(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    rng.fill(&mut b);
    b
}

/// Words from a small vocabulary: text that compresses well, with matches at every distance.
fn text(rng: &mut Rng, n: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "the ",
        "launcher ",
        "extracts ",
        "a ",
        "bundle ",
        "into ",
        "its ",
        "cache ",
        "dir, ",
        "then ",
        "execs ",
        "it.\n",
    ];
    let mut t = Vec::with_capacity(n + 16);
    while t.len() < n {
        t.extend_from_slice(WORDS[rng.usize(..WORDS.len())].as_bytes());
    }
    t.truncate(n);
    t
}

/// Bytes dense in E8 and E9 followed by displacements whose top byte is 0x00 or 0xFF, and in
/// E8/E9 bytes close together: every case of the x86 filter.
pub fn x86_like(rng: &mut Rng, n: usize) -> Vec<u8> {
    const BYTES: [u8; 8] = [0xe8, 0xe9, 0x00, 0xff, 0x48, 0x89, 0xe8, 0x00];
    (0..n)
        .map(|_| match rng.u8(..4) {
            0 => rng.u8(..),
            _ => BYTES[rng.usize(..BYTES.len())],
        })
        .collect()
}

fn elf(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
const LOADER: &str = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";

#[test]
fn decodes_the_packers_own_streams() {
    let mut rng = Rng::with_seed(1);
    let mut raw = elf(LOADER);
    raw.extend(text(&mut rng, 100_000));
    raw.extend(elf(LIBC));
    let dict = crate::bundle::dict_size(raw.len());
    let xz = crate::bundle::compress(&raw, dict, 9, &Progress::hidden()).expect("compressed");
    round_trip("loader, text and libc at level 9", &raw, &xz, &mut rng);
}

#[test]
fn decodes_sizes_around_chunk_limits() {
    let mut rng = Rng::with_seed(2);
    const K64: usize = 64 << 10;
    const M2: usize = 2 << 20;
    let sizes = [
        0,
        1,
        4,
        5,
        15,
        16,
        17,
        K64 - 1,
        K64,
        K64 + 1,
        M2 - 1,
        M2,
        M2 + 1,
    ];
    for n in sizes {
        for (kind, raw) in [
            ("zeros", vec![0; n]),
            ("random", random(&mut rng, n)),
            ("text", text(&mut rng, n)),
            ("x86-like", x86_like(&mut rng, n)),
        ] {
            let xz = encode(&raw, 6, 1 << 20, 3 << 20, true);
            round_trip(&format!("{n} bytes of {kind}"), &raw, &xz, &mut rng);
        }
    }
}

#[test]
fn decodes_every_level() {
    let mut rng = Rng::with_seed(3);
    let mut raw = elf(LOADER);
    raw.extend(text(&mut rng, 50_000));
    raw.extend(x86_like(&mut rng, 50_000));
    raw.extend(random(&mut rng, 20_000));
    for level in 0..=9 {
        for x86 in [true, false] {
            let xz = encode(&raw, level, 1 << 20, 3 << 20, x86);
            round_trip(&format!("level {level}, x86 {x86}"), &raw, &xz, &mut rng);
        }
    }
}

#[test]
fn decodes_many_blocks() {
    let mut rng = Rng::with_seed(4);
    let mut raw = elf(LIBC);
    raw.extend(text(&mut rng, 300_000));
    raw.extend(x86_like(&mut rng, 300_000));
    // The packer's smallest dictionary, 64 KiB, makes blocks of 192 KiB.
    let xz = crate::bundle::compress(&raw, 64 << 10, 6, &Progress::hidden()).expect("compressed");
    round_trip("libc and more in blocks of 192 KiB", &raw, &xz, &mut rng);
    let xz = encode(&raw, 1, 64 << 10, 10_000, true);
    round_trip("blocks of 10000 bytes", &raw, &xz, &mut rng);
    let xz = encode(&raw, 1, 1 << 20, 3 << 20, false);
    round_trip("no x86 filter", &raw, &xz, &mut rng);
}

/// A ring that wraps: more data than the dictionary, in one block.
#[test]
fn decodes_past_the_dictionary_size() {
    let mut rng = Rng::with_seed(5);
    let mut raw = Vec::new();
    for _ in 0..3 {
        raw.extend(elf(LIBC));
        raw.extend(text(&mut rng, 200_000));
    }
    let xz = encode(&raw, 6, 1 << 20, 64 << 20, true);
    round_trip("three libcs through a ring of 2 MiB", &raw, &xz, &mut rng);
}

#[test]
fn decodes_real_libraries() {
    let mut rng = Rng::with_seed(6);
    let mut names: Vec<_> = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .expect("a library dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.to_string_lossy().contains(".so"))
        .collect();
    names.sort();
    let mut raw = Vec::new();
    for p in names.iter().step_by(names.len() / 12 + 1) {
        let bytes = std::fs::read(p).unwrap_or_default();
        raw.extend_from_slice(&bytes[..bytes.len().min(1 << 20)]);
    }
    let xz = crate::bundle::compress(
        &raw,
        crate::bundle::dict_size(raw.len()),
        9,
        &Progress::hidden(),
    )
    .expect("compressed");
    round_trip("a dozen libraries at level 9", &raw, &xz, &mut rng);
}

#[test]
fn refuses_what_it_does_not_take() {
    let mut rng = Rng::with_seed(7);
    let raw = text(&mut rng, 10_000);
    let mut buffers = Buffers::new(1 << 20);
    let mut run = |xz: &[u8]| {
        let source = Pieces {
            data: xz,
            rng: Rng::with_seed(1),
            max: 0,
        };
        decode(source, &mut buffers, OUT_MIN, usize::MAX)
    };
    let good = encode(&raw, 6, 1 << 20, 3 << 20, true);
    assert_eq!(run(&good), Ok(raw.clone()));
    // An integrity check, trailing bytes, a truncation.
    let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
    enc.write_all(&raw).unwrap();
    assert_eq!(run(&enc.finish().unwrap()), Err(Error::Malformed));
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 4]);
    assert_eq!(run(&longer), Err(Error::Malformed));
    assert_eq!(run(&good[..good.len() - 1]), Err(Error::Malformed));
    assert_eq!(run(&[]), Err(Error::Malformed));
}
