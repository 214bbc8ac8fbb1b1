//! A property test of the launcher's decoder on the stable toolchain: valid streams from
//! xz2's encoder are mutated at random (bits, bytes, sizes, cuts, splices) or replaced by
//! random bytes, with and without a valid header in front, and decoded through reads of random
//! sizes. No input may panic or hang: each one decodes, or fails with `Malformed`. An
//! unmutated seed must decode to exactly its bytes.
//!
//! `TOTE_LZMA_FUZZ_INPUTS` sets the number of inputs (default 3000), `TOTE_FUZZ_SEED` the seed
//! of the run (default random). The seed is printed first, so a failing run can be replayed.

use crate::lzma_roundtrip::{decode, encode, x86_like, Buffers, Pieces};
use crate::payload_fuzz::{env_u64, hex, quiet_panics, LAST_PANIC};
use fastrand::Rng;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};
use tote_lzma::{Error, OUT_MIN};

const DEFAULT_INPUTS: u64 = 3000;
/// The most output taken from one input: enough for every seed, and a bound on what a
/// mutated size field can make the decoder produce.
const OUTPUT_LIMIT: usize = 4 << 20;
/// Longer than this on one input counts as a hang.
const SLOW: Duration = Duration::from_secs(5);
/// The length of the stream header and of the first seed's block header.
const HEADERS: usize = 12 + 12;

struct Seed {
    raw: Vec<u8>,
    xz: Vec<u8>,
}

/// Streams of every kind the decoder meets: LZMA chunks, uncompressed chunks, long matches,
/// several chunks, several blocks, with and without the x86 filter.
fn seeds() -> Vec<Seed> {
    let mut rng = Rng::with_seed(11);
    let text: Vec<u8> = (0..6000)
        .map(|i| b"tote packs programs\n"[i % 20])
        .collect();
    let mut random = vec![0; 3000];
    rng.fill(&mut random);
    let loader =
        std::fs::read("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").expect("the loader");
    let made = [
        (text, 6, 1 << 20, true),
        (x86_like(&mut rng, 20_000), 1, 4096, true),
        (random, 6, 1 << 20, true),
        (vec![0; 100_000], 9, 1 << 20, false),
        (loader[..30_000].to_vec(), 9, 1 << 20, true),
        (x86_like(&mut rng, 200_000), 0, 1 << 20, false),
    ];
    made.into_iter()
        .map(|(raw, level, block, x86)| Seed {
            xz: encode(&raw, level, 1 << 20, block, x86),
            raw,
        })
        .collect()
}

/// Mutates a seed, or, one time in 16, makes random bytes, half the time after the first
/// seed's stream and block headers so they reach the LZMA2 parser.
fn make_input(rng: &mut Rng, seeds: &[Seed]) -> Vec<u8> {
    // The large last seed rarely: its decode takes longest.
    let pick = if rng.u8(..8) == 0 {
        seeds.len() - 1
    } else {
        rng.usize(..seeds.len() - 1)
    };
    if rng.u8(..16) == 0 {
        let mut b = if rng.bool() {
            seeds[0].xz[..HEADERS].to_vec()
        } else {
            Vec::new()
        };
        let n = rng.usize(..=2000);
        b.extend((0..n).map(|_| rng.u8(..)));
        return b;
    }
    let mut b = seeds[pick].xz.clone();
    for _ in 0..rng.usize(1..=6) {
        mutate(rng, &mut b, seeds);
    }
    b
}

