//! Segment compatibility with a real client: Segment's own Node.js library
//! (`@segment/analytics-node`, installed by this test from the npm registry into the target
//! directory, once) sends tracks, identify, page, screen, group and alias, in batches, with
//! Basic auth, to a running `tally serve`; then the views must count exactly those messages.
//!
//! Needs `node` with `npm` and the npm registry on the first run; it fails (never skips)
//! without them.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
mod segment;

const LIBRARY: &str = "@segment/analytics-node@3.1.0";

/// A directory with the Segment library installed, made once per target directory.
fn library() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("segment-node");
    let ready = dir.join(format!(".installed-{}", LIBRARY.replace('/', "_")));
    if !ready.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(LIBRARY)
            .status()
            .expect("npm runs (install Node.js with npm)");
        assert!(
            status.success(),
            "npm install {LIBRARY} failed (npm registry reachable?)"
        );
        std::fs::write(&ready, "").unwrap();
    }
    dir
}

#[tokio::test]
async fn segment_node_library_events_are_counted() {
    // The script runs where the library is installed, so `import` finds it.
    let script = library().join("send.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/segment/send.mjs"),
        &script,
    )
    .unwrap();
    let mut node = Command::new("node");
    node.arg(script);
    segment::sends_and_counts(node).await;
}
