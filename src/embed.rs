//! Embeddings out of a trained run: `convcg embed` writes every pin's and every user's embedding
//! with its id (Parquet, and `.npy` for numpy and FAISS), `convcg retrieve` serves the top K
//! pins for given users.
//!
//! Both open the run through the serving [`Retriever`]: `model.ckpt` and the feature state the
//! run saved (or the features rebuilt from its data, see [`OpenOptions`]). A user's embedding
//! is the query tower's output on a request after the log's end, with the user's last
//! engagements in the log: by default the home feed (no context pin, no search query).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use ndarray::Array2;
use ndarray_npy::WriteNpyExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use convcg_data::import::{DICTIONARY_DIR, Dictionary, csv_field};
use convcg_data::{QueryRequest, Surface};

use crate::checkpoint::RunSource;
use crate::dist::Ranks;
use crate::output::write_atomic;
use crate::run::{Verbosity, dense_slice, in_pool};
use crate::serve::{IndexChoice, OpenOptions, Request, Retriever};

/// The files `convcg embed` writes into its output folder.
pub const EMBED_FILES: [&str; 6] = [
    "pins.parquet",
    "pin_embeddings.npy",
    "pin_ids.npy",
    "users.parquet",
    "user_embeddings.npy",
    "user_ids.npy",
];

/// The home-feed request of `user_id` after the log.
fn home_feed(user_id: i64) -> QueryRequest {
    QueryRequest {
        user_id,
        surface: Surface::HomeFeed,
        context_pin_id: None,
        query_id: None,
        recent_pin_ids: None,
    }
}

/// What `convcg embed` wrote.
#[derive(Clone, Debug)]
pub struct EmbedSummary {
    /// Pins embedded.
    pub pins: usize,
    /// Users embedded.
    pub users: usize,
    /// Embedding width.
    pub dim: usize,
    /// The files written, in [`EMBED_FILES`] order.
    pub files: Vec<PathBuf>,
}

/// Writes the embeddings of every pin and every user of the run in `run_dir` into `out_dir`:
/// `pins.parquet` and `users.parquet` (`pin_id` / `user_id` as INT64 and `embedding` as a
/// fixed-size list of FLOAT), and the same as `.npy` (`*_embeddings.npy`: float32, one row per
/// id, in the order of `*_ids.npy`: int64). Rows are in catalogue and user-table order. Every
/// embedding has unit L2 norm, so a dot product is a cosine. Each file is written atomically.
///
/// # Errors
/// If the run cannot be opened (see the module docs), or a file cannot be written.
pub fn embed_run(
    run_dir: &Path,
    data: Option<&Path>,
    out_dir: &Path,
    verbosity: Verbosity,
) -> Result<EmbedSummary> {
    let run = Retriever::open(
        run_dir,
        &OpenOptions {
            data: data.map(Path::to_owned),
            verbosity,
            index: IndexChoice::Exact,
        },
    )?;
    let state = run.state();
    let requests: Vec<QueryRequest> = state.user_ids().iter().map(|&u| home_feed(u)).collect();
    let users = in_pool(run.config(), |par| Ok(run.embed_queries(&requests, par)?.0))?;
    let pins = run.pin_embeddings();
    let pin_ids = state.pin_ids();
    let user_ids = state.user_ids();
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut files = Vec::new();
    for (name, id_col, ids, emb) in [
        ("pins", "pin_id", pin_ids, pins),
        ("users", "user_id", user_ids, &users),
    ] {
        let parquet = out_dir.join(format!("{name}.parquet"));
        write_atomic(&parquet, &embeddings_parquet(id_col, ids, emb)?)?;
        let stem = &name[..name.len() - 1];
        let npy = out_dir.join(format!("{stem}_embeddings.npy"));
        write_atomic(&npy, &npy_f32(emb)?)?;
        let npy_ids = out_dir.join(format!("{stem}_ids.npy"));
        write_atomic(&npy_ids, &npy_i64(ids)?)?;
        files.extend([parquet, npy, npy_ids]);
    }
    Ok(EmbedSummary {
        pins: pins.nrows(),
        users: users.nrows(),
        dim: pins.ncols(),
        files,
    })
}

