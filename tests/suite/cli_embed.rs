//! `convcg embed` and `convcg retrieve` on a tiny trained run: the .npy files hold what the
//! Parquet files hold, every embedding is unit-norm, numpy loads them (when Python and numpy
//! are present), and retrieve's lists are the exact top K of the exported embeddings.

use crate::support::{TINY_WORLD, convcg, succeed};
use std::fs::File;
use std::path::Path;
use std::process::Command;

use arrow_array::{Array, FixedSizeListArray, Float32Array, Int64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// 400 users, 1,500 pins, a small model: quick to train.
fn tiny() -> String {
    format!("seed = 5\nthreads = 2\n{TINY_WORLD}\n[train]\nbatch_size = 32\nepochs = 1.0\n")
}

fn run(cmd: &mut Command) -> String {
    String::from_utf8(succeed(cmd).stdout).unwrap()
}

/// An .npy file's shape, dtype and little-endian payload.
fn read_npy(path: &Path) -> (String, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{}", path.display());
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + len) % 64, 0, "header not 64-byte aligned");
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    let field = |key: &str| {
        let at = header.find(key).unwrap() + key.len();
        header[at..].trim_start_matches([':', ' ']).to_owned()
    };
    let descr = field("'descr'")[1..4].to_owned();
    assert!(field("'fortran_order'").starts_with("False"));
    let shape_text = field("'shape'");
    let shape = shape_text[1..shape_text.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (descr, shape, bytes[10 + len..].to_vec())
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn i64s(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Ids and flattened embeddings of an exported Parquet file.
fn read_parquet(path: &Path, id_col: &str) -> (Vec<i64>, Vec<f32>) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let (mut ids, mut emb) = (Vec::new(), Vec::new());
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch.column_by_name(id_col).unwrap();
        let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
        ids.extend(col.values().iter().copied());
        let lists = batch.column_by_name("embedding").unwrap();
        let lists = lists.as_any().downcast_ref::<FixedSizeListArray>().unwrap();
        let values = lists.values();
        let values = values.as_any().downcast_ref::<Float32Array>().unwrap();
        emb.extend(values.values().iter().copied());
    }
    (ids, emb)
}

