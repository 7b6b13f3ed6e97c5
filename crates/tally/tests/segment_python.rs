//! Segment compatibility with a real client: Segment's own Python library
//! (`segment-analytics-python`, installed by this test into a virtual environment under the
//! target directory, once) sends tracks, identify, page, screen, group and alias, gzipped, with
//! Basic auth, to a running `tally serve`; then the views must count exactly those messages.
//!
//! Needs `python3` with `venv` and access to PyPI on the first run; it fails (never skips)
//! without them.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
mod segment;

/// A virtual environment with the Segment library, made once per target directory.
fn venv() -> PathBuf {
    common::python_venv("segment-venv", &["segment-analytics-python==2.4.0"])
}

#[tokio::test]
async fn segment_python_library_events_are_counted() {
    let mut python = Command::new(venv());
    python.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/segment/send.py"));
    segment::sends_and_counts(python).await;
}
