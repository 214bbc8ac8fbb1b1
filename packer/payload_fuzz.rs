//! A property test of the payload parsers (trailer, run table, index) on the stable toolchain:
//! valid tables made by the format's own encoders are mutated at random and handed to the
//! decoders the launcher runs on untrusted bytes. No input may panic, and an input that decodes
//! must keep the decoder's promises: regions that fill the file, every item yielded, safe paths,
//! patches inside their file, sizes that add up to `raw_len`.
//!
//! `TOTE_FUZZ_INPUTS` sets the number of inputs (default 200000), `TOTE_FUZZ_SEED` the seed of
//! the run (default random). The seed is printed first, so a failing run can be replayed.

use crate::payload::{
    checksum, safe_path, Entry, Index, Patch, Paths, Program, RunTable, Sink, Stream, Trailer, Var,
    CODEC_XZ, KEY_LEN, KIND_DIR, KIND_FILE, KIND_SYMLINK, TRAILER_LEN,
};
use fastrand::Rng;
use std::cell::{Cell, RefCell};
use std::panic;
use std::sync::Once;

const DEFAULT_INPUTS: u64 = 200_000;
/// The byte values that most often sit on a boundary.
const INTERESTING: [u8; 4] = [0, 0xff, 0x7f, 0x80];
/// Values written over length and offset fields.
const LARGE: [u64; 7] = [
    u64::MAX,
    u64::MAX - TRAILER_LEN as u64,
    1 << 63,
    u32::MAX as u64,
    1 << 31,
    u16::MAX as u64,
    0x8000,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parser {
    Trailer,
    RunTable,
    Index,
}

const PARSERS: [Parser; 3] = [Parser::Trailer, Parser::RunTable, Parser::Index];

/// One input: the bytes and the length the parser checks them against (the file length for a
/// trailer, `raw_len` for an index, unused for a run table).
#[derive(Clone, Debug)]
struct Input {
    parser: Parser,
    bytes: Vec<u8>,
    len: u64,
}

struct Buf(Vec<u8>);

impl Sink for Buf {
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

/// The valid encodings every input starts from. A new field of the format is added here.
fn seeds() -> Vec<Input> {
    let mut libs = Buf(Vec::new());
    Paths::encode(
        &[b"lib/libjq.so.1", b"lib/libonig.so.5", b"lib/libc.so.6"],
        &mut libs,
    );
    let mut none = Buf(Vec::new());
    Paths::encode(&[], &mut none);
    let programs = [
        Program {
            name: b"jq",
            path: b"usr/bin/jq",
            interpreter: b"lib64/ld-linux-x86-64.so.2",
            libraries: Paths::new(&libs.0).expect("a valid library list"),
        },
        Program {
            name: b"sh",
            path: b"bin/sh",
            interpreter: b"",
            libraries: Paths::new(&none.0).expect("a valid library list"),
        },
    ];
    let vars = [Var {
        name: b"GCONV_PATH",
        value: b"${TOTE_ROOT}/usr/lib/gconv",
    }];
    let patch = Patch {
        offset: 16,
        capacity: 64,
        template: b"${TOTE_ROOT}/lib",
    };
    let entries: [(Entry, &[Patch]); 4] = [
        (Entry::new(KIND_DIR, 0o755, 0, b"usr", b""), &[]),
        (Entry::new(KIND_FILE, 0o755, 100, b"usr/jq", b""), &[patch]),
        (Entry::new(KIND_SYMLINK, 0o777, 0, b"usr/q", b"jq"), &[]),
        (
            Entry::new(KIND_FILE, 0o644, 80, b"usr/a", b"").with_mtime(1_700_000_000),
            &[patch],
        ),
    ];
    let mut seeds = Vec::new();
    for n in 0..=programs.len() {
        seeds.push(run_table(&programs[..n], &vars));
        seeds.push(run_table(&programs[..n], &[]));
    }
    for n in 0..=entries.len() {
        seeds.push(index(&entries[..n], 1));
    }
    seeds.push(index(&entries, 2));
    for lens in [
        [4096, 1000, 200, 60],
        [0, 0, 0, 0],
        [1 << 40, 1 << 33, 1 << 20, 65535],
    ] {
        seeds.push(trailer(lens));
    }
    seeds
}

fn run_table(programs: &[Program], vars: &[Var]) -> Input {
    let mut out = Buf(Vec::new());
    RunTable::encode(programs, vars, &mut out);
    Input {
        parser: Parser::RunTable,
        bytes: out.0,
        len: 0,
    }
}

/// The compressed length of every index seed's streams together (zero without files).
const INDEX_DATA_LEN: u64 = 10;

/// An index of `entries` whose files are split in `split` streams (one per file, the last
/// taking the rest) sharing `INDEX_DATA_LEN` compressed bytes.
fn index(entries: &[(Entry, &[Patch])], split: usize) -> Input {
    let sizes: Vec<u64> = entries
        .iter()
        .filter(|(e, _)| e.kind == KIND_FILE)
        .map(|(e, _)| e.size)
        .collect();
    let mut streams = Vec::new();
    let count = split.min(sizes.len());
    for i in 0..count {
        let files = if i + 1 == count {
            &sizes[i..]
        } else {
            &sizes[i..=i]
        };
        let data_len = if i + 1 == count {
            INDEX_DATA_LEN - i as u64
        } else {
            1
        };
        streams.push(Stream {
            data_len,
            raw_len: files.iter().sum(),
            dict_size: 1 << 20,
            files: files.len() as u32,
        });
    }
    let mut out = Buf(Vec::new());
    Index::encode_header(entries.len() as u32, &streams, &mut out);
    for (e, patches) in entries {
        e.encode(patches, &mut out);
    }
    Input {
        parser: Parser::Index,
        bytes: out.0,
        len: entries.iter().map(|(e, _)| e.size).sum(),
    }
}

/// A trailer whose data, index and run table have the given offset and lengths.
fn trailer_fields([data_offset, data_len, index_len, run_len]: [u64; 4]) -> Trailer {
    Trailer {
        codec: CODEC_XZ,
        data_offset,
        data_len,
        index_len,
        run_len,
        raw_len: 4000,
        dict_size: 1 << 20,
        payload_checksum: 7,
        run_checksum: 9,
        key: [3; KEY_LEN],
    }
}

/// The encoded trailer of `trailer_fields`.
fn trailer(lens: [u64; 4]) -> Input {
    let t = trailer_fields(lens);
    Input {
        parser: Parser::Trailer,
        bytes: t.encode().to_vec(),
        len: t.end() + TRAILER_LEN as u64,
    }
}

/// Picks a parser and one of its seeds, then mutates the seed, or, one time in 32, replaces it
/// with random bytes.
fn make_input(rng: &mut Rng, seeds: &[Input]) -> Input {
    let parser = PARSERS[rng.usize(..PARSERS.len())];
    let pool: Vec<&Input> = seeds.iter().filter(|s| s.parser == parser).collect();
    let mut input = pool[rng.usize(..pool.len())].clone();
    if rng.u8(..32) == 0 {
        let n = rng.usize(..=300);
        input.bytes = random_bytes(rng, n);
    } else {
        for _ in 0..rng.usize(1..=8) {
            mutate(rng, &mut input.bytes, seeds);
        }
    }
    match parser {
        Parser::Trailer => fit_trailer(rng, &mut input),
        Parser::Index => input.len = pick_raw_len(rng, input.len),
        Parser::RunTable => {}
    }
    input
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    rng.fill(&mut b);
    b
}

/// One mutation at a random place: a bit flip, an interesting byte, an insertion, a deletion,
/// a truncation, a splice with another seed, or a large value over a 2, 4 or 8 byte field.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>, seeds: &[Input]) {
    let at = rng.usize(..=b.len());
    let inside = at < b.len();
    match rng.u8(..7) {
        0 if inside => b[at] ^= 1 << rng.u8(..8),
        1 if inside => b[at] = INTERESTING[rng.usize(..INTERESTING.len())],
        2 => {
            let n = rng.usize(1..=8);
            b.splice(at..at, random_bytes(rng, n));
        }
        3 => drop(b.drain(at..b.len().min(at + rng.usize(1..=8)))),
        4 => b.truncate(at),
        5 => {
            let donor = &seeds[rng.usize(..seeds.len())].bytes;
            b.truncate(at);
            b.extend_from_slice(&donor[rng.usize(..=donor.len())..]);
        }
        _ => overwrite_field(rng, b, at),
    }
}

/// Writes a large value, or one near the buffer's length, as a 2, 4 or 8 byte little-endian
/// field at `at`, cut off at the end of the buffer.
fn overwrite_field(rng: &mut Rng, b: &mut [u8], at: usize) {
    let value = match rng.u8(..3) {
        0 => LARGE[rng.usize(..LARGE.len())],
        1 => (b.len() as u64).wrapping_add(rng.u64(..8)).wrapping_sub(4),
        _ => rng.u64(..),
    };
    let width = [2, 4, 8][rng.usize(..3)];
    let end = b.len().min(at + width);
    b[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
}

/// Makes a mutated trailer checkable: exactly `TRAILER_LEN` bytes, its checksum resealed three
/// times in four (or nearly every input would stop there), and a file length to check it
/// against: the seed's, the one its fields claim, a short one or any.
fn fit_trailer(rng: &mut Rng, input: &mut Input) {
    let b = &mut input.bytes;
    b.resize(TRAILER_LEN, 0);
    if rng.u8(..4) != 0 {
        let sum = checksum(&b[..120]);
        b[120..].copy_from_slice(&sum.to_le_bytes());
    }
    let claimed = (16..48)
        .step_by(8)
        .map(|at| u64::from_le_bytes(b[at..at + 8].try_into().unwrap()))
        .fold(TRAILER_LEN as u64, u64::wrapping_add);
    input.len = match rng.u8(..4) {
        0 => input.len,
        1 => claimed,
        2 => rng.u64(..2 * TRAILER_LEN as u64),
        _ => rng.u64(..),
    };
}

/// The seed's `raw_len` half the time, else a small or any value.
fn pick_raw_len(rng: &mut Rng, seed_raw_len: u64) -> u64 {
    match rng.u8(..4) {
        0 | 1 => seed_raw_len,
        2 => rng.u64(..1024),
        _ => rng.u64(..),
    }
}

/// Runs the input's parser. Ok(true) when it decoded and kept its promises, Ok(false) when it
/// refused the input, Err naming the promise it broke.
fn check(input: &Input) -> Result<bool, &'static str> {
    match input.parser {
        Parser::Trailer => check_trailer(&input.bytes, input.len),
        Parser::RunTable => check_run_table(&input.bytes),
        Parser::Index => check_index(&input.bytes, input.len),
    }
}

fn ensure(holds: bool, promise: &'static str) -> Result<(), &'static str> {
    holds.then_some(()).ok_or(promise)
}

/// A decoded trailer's regions and the trailer itself fill the file exactly; it encodes back
/// to itself.
fn check_trailer(b: &[u8], file_len: u64) -> Result<bool, &'static str> {
    let raw: &[u8; TRAILER_LEN] = b.try_into().expect("fit_trailer sized it");
    let Ok(t) = Trailer::decode(raw, file_len) else {
        return Ok(false);
    };
    let regions = [t.data_offset, t.data_len, t.index_len, t.run_len];
    let total: u128 = regions.iter().map(|v| *v as u128).sum::<u128>() + TRAILER_LEN as u128;
    ensure(
        total == file_len as u128,
        "trailer regions do not fill the file",
    )?;
    ensure(
        t.end() + TRAILER_LEN as u64 == file_len,
        "trailer end() is not where the trailer starts",
    )?;
    ensure(t.codec == CODEC_XZ, "trailer of an unknown codec accepted")?;
    ensure(
        Trailer::decode(&t.encode(), file_len) == Ok(t),
        "trailer does not round-trip",
    )?;
    Ok(true)
}

/// A decoded run table holds safe program names and paths, and the programs and variables its
/// iterators yield encode back to exactly its bytes: none skipped, none changed, the counts
/// the same.
fn check_run_table(b: &[u8]) -> Result<bool, &'static str> {
    let Ok(run) = RunTable::decode(b) else {
        return Ok(false);
    };
    let programs: Vec<Program> = run.programs().collect();
    let vars: Vec<Var> = run.vars().collect();
    let safe = |p: &Program| {
        safe_path(p.name).is_ok()
            && safe_path(p.path).is_ok()
            && (p.interpreter.is_empty() || safe_path(p.interpreter).is_ok())
            && p.libraries.iter().all(|l| safe_path(l).is_ok())
            && p.libraries.iter().count() == p.libraries.len()
    };
    ensure(
        programs.iter().all(safe),
        "run table program name, path, interpreter or library is not a safe path",
    )?;
    let mut again = Buf(Vec::new());
    RunTable::encode(&programs, &vars, &mut again);
    ensure(
        again.0 == b,
        "run table iterators do not yield what was decoded",
    )?;
    Ok(true)
}