#[test]
fn embed_writes_matching_parquet_and_npy_and_retrieve_ranks_by_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, tiny()).unwrap();
    let run_dir = dir.path().join("run");
    run(convcg()
        .args(["train", "--quiet", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&run_dir));
    let out = dir.path().join("emb");
    run(convcg()
        .args(["embed", "--quiet"])
        .arg(&run_dir)
        .arg("--out")
        .arg(&out));

    let mut exported = Vec::new();
    for (stem, id_col, rows) in [("pin", "pin_id", 1500), ("user", "user_id", 400)] {
        let (descr, shape, payload) = read_npy(&out.join(format!("{stem}_embeddings.npy")));
        assert_eq!((descr.as_str(), shape.as_slice()), ("<f4", &[rows, 16][..]));
        let emb = f32s(&payload);
        let (descr, shape, payload) = read_npy(&out.join(format!("{stem}_ids.npy")));
        assert_eq!((descr.as_str(), shape.as_slice()), ("<i8", &[rows][..]));
        let ids = i64s(&payload);
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), rows, "{stem} ids repeat");
        for row in emb.chunks_exact(16) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{stem} embedding of norm {norm}");
        }
        let parquet = read_parquet(&out.join(format!("{stem}s.parquet")), id_col);
        assert_eq!(
            parquet,
            (ids.clone(), emb.clone()),
            "{stem}s.parquet differs from the .npy"
        );
        exported.push((ids, emb));
    }
    let (pin_ids, pins) = &exported[0];
    let (user_ids, users) = &exported[1];

    // Three users (one twice) and an id list with a header and a comment.
    let list = dir.path().join("users.csv");
    let chosen = [user_ids[0], user_ids[17], user_ids[399], user_ids[0]];
    let text = format!(
        "user_id\n# picked by the test\n{}\n",
        chosen.map(|u| u.to_string()).join("\n")
    );
    std::fs::write(&list, text).unwrap();
    let csv = run(convcg()
        .arg("retrieve")
        .arg(&run_dir)
        .arg("--users")
        .arg(&list)
        .args(["--k", "5"]));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("user_id,rank,pin_id,score"));
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 4 * 5);
    for (q, user) in chosen.iter().enumerate() {
        let u = user_ids.iter().position(|x| x == user).unwrap();
        let ue = &users[u * 16..(u + 1) * 16];
        let mut scored: Vec<(f32, i64)> = pins
            .chunks_exact(16)
            .zip(pin_ids)
            .map(|(p, &id)| (p.iter().zip(ue).map(|(a, b)| a * b).sum(), id))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        for r in 0..5 {
            let row = &rows[q * 5 + r];
            assert_eq!(row[0], user.to_string());
            assert_eq!(row[1], (r + 1).to_string());
            let score: f32 = row[3].parse().unwrap();
            assert!(
                (score - scored[r].0).abs() < 1e-4,
                "user {user} rank {}: score {score}, brute force {}",
                r + 1,
                scored[r].0
            );
            // Ids must match unless two brute-force scores are too close to order.
            let pin: i64 = row[2].parse().unwrap();
            let near_tie = (r > 0 && scored[r - 1].0 - scored[r].0 < 1e-4)
                || scored[r].0 - scored[r + 1].0 < 1e-4;
            assert!(pin == scored[r].1 || near_tie, "user {user} rank {}", r + 1);
        }
    }

    // An unknown user is served cold with a warning that names it; the lists are the same
    // when the features are rebuilt from the log instead of read from features.state.
    std::fs::write(&list, format!("123456789\n{}\n", user_ids[17])).unwrap();
    let with_cold = |run_dir: &Path| {
        let out = succeed(
            convcg()
                .arg("retrieve")
                .arg(run_dir)
                .arg("--users")
                .arg(&list)
                .args(["--k", "7"]),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("1 of 2 users are not in the run's user table (the first: 123456789)"),
            "{err}"
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let from_state = with_cold(&run_dir);
    assert_eq!(from_state.lines().count(), 1 + 2 * 7);
    std::fs::remove_file(run_dir.join("features.state")).unwrap();
    assert_eq!(with_cold(&run_dir), from_state, "rebuilt from the log");

    numpy_loads(&out, 1500, 400);
    export_reads_back(&run_dir, &dir.path().join("export"));
}

/// `convcg export`: the safetensors file holds every parameter of the checkpoint, bit for bit,
/// under its name and shape, the description lists them, and Python's `safetensors` loads it
/// (when python3 has it).
fn export_reads_back(run_dir: &Path, out: &Path) {
    run(convcg().arg("export").arg(run_dir).arg("--out").arg(out));
    let bytes = std::fs::read(out.join(convcg::WEIGHTS_FILE)).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ckpt = convcg::checkpoint::Checkpoint::read(&run_dir.join(convcg::MODEL_FILE)).unwrap();
    let params = &ckpt.params;
    let expected: Vec<(&str, [usize; 2], &[f32])> = params
        .dense_params()
        .iter()
        .map(|p| (p.name.as_str(), [p.rows, p.cols], p.value.as_slice()))
        .chain(
            params
                .tables()
                .iter()
                .map(|t| (t.name.as_str(), [t.rows, t.dim], t.value.as_slice())),
        )
        .collect();
    assert_eq!(file.len(), expected.len());
    for (name, shape, values) in &expected {
        let view = file.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!(view.shape(), shape.as_slice(), "{name}");
        assert_eq!(f32s(view.data()), *values, "{name}");
    }
    let description: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(convcg::DESCRIPTION_FILE)).unwrap())
            .unwrap();
    assert_eq!(description["format"], convcg::DESCRIPTION_FORMAT);
    assert_eq!(
        description["tensors"].as_array().unwrap().len(),
        expected.len()
    );
    assert_eq!(description["model"]["out_dim"], 16);
    assert!(
        description["query_features"]["sparse"].is_array(),
        "{description}"
    );

    let script = r#"
import sys
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
assert all(v.dtype.name == "float32" for v in t.values())
print("safetensors ok", len(t))
"#;
    match Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(out.join(convcg::WEIGHTS_FILE))
        .output()
    {
        Err(e) => println!("skipped the Python safetensors check: no python3 ({e})"),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named") => {
            println!(
                "skipped the Python safetensors check: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        Ok(o) => assert!(
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .contains(&format!("safetensors ok {}", expected.len())),
            "Python's safetensors rejected the file: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

/// numpy's own reader accepts the files, with the right shapes, dtypes and ids.
fn numpy_loads(out: &Path, pins: usize, users: usize) {
    let script = format!(
        r#"
import sys, numpy as np
d = sys.argv[1]
for stem, n in (("pin", {pins}), ("user", {users})):
    e = np.load(f"{{d}}/{{stem}}_embeddings.npy")
    i = np.load(f"{{d}}/{{stem}}_ids.npy")
    assert e.shape == (n, 16) and e.dtype == np.float32, (stem, e.shape, e.dtype)
    assert i.shape == (n,) and i.dtype == np.int64, (stem, i.shape, i.dtype)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    assert len(set(i.tolist())) == n
print("numpy ok")
"#
    );
    match Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(out)
        .output()
    {
        Err(e) => println!("skipped the numpy check: no python3 ({e})"),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'numpy'") => {
            println!("skipped the numpy check: python3 has no numpy");
        }
        Ok(o) => assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("numpy ok"),
            "numpy rejected the files: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}
