//! The fuzz corpus, replayed by `cargo test` (every file of `fuzz/corpus/ops/`), and a
//! few hundred pseudo-random inputs of every configuration, so that the driver's
//! checks run in `scripts/test` without libFuzzer.

use std::path::Path;

#[test]
fn every_input_of_the_corpus_passes() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/ops");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&corpus).expect("fuzz/corpus/ops exists") {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).expect("a corpus file");
        mm_fuzz::run(&data);
        inputs += 1;
    }
    assert!(inputs >= 8, "the corpus has only {inputs} inputs");
}

#[test]
fn pseudo_random_inputs_of_every_configuration_pass() {
    // xorshift: reproducible, no dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..200 {
        let len = 64 + (next() % 1500) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        data[0] = (i % 4) as u8; // per-CPU on/off x debug on/off, in turn
        mm_fuzz::run(&data);
    }
}