/// A decoded index holds entries with safe paths and patches inside their file, whose sizes
/// add up to `raw_len`; the entries and patches its iterators yield encode back to exactly
/// its bytes.
fn check_index(b: &[u8], raw_len: u64) -> Result<bool, &'static str> {
    let totals = |data_len| Trailer {
        data_len,
        raw_len,
        dict_size: 1 << 20,
        ..trailer_fields([0, 0, 0, 0])
    };
    let decoded = [0, INDEX_DATA_LEN]
        .into_iter()
        .find_map(|d| Index::decode(b, &totals(d)).ok());
    let Some(index) = decoded else {
        return Ok(false);
    };
    let entries: Vec<Entry> = index.entries().collect();
    let streams: Vec<Stream> = index.streams().map(|p| p.stream).collect();
    let mut again = Buf(Vec::new());
    Index::encode_header(entries.len() as u32, &streams, &mut again);
    let mut total = 0u128;
    for e in &entries {
        let patches: Vec<Patch> = e.patches().collect();
        check_entry(e, &patches)?;
        total += e.size as u128;
        e.encode(&patches, &mut again);
    }
    ensure(
        total == raw_len as u128,
        "index entry sizes do not add up to raw_len",
    )?;
    ensure(
        again.0 == b,
        "index iterators do not yield what was decoded",
    )?;
    Ok(true)
}

