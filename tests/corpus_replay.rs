//! Replays every committed fuzz input through the same functions the fuzz targets call,
//! under plain `cargo test` on stable: `fuzz/corpus/<target>/*` (the minimised corpus)
//! and `fuzz/regressions/<target>/*` (inputs that once found a bug, named after it).

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    #[cfg(feature = "tls")]
    ("tls_pair", aioport::fuzzing::tls_pair),
    #[cfg(feature = "tls")]
    ("start_tls_pair", aioport::fuzzing::start_tls_pair),
    ("stream_ops", aioport::fuzzing::stream_ops),
    ("buffered_stream_ops", aioport::fuzzing::buffered_stream_ops),
    ("registry_ops", aioport::fuzzing::registry_ops),
    ("datagram_ops", aioport::fuzzing::datagram_ops),
    ("subprocess_ops", aioport::fuzzing::subprocess_ops),
    ("limits", aioport::fuzzing::limits),
    ("pair", aioport::fuzzing::pair),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs `target` on every file of `dir`; returns how many ran. A failure names the file.
fn replay(name: &str, target: Target, dir: &Path) -> usize {
    let files = inputs(dir);
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let r = std::panic::catch_unwind(|| target(&data));
        assert!(
            r.is_ok(),
            "{name}: {} fails; reproduce with `cargo fuzz run -s none {name} {}`",
            file.display(),
            file.display()
        );
    }
    files.len()
}

/// One test per target, so that the harness replays them in parallel.
macro_rules! corpus {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let name = stringify!($name);
            let start = std::time::Instant::now();
            let n = replay(name, aioport::fuzzing::$name, &fuzz_dir().join("corpus").join(name));
            assert!(n > 0, "fuzz/corpus/{name} is empty");
            eprintln!("{name}: replayed {n} inputs in {:.1?}", start.elapsed());
        }
    )*};
}

#[cfg(feature = "tls")]
mod corpus_tls {
    use super::*;
    corpus!(tls_pair, start_tls_pair);
}

mod corpus {
    use super::*;
    corpus!(
        stream_ops,
        buffered_stream_ops,
        registry_ops,
        datagram_ops,
        subprocess_ops,
        limits,
        pair
    );
}

#[test]
fn regressions_replay_clean() {
    for &(name, target) in TARGETS {
        replay(name, target, &fuzz_dir().join("regressions").join(name));
    }
}
