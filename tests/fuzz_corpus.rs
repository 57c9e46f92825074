//! Replays the fuzzing corpus (`fuzz/corpus/ingest_body`: the seeds, and whatever inputs
//! fuzzing runs found worth keeping) through the fuzz target's function on the stable
//! toolchain, so every case that once exercised a new path keeps being checked in CI.

use std::path::Path;

#[test]
fn every_corpus_input_goes_through_decoding_and_parsing_without_a_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ingest_body");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        eventide::api::body::fuzz_ingest_body(&input);
        replayed += 1;
    }
    assert!(
        replayed >= 10,
        "only {replayed} corpus inputs in {}",
        dir.display()
    );
}