/// One user's top K.
#[derive(Clone, Debug, PartialEq)]
pub struct Retrieved {
    /// The user's id.
    pub user_id: i64,
    /// Pin ids, best first.
    pub pin_ids: Vec<i64>,
    /// Their scores (inner products of the normalised embeddings).
    pub scores: Vec<f32>,
}

/// What `convcg retrieve` asks of every user.
#[derive(Clone, Debug)]
pub struct RetrieveOptions {
    /// Pins per user.
    pub k: usize,
    /// The surface of the requests.
    pub surface: Surface,
    /// The pin being viewed (related pins).
    pub context_pin_id: Option<i64>,
    /// The search query.
    pub query_id: Option<i64>,
    /// Leave out the pins of each user's recent engagements (the recent-pins bag).
    pub exclude_seen: bool,
    /// Where the features come from.
    pub open: OpenOptions,
    /// The processes that search the pins: one, or MPI ranks each holding a share.
    pub ranks: Ranks,
}

/// What `convcg retrieve` found.
#[derive(Clone, Debug, PartialEq)]
pub struct Retrievals {
    /// One list per user, in the order given.
    pub lists: Vec<Retrieved>,
    /// The user ids the run's user table does not have, served cold (out-of-vocabulary row,
    /// mean user features, no engagements).
    pub cold_users: Vec<i64>,
    /// The source's own ids where the run's data was imported with dictionaries (trivago's
    /// strings); `None` otherwise.
    pub source_ids: Option<SourceIds>,
}

/// The ids of an imported dataset's source, through the dictionaries its importer wrote beside
/// the tables (`dictionaries/user.csv`, `dictionaries/item.csv`: trivago's strings).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceIds {
    /// Users: the source's id of each user id.
    pub users: Option<Dictionary>,
    /// Items: the source's id of each pin id.
    pub pins: Option<Dictionary>,
}

impl SourceIds {
    /// The dictionaries of the run in `run_dir`'s data directory (`data`, else the one its
    /// `source.toml` names), or `None` when it has none (the synthetic marketplace, or a log
    /// whose ids are the source's own).
    ///
    /// # Errors
    /// If a dictionary exists but cannot be read.
    pub fn of_run(run_dir: &Path, data: Option<&Path>) -> Result<Option<SourceIds>> {
        let dir = match (data, RunSource::read(run_dir)) {
            (Some(dir), _) => dir.to_path_buf(),
            (None, Ok(RunSource::Directory { path })) => path,
            _ => return Ok(None),
        };
        let read = |name: &str| -> Result<Option<Dictionary>> {
            let path = dir.join(DICTIONARY_DIR).join(format!("{name}.csv"));
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Some(Dictionary::from_csv(name, &path, &text)?))
        };
        let (users, pins) = (read("user")?, read("item")?);
        Ok((users.is_some() || pins.is_some()).then_some(SourceIds { users, pins }))
    }

    /// `id`'s source id in `dict`, as a CSV field (empty where there is none).
    fn field(dict: Option<&Dictionary>, id: i64) -> String {
        dict.and_then(|d| d.value(id))
            .map_or_else(String::new, |v| csv_field(v).into_owned())
    }
}

/// The top `opts.k` pins for each user id of `users` from the run in `run_dir`, by exact
/// inner-product search over every pin of the catalogue (see [`Retriever::retrieve`]).
///
/// # Errors
/// If the run cannot be opened or `k` is 0.
pub fn retrieve(run_dir: &Path, users: &[i64], opts: &RetrieveOptions) -> Result<Retrievals> {
    if opts.k == 0 {
        bail!("--k must be at least 1");
    }
    let run = Retriever::open_on(run_dir, &opts.open, &opts.ranks)?;
    let state = run.state();
    let requests: Vec<Request> = users
        .iter()
        .map(|&user_id| Request {
            query: QueryRequest {
                surface: opts.surface,
                context_pin_id: opts.context_pin_id,
                query_id: opts.query_id,
                ..home_feed(user_id)
            },
            k: opts.k,
            exclude_pin_ids: if opts.exclude_seen {
                state.recent_pin_ids(user_id)
            } else {
                Vec::new()
            },
        })
        .collect();
    let answers = in_pool(run.config(), |par| run.retrieve(&requests, par))?;
    let cold_users = users
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.cold.user)
        .map(|(&u, _)| u)
        .collect();
    let lists = users
        .iter()
        .zip(answers)
        .map(|(&user_id, a)| Retrieved {
            user_id,
            pin_ids: a.items.iter().map(|i| i.pin_id).collect(),
            scores: a.items.iter().map(|i| i.score).collect(),
        })
        .collect();
    let source_ids = SourceIds::of_run(run_dir, opts.open.data.as_deref())?;
    Ok(Retrievals {
        lists,
        cold_users,
        source_ids,
    })
}