/// One mutation at a random place: a bit flip, an interesting byte, an insertion, a deletion,
/// a truncation, a splice with another seed, a repeated range, or a value over a size field.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>, seeds: &[Seed]) {
    const INTERESTING: [u8; 8] = [0, 1, 2, 0x7f, 0x80, 0xe0, 0xe8, 0xff];
    let at = rng.usize(..=b.len());
    let inside = at < b.len();
    match rng.u8(..8) {
        0 | 1 if inside => b[at] ^= 1 << rng.u8(..8),
        2 if inside => b[at] = INTERESTING[rng.usize(..INTERESTING.len())],
        3 => {
            let bytes: Vec<u8> = (0..rng.usize(1..=8)).map(|_| rng.u8(..)).collect();
            b.splice(at..at, bytes);
        }
        4 => drop(b.drain(at..b.len().min(at + rng.usize(1..=64)))),
        5 => b.truncate(at),
        6 => {
            let donor = &seeds[rng.usize(..seeds.len())].xz;
            b.truncate(at);
            b.extend_from_slice(&donor[rng.usize(..=donor.len())..]);
        }
        _ => {
            // Sizes are big-endian in LZMA2 chunk headers, little-endian in the footer.
            let v = [0u16, 1, 0xffff, 0x8000, rng.u16(..)][rng.usize(..5)];
            let bytes = if rng.bool() {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            let end = b.len().min(at + 2);
            b[at..end].copy_from_slice(&bytes[..end - at]);
        }
    }
}

/// How one input went.
enum Outcome {
    Decoded,
    Refused,
    Failed(String),
}

fn run(input: &[u8], rng: &mut Rng, buffers: &mut Buffers) -> Outcome {
    let source = Pieces {
        data: input,
        rng: Rng::with_seed(rng.u64(..)),
        max: [0, 1, 7, 4096][rng.usize(..4)],
    };
    let out_len = rng.usize(OUT_MIN..=20_000);
    let started = Instant::now();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        decode(source, buffers, out_len, OUTPUT_LIMIT)
    }));
    let took = started.elapsed();
    match result {
        _ if took > SLOW => Outcome::Failed(format!("hang: {took:?} on one input")),
        Ok(Ok(_)) => Outcome::Decoded,
        Ok(Err(Error::Malformed)) => Outcome::Refused,
        Ok(Err(Error::Source(()))) => Outcome::Failed("a source error made up".into()),
        Err(_) => Outcome::Failed(format!("crash: {}", LAST_PANIC.take())),
    }
}

#[test]
fn decoder_survives_mutated_streams() {
    let inputs = env_u64("TOTE_LZMA_FUZZ_INPUTS").unwrap_or(DEFAULT_INPUTS);
    let seed = env_u64("TOTE_FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..));
    println!("lzma fuzz: TOTE_FUZZ_SEED={seed} TOTE_LZMA_FUZZ_INPUTS={inputs}");
    let seeds = seeds();
    let mut buffers = Buffers::new(1 << 20);
    let mut rng = Rng::with_seed(seed);
    for (i, s) in seeds.iter().enumerate() {
        let whole = Pieces {
            data: &s.xz,
            rng: Rng::with_seed(i as u64),
            max: 5,
        };
        let got = decode(whole, &mut buffers, OUT_MIN, OUTPUT_LIMIT);
        assert!(got.as_ref() == Ok(&s.raw), "seed {i} does not decode");
    }
    let (mut decoded, mut refused, mut failures) = (0u64, 0u64, 0u64);
    let mut first = None;
    quiet_panics(true);
    for number in 0..inputs {
        let input_seed = rng.u64(..);
        let mut input_rng = Rng::with_seed(input_seed);
        let input = make_input(&mut input_rng, &seeds);
        match run(&input, &mut input_rng, &mut buffers) {
            Outcome::Decoded => decoded += 1,
            Outcome::Refused => refused += 1,
            Outcome::Failed(what) => {
                failures += 1;
                first.get_or_insert((number, input_seed, what, input));
            }
        }
    }
    quiet_panics(false);
    println!("lzma fuzz: {inputs} inputs: {decoded} decoded, {refused} refused, {failures} failed");
    if let Some((number, input_seed, what, input)) = &first {
        println!(
            "first failure: input {number} (TOTE_FUZZ_SEED={seed}, input seed {input_seed}), \
             {} bytes: {what}",
            input.len()
        );
        println!("{}", hex(input));
    }
    assert!(
        failures == 0,
        "the decoder failed on mutated input (see above)"
    );
}