fn check_entry(e: &Entry, patches: &[Patch]) -> Result<(), &'static str> {
    ensure(
        safe_path(e.path).is_ok(),
        "index entry path is not a safe path",
    )?;
    for p in patches {
        ensure(
            p.offset as u128 + p.capacity as u128 <= e.size as u128,
            "patch outside its entry",
        )?;
        ensure(
            p.template.len() <= p.capacity as usize,
            "patch template longer than its capacity",
        )?;
    }
    Ok(())
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// The message of the last panic while quiet.
    pub static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// While on, a panic on this thread prints nothing and leaves its message in `LAST_PANIC`;
/// other threads keep the usual hook.
pub fn quiet_panics(on: bool) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let usual = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.get() {
                LAST_PANIC.set(info.to_string());
            } else {
                usual(info);
            }
        }));
    });
    QUIET.set(on);
}

/// The first input that crashed or broke a promise, and how to make it again.
struct Failure {
    what: String,
    number: u64,
    input_seed: u64,
    input: Input,
}

#[derive(Default)]
struct Tally {
    decoded: [u64; 3],
    crashes: u64,
    broken: u64,
    first: Option<Failure>,
}

impl Tally {
    fn add(&mut self, number: u64, input_seed: u64, input: Input) {
        let what = match panic::catch_unwind(|| check(&input)) {
            Ok(Ok(decoded)) => {
                self.decoded[input.parser as usize] += decoded as u64;
                return;
            }
            Ok(Err(promise)) => {
                self.broken += 1;
                format!("broken promise: {promise}")
            }
            Err(_) => {
                self.crashes += 1;
                format!("crash: {}", LAST_PANIC.take())
            }
        };
        self.first.get_or_insert(Failure {
            what,
            number,
            input_seed,
            input,
        });
    }