/// User ids from a text file: one per line, an optional `user_id` header, blank lines and
/// lines starting with `#` ignored; with several comma-separated fields, the first.
///
/// # Errors
/// If the file cannot be read, a line is not an integer (the error names the file and line),
/// or it holds no id.
pub fn read_user_ids(path: &Path) -> Result<Vec<i64>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the user list {}", path.display()))?;
    let mut ids = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let field = line.split(',').next().unwrap_or("").trim();
        if field.is_empty() || field.starts_with('#') || (i == 0 && field == "user_id") {
            continue;
        }
        let id = field.parse::<i64>().with_context(|| {
            format!(
                "{} line {}: user_id {field:?} is not an integer",
                path.display(),
                i + 1
            )
        })?;
        ids.push(id);
    }
    if ids.is_empty() {
        bail!("{} holds no user id", path.display());
    }
    Ok(ids)
}

/// The lists as CSV: `user_id,rank,pin_id,score`, rank from 1, and with `ids` the source's
/// own ids after them (`source_user_id,source_pin_id`).
///
/// # Errors
/// Never in practice (writing to memory).
pub fn retrieved_csv(lists: &[Retrieved], ids: Option<&SourceIds>) -> Result<String> {
    let mut out = Vec::new();
    write!(out, "user_id,rank,pin_id,score")?;
    if ids.is_some() {
        write!(out, ",source_user_id,source_pin_id")?;
    }
    writeln!(out)?;
    for r in lists {
        for (rank, (&pin, score)) in r.pin_ids.iter().zip(&r.scores).enumerate() {
            write!(out, "{},{},{pin},{score}", r.user_id, rank + 1)?;
            if let Some(ids) = ids {
                write!(
                    out,
                    ",{},{}",
                    SourceIds::field(ids.users.as_ref(), r.user_id),
                    SourceIds::field(ids.pins.as_ref(), pin)
                )?;
            }
            writeln!(out)?;
        }
    }
    Ok(String::from_utf8(out)?)
}

fn embeddings_parquet(id_col: &str, ids: &[i64], emb: &Array2<f32>) -> Result<Vec<u8>> {
    let d = emb.ncols();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let schema = Arc::new(Schema::new(vec![
        Field::new(id_col, DataType::Int64, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(item.clone(), i32::try_from(d)?),
            false,
        ),
    ]));
    let values = Float32Array::from(dense_slice(emb)?.to_vec());
    let lists = FixedSizeListArray::try_new(item, i32::try_from(d)?, Arc::new(values), None)?;
    let columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(lists)];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props))?;
    writer.write(&batch)?;
    Ok(writer.into_inner()?)
}

/// `a` as an `.npy` file (float32, C order).
fn npy_f32(a: &Array2<f32>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    a.write_npy(&mut out)?;
    Ok(out)
}

/// `ids` as a one-dimensional `.npy` file (int64).
fn npy_i64(ids: &[i64]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    ndarray::ArrayView1::from(ids).write_npy(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_lists_skip_headers_and_comments_and_name_bad_lines() {
        let dir = std::env::temp_dir().join(format!("convcg-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.csv");
        std::fs::write(&good, "user_id\n# a comment\n7\n\n-3,extra\n").unwrap();
        assert_eq!(read_user_ids(&good).unwrap(), vec![7, -3]);
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, "1\nx2\n").unwrap();
        let e = format!("{:#}", read_user_ids(&bad).unwrap_err());
        assert!(e.contains("bad.txt line 2") && e.contains("\"x2\""), "{e}");
        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "user_id\n").unwrap();
        assert!(read_user_ids(&empty).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
