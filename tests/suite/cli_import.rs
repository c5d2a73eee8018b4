//! `convcg import`: a hand-made taobao-format slice becomes a canonical dataset that reads back.

use std::process::Command;

use convcg_data::io::{ReadOptions, read_log};

#[test]
fn import_writes_tables_config_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("UserBehavior_slice.csv");
    // user, item, category, behavior, unix_ts; the last row's timestamp is bad and is skipped.
    std::fs::write(
        &src,
        "1,10,100,pv,1511658000\n1,10,100,buy,1511658060\n2,11,101,fav,1511658100\n2,12,101,pv,15\n",
    )
    .unwrap();
    let out = dir.path().join("dataset");
    let run = Command::new(env!("CARGO_BIN_EXE_convcg"))
        .args(["import", "taobao"])
        .arg(&src)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "import failed: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("row 4"),
        "the bad row is reported: {stdout}"
    );
    assert!(out.join("dataset.toml").is_file());
    let (log, _) = read_log(&out, &ReadOptions::default()).unwrap();
    assert_eq!(log.impressions.len(), 3);
    assert_eq!(log.engagements.len(), 2);
    assert_eq!(log.conversions.len(), 1);
    assert_eq!(log.pins.len(), 2);
}