    fn report(&self, inputs: u64, seed: u64) {
        let [trailers, runs, indexes] = self.decoded;
        println!(
            "payload fuzz: {inputs} inputs; decoded: {trailers} trailers, {runs} run tables, \
             {indexes} indexes; {} crashes, {} broken promises",
            self.crashes, self.broken
        );
        if let Some(f) = &self.first {
            println!(
                "first failure: input {} (TOTE_FUZZ_SEED={seed}, input seed {}), {:?} parser, \
                 len {}: {}",
                f.number, f.input_seed, f.input.parser, f.input.len, f.what
            );
            println!("{}", hex(&f.input.bytes));
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let lines: Vec<String> = bytes
        .chunks(32)
        .map(|line| line.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    lines.join("\n")
}

pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a number")),
    )
}

#[test]
fn payload_parsers_survive_mutated_input() {
    let inputs = env_u64("TOTE_FUZZ_INPUTS").unwrap_or(DEFAULT_INPUTS);
    let seed = env_u64("TOTE_FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..));
    println!("payload fuzz: TOTE_FUZZ_SEED={seed} TOTE_FUZZ_INPUTS={inputs}");
    let seeds = seeds();
    let mut run = Rng::with_seed(seed);
    let mut tally = Tally::default();
    quiet_panics(true);
    for number in 0..inputs {
        let input_seed = run.u64(..);
        let input = make_input(&mut Rng::with_seed(input_seed), &seeds);
        tally.add(number, input_seed, input);
    }
    quiet_panics(false);
    tally.report(inputs, seed);
    assert!(
        tally.crashes == 0 && tally.broken == 0,
        "payload parsers failed on mutated input (see above)"
    );
}
