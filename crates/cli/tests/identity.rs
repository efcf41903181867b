//! `peerchannel identity new` and `show`.

use crate::common;

use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn new_creates_a_private_key_file_and_show_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.key");
    let path_s = path.to_str().unwrap();
    let (code, out, err) = run(&["identity", "new", "--out", path_s]);
    assert_eq!(code, Some(0), "stderr: {err}");
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 52, "a base32 peer id: {id}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (code, shown, _) = run(&["identity", "show", path_s]);
    assert_eq!(code, Some(0));
    assert_eq!(shown.trim(), id);

    let (code, _, err) = run(&["identity", "new", "--out", path_s]);
    assert_eq!(code, Some(1), "an existing file is never overwritten");
    assert!(err.contains("refusing to overwrite"), "stderr: {err}");
}

#[test]
fn show_explains_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.key");
    let (code, _, err) = run(&["identity", "show", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("missing.key"), "stderr names the file: {err}");
    let junk = dir.path().join("junk.key");
    std::fs::write(&junk, "not a key").unwrap();
    let (code, _, err) = run(&["identity", "show", junk.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("junk.key"), "stderr: {err}");
}
