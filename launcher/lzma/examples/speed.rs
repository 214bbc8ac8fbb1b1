//! Decode speed on a real .xz file (with no integrity check, as the packer writes them):
//! decodes FILE RUNS times and prints the median and the best MB/s of decoded bytes. Built
//! with the profile the launcher gives this crate (opt-level 2, see launcher/Cargo.toml):
//!
//! ```text
//! CARGO_PROFILE_RELEASE_OPT_LEVEL=2 CARGO_PROFILE_RELEASE_LTO=true \
//! CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort \
//!   cargo run --release --example speed -- FILE [RUNS] [EXPECTED]
//! ```
//!
//! With EXPECTED (the decoded file), the output is compared with it. For a figure against
//! `xz -dc` on a busy machine, time RUNS=1 alternated with it and compare medians of CPU time.

use std::time::Instant;
use tote_lzma::{dict_len, Decoder, Error, Source, INPUT_MIN};

struct Slice<'a>(&'a [u8]);

impl Source for Slice<'_> {
    type Error = ();

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).expect("readable input");
    let runs: usize = args
        .get(2)
        .map_or(3, |r| r.parse().expect("a number of runs"));
    let expected = args
        .get(3)
        .map(|p| std::fs::read(p).expect("readable expected output"));
    let mut input = vec![0u8; 2 * INPUT_MIN];
    let mut dict = vec![0u8; dict_len(64 << 20)];
    let mut out = vec![0u8; 16 * 1024];
    let mut times = Vec::with_capacity(runs);
    let mut total = 0usize;
    for _ in 0..runs {
        let t = Instant::now();
        let mut d = Decoder::new(Slice(&data), &mut input, &mut dict).expect("buffers");
        total = 0;
        let mut same = true;
        loop {
            let n = match d.read(&mut out) {
                Ok(0) => break,
                Ok(n) => n,
                Err(Error::Malformed) => panic!("malformed at {total}"),
                Err(Error::Source(())) => unreachable!(),
            };
            if let Some(e) = &expected {
                same &= e.get(total..total + n) == Some(&out[..n]);
            }
            total += n;
        }
        let secs = t.elapsed().as_secs_f64();
        times.push(secs);
        if let Some(e) = &expected {
            assert!(same && total == e.len(), "output differs");
        }
        eprintln!("{total} bytes in {secs:.3} s");
    }
    times.sort_by(f64::total_cmp);
    let (median, best) = (times[times.len() / 2], times[0]);
    let rate = |secs: f64| total as f64 / secs / 1e6;
    println!(
        "median {median:.3} s, {:.1} MB/s; best {best:.3} s, {:.1} MB/s",
        rate(median),
        rate(best)
    );
}
