//! The bytes of one checkpoint file: header, sections, checksum (the layout is in the parent
//! module's docs). Every count is checked against the bytes left before anything is allocated.

use std::path::{Path, PathBuf};

use convcg_data::{BatcherState, LogQState, RngState, StreamingCell, StreamingState};
use convcg_model::{
    DenseParam, EmbeddingTable, FeatureTables, OptimizerState, ParamStore, TableDef,
};

use super::frame::{frame, unframe};
use super::{Checkpoint, CheckpointError, RunSource, TrainingState};
use crate::metrics::LossPoint;

/// The first 8 bytes of every checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"CONVCGCK";
/// The format version this build writes and reads (2: a feature table may name the pin table it
/// reads; 3: each tower's feature tables end with the width of its identity code).
pub const CHECKPOINT_VERSION: u32 = 3;

impl Checkpoint {
    /// The file's bytes (see the module docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.section(*b"CONF", |e| e.str(&self.config_toml));
        e.section(*b"SRCE", |e| match &self.source {
            RunSource::Synthetic => e.u8(0),
            RunSource::Directory { path } => {
                e.u8(1);
                e.str(&path.to_string_lossy());
            }
            RunSource::Supplied => e.u8(2),
        });
        e.section(*b"FEAT", |e| {
            e.features(&self.query_tables);
            e.features(&self.pin_tables);
        });
        e.section(*b"PARM", |e| e.params(&self.params));
        e.section(*b"TRST", |e| match &self.training {
            None => e.u8(0),
            Some(t) => {
                e.u8(1);
                e.training(t);
            }
        });
        frame(&CHECKPOINT_MAGIC, CHECKPOINT_VERSION, &e.buf)
    }

    /// Parses a file's bytes; `path` only names the file in errors.
    ///
    /// # Errors
    /// A [`CheckpointError`] saying what is wrong: not a checkpoint, another version,
    /// truncated, a checksum mismatch, or a malformed section.
    pub fn decode(bytes: &[u8], path: &Path) -> std::result::Result<Checkpoint, CheckpointError> {
        let fail = |problem: String| CheckpointError {
            path: path.to_owned(),
            problem,
        };
        let body = unframe(
            bytes,
            &CHECKPOINT_MAGIC,
            CHECKPOINT_VERSION,
            "a convcg checkpoint",
        )
        .map_err(fail)?;
        Self::decode_body(body).map_err(fail)
    }

    /// The sections, from a body whose checksum has been verified.
    fn decode_body(body: &[u8]) -> std::result::Result<Checkpoint, String> {
        let mut d = Dec::new(body, "body");
        let config_toml = d.section(*b"CONF", |d| d.string())?;
        let source = d.section(*b"SRCE", |d| match d.u8()? {
            0 => Ok(RunSource::Synthetic),
            1 => Ok(RunSource::Directory {
                path: PathBuf::from(d.string()?),
            }),
            2 => Ok(RunSource::Supplied),
            k => Err(format!("unknown source kind {k}")),
        })?;
        let (query_tables, pin_tables) =
            d.section(*b"FEAT", |d| Ok((d.features()?, d.features()?)))?;
        let params = d.section(*b"PARM", Dec::params)?;
        let training = d.section(*b"TRST", |d| match d.u8()? {
            0 => Ok(None),
            1 => d.training().map(Some),
            k => Err(format!("bad presence byte {k}")),
        })?;
        d.finish()?;
        Ok(Checkpoint {
            config_toml,
            source,
            query_tables,
            pin_tables,
            params,
            training,
        })
    }
}

/// Writes little-endian values into a growing buffer.
#[derive(Default)]
struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }
    fn f64(&mut self, v: f64) {
        self.bytes(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.usize(s.len());
        self.bytes(s.as_bytes());
    }
    fn f32s(&mut self, v: &[f32]) {
        self.usize(v.len());
        self.buf.reserve(v.len() * 4);
        for x in v {
            self.bytes(&x.to_le_bytes());
        }
    }
    fn f32_vecs(&mut self, vs: &[Vec<f32>]) {
        self.usize(vs.len());
        for v in vs {
            self.f32s(v);
        }
    }
    /// `tag | length | payload`, the length patched in after `f` writes the payload.
    fn section(&mut self, tag: [u8; 4], f: impl FnOnce(&mut Enc)) {
        self.bytes(&tag);
        let at = self.buf.len();
        self.u64(0);
        f(self);
        let len = (self.buf.len() - at - 8) as u64;
        self.buf[at..at + 8].copy_from_slice(&len.to_le_bytes());
    }
    fn features(&mut self, t: &FeatureTables) {
        for defs in [&t.sparse, &t.bags] {
            self.usize(defs.len());
            for d in defs {
                self.str(&d.name);
                self.usize(d.rows);
                match &d.pin_table {
                    None => self.u8(0),
                    Some(feature) => {
                        self.u8(1);
                        self.str(feature);
                    }
                }
            }
        }
        self.usize(t.dense);
        self.usize(t.id_code);
    }
    fn params(&mut self, p: &ParamStore) {
        self.usize(p.dense_params().len());
        for d in p.dense_params() {
            self.str(&d.name);
            self.usize(d.rows);
            self.usize(d.cols);
            self.f32s(&d.value);
        }
        self.usize(p.tables().len());
        for t in p.tables() {
            self.str(&t.name);
            self.usize(t.rows);
            self.usize(t.dim);
            self.f32s(&t.value);
        }
    }
    fn streaming(&mut self, s: &StreamingState) {
        self.u64(s.step);
        self.usize(s.cells.len());
        for c in &s.cells {
            self.u64(c.index);
            self.u64(c.last);
            self.f64(c.gap);
        }
    }
    fn training(&mut self, t: &TrainingState) {
        for v in [
            t.step,
            t.total_steps,
            t.threads,
            t.examples,
            t.data_fingerprint,
        ] {
            self.u64(v);
        }
        self.f64(t.loss_sum);
        self.u64(t.loss_count);
        self.u64(t.skipped);
        self.usize(t.loss_curve.len());
        for p in &t.loss_curve {
            self.usize(p.step);
            self.f64(p.loss);
        }
        let s = &t.sampler;
        self.usize(s.batch_size);
        self.usize(s.pos);
        self.usize(s.epoch);
        self.usize(s.order.len());
        for &i in &s.order {
            self.usize(i);
        }
        self.bytes(&s.rng.seed);
        self.u64(s.rng.stream);
        self.bytes(&s.rng.word_pos.to_le_bytes());
        match &t.log_q {
            LogQState::Exact => self.u8(0),
            LogQState::Streaming {
                positives,
                negatives,
            } => {
                self.u8(1);
                self.streaming(positives);
                self.streaming(negatives);
            }
        }
        let o = &t.optimizer;
        self.u64(o.step);
        self.f32_vecs(&o.m);
        self.f32_vecs(&o.v);
        self.f32_vecs(&o.row_state);
    }
}

/// Reads little-endian values from a slice, every length checked against what is left.
struct Dec<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The section being read, for messages.
    what: &'static str,
}

type DecResult<T> = std::result::Result<T, String>;

impl<'a> Dec<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Dec<'a> {
        Dec {
            bytes,
            pos: 0,
            what,
        }
    }
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn take(&mut self, n: usize) -> DecResult<&'a [u8]> {
        if n > self.left() {
            return Err(format!(
                "section {} needs {n} more bytes at offset {} but has {}",
                self.what,
                self.pos,
                self.left()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> DecResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> DecResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> DecResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> DecResult<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    fn usize(&mut self) -> DecResult<usize> {
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| format!("section {}: {v} does not fit in memory", self.what))
    }
    /// A count of items of at least `item_bytes` each, checked against the bytes left so that
    /// a corrupt count never drives an allocation.
    fn count(&mut self, item_bytes: usize) -> DecResult<usize> {
        let n = self.usize()?;
        match n.checked_mul(item_bytes.max(1)) {
            Some(need) if need <= self.left() => Ok(n),
            _ => Err(format!(
                "section {}: a count of {n} items of {item_bytes} bytes, but only {} bytes are left",
                self.what,
                self.left()
            )),
        }
    }
    fn string(&mut self) -> DecResult<String> {
        let n = self.count(1)?;
        let what = self.what;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| format!("section {what}: a string that is not UTF-8"))
    }
    fn f32s(&mut self) -> DecResult<Vec<f32>> {
        let n = self.count(4)?;
        Ok(self
            .take(n * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    fn f32_vecs(&mut self) -> DecResult<Vec<Vec<f32>>> {
        let n = self.count(8)?;
        (0..n).map(|_| self.f32s()).collect()
    }
    /// The next section, which must be `tag`, read by `f`, which must consume all of it.
    fn section<T>(
        &mut self,
        tag: [u8; 4],
        f: impl FnOnce(&mut Dec<'a>) -> DecResult<T>,
    ) -> DecResult<T> {
        let name = section_name(tag);
        let found = self
            .array::<4>()
            .map_err(|_| format!("section {name} is missing"))?;
        if found != tag {
            return Err(format!(
                "expected section {name}, found {:?}",
                String::from_utf8_lossy(&found)
            ));
        }
        let len = self.usize()?;
        let payload = self
            .take(len)
            .map_err(|_| format!("section {name} claims {len} bytes, more than are left"))?;
        let mut inner = Dec::new(payload, name);
        let value = f(&mut inner)?;
        inner.finish()?;
        Ok(value)
    }
    fn finish(&self) -> DecResult<()> {
        if self.left() == 0 {
            Ok(())
        } else {
            Err(format!(
                "section {} has {} unread bytes at its end",
                self.what,
                self.left()
            ))
        }
    }
    fn features(&mut self) -> DecResult<FeatureTables> {
        let defs = |d: &mut Dec<'a>| -> DecResult<Vec<TableDef>> {
            let n = d.count(16)?;
            (0..n)
                .map(|_| {
                    Ok(TableDef {
                        name: d.string()?,
                        rows: d.usize()?,
                        pin_table: match d.u8()? {
                            0 => None,
                            1 => Some(d.string()?),
                            k => return Err(format!("bad presence byte {k}")),
                        },
                    })
                })
                .collect()
        };
        let sparse = defs(self)?;
        let bags = defs(self)?;
        Ok(FeatureTables {
            sparse,
            bags,
            dense: self.usize()?,
            id_code: self.usize()?,
        })
    }
    fn params(&mut self) -> DecResult<ParamStore> {
        let n = self.count(32)?;
        let mut dense = Vec::with_capacity(n);
        for _ in 0..n {
            dense.push(DenseParam {
                name: self.string()?,
                rows: self.usize()?,
                cols: self.usize()?,
                value: self.f32s()?,
            });
        }
        let n = self.count(32)?;
        let mut tables = Vec::with_capacity(n);
        for _ in 0..n {
            tables.push(EmbeddingTable {
                name: self.string()?,
                rows: self.usize()?,
                dim: self.usize()?,
                value: self.f32s()?,
            });
        }
        ParamStore::from_parts(dense, tables).map_err(|e| e.to_string())
    }
    fn streaming(&mut self) -> DecResult<StreamingState> {
        let step = self.u64()?;
        let n = self.count(24)?;
        let cells = (0..n)
            .map(|_| {
                Ok(StreamingCell {
                    index: self.u64()?,
                    last: self.u64()?,
                    gap: self.f64()?,
                })
            })
            .collect::<DecResult<_>>()?;
        Ok(StreamingState { step, cells })
    }
    fn training(&mut self) -> DecResult<TrainingState> {
        let [step, total_steps, threads, examples, data_fingerprint] = [
            self.u64()?,
            self.u64()?,
            self.u64()?,
            self.u64()?,
            self.u64()?,
        ];
        let loss_sum = self.f64()?;
        let loss_count = self.u64()?;
        let skipped = self.u64()?;
        let n = self.count(16)?;
        let loss_curve = (0..n)
            .map(|_| {
                Ok(LossPoint {
                    step: self.usize()?,
                    loss: self.f64()?,
                })
            })
            .collect::<DecResult<_>>()?;
        let batch_size = self.usize()?;
        let pos = self.usize()?;
        let epoch = self.usize()?;
        let n = self.count(8)?;
        let order = (0..n).map(|_| self.usize()).collect::<DecResult<_>>()?;
        let rng = RngState {
            seed: self.array()?,
            stream: self.u64()?,
            word_pos: u128::from_le_bytes(self.array()?),
        };
        let log_q = match self.u8()? {
            0 => LogQState::Exact,
            1 => LogQState::Streaming {
                positives: self.streaming()?,
                negatives: self.streaming()?,
            },
            k => return Err(format!("unknown log q kind {k}")),
        };
        let optimizer = OptimizerState {
            step: self.u64()?,
            m: self.f32_vecs()?,
            v: self.f32_vecs()?,
            row_state: self.f32_vecs()?,
        };
        Ok(TrainingState {
            step,
            total_steps,
            threads,
            examples,
            data_fingerprint,
            loss_sum,
            loss_count,
            skipped,
            loss_curve,
            sampler: BatcherState {
                order,
                batch_size,
                pos,
                epoch,
                rng,
            },
            log_q,
            optimizer,
        })
    }
}

/// A section tag as text, for messages.
fn section_name(tag: [u8; 4]) -> &'static str {
    match &tag {
        b"CONF" => "CONF",
        b"SRCE" => "SRCE",
        b"FEAT" => "FEAT",
        b"PARM" => "PARM",
        b"TRST" => "TRST",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::frame::{CRC_LEN, HEADER_LEN};
    use convcg_data::{Batcher, StreamingConfig, StreamingFrequency};
    use proptest::prelude::*;

    fn sample() -> Checkpoint {
        let params = ParamStore::from_parts(
            vec![DenseParam {
                name: "query.mlp.0.w".into(),
                rows: 2,
                cols: 3,
                value: vec![0.5, -1.0, f32::MIN_POSITIVE, 3.25, -0.0, 7.0],
            }],
            vec![EmbeddingTable {
                name: "pin.emb.id".into(),
                rows: 3,
                dim: 2,
                value: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            }],
        )
        .unwrap();
        let mut batcher = Batcher::new(7, 3, 9).unwrap();
        for _ in 0..4 {
            batcher.next_batch();
        }
        let cfg = StreamingConfig {
            buckets: 16,
            learning_rate: 0.5,
            hashes: 2,
        };
        let mut stream = StreamingFrequency::new(&cfg).unwrap();
        stream.observe([1, 2, 2, 5]);
        stream.observe([5]);
        let tables = |n: usize| FeatureTables {
            sparse: vec![TableDef::new(format!("t{n}"), 3 + n)],
            bags: vec![TableDef {
                pin_table: Some(format!("t{n}")),
                ..TableDef::new("recent", 3 + n)
            }],
            dense: n,
            id_code: 0,
        };
        Checkpoint {
            config_toml: "seed = 3\n".into(),
            source: RunSource::Directory {
                path: "/data/ünïcode".into(),
            },
            query_tables: tables(1),
            pin_tables: tables(2),
            params,
            training: Some(TrainingState {
                step: 4,
                total_steps: 10,
                threads: 2,
                examples: 7,
                data_fingerprint: 0xDEAD_BEEF,
                loss_sum: 1.5,
                loss_count: 2,
                skipped: 1,
                loss_curve: vec![LossPoint {
                    step: 2,
                    loss: 0.25,
                }],
                sampler: batcher.state(),
                log_q: LogQState::Streaming {
                    positives: stream.state(),
                    negatives: StreamingFrequency::new(&cfg).unwrap().state(),
                },
                optimizer: OptimizerState {
                    step: 4,
                    m: vec![vec![0.1; 6]],
                    v: vec![vec![0.2; 6]],
                    row_state: vec![vec![0.3; 3]],
                },
            }),
        }
    }

    #[test]
    fn a_checkpoint_round_trips_exactly() {
        let c = sample();
        let bytes = c.encode();
        assert_eq!(&bytes[..8], b"CONVCGCK");
        let back = Checkpoint::decode(&bytes, Path::new("x.ckpt")).unwrap();
        assert_eq!(back, c);
        let model = Checkpoint {
            training: None,
            source: RunSource::Synthetic,
            ..c
        };
        let back = Checkpoint::decode(&model.encode(), Path::new("m.ckpt")).unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn every_truncation_is_refused_as_truncated() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            let err = Checkpoint::decode(&bytes[..len], Path::new("t.ckpt")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("t.ckpt"), "{msg}");
            if len >= 8 + 4 + 8 + 4 {
                assert!(msg.contains("truncated"), "{len}: {msg}");
            }
        }
    }

    #[test]
    fn every_flipped_bit_after_the_header_is_caught_by_the_checksum() {
        let bytes = sample().encode();
        for at in HEADER_LEN..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 1 << (at % 8);
            let msg = Checkpoint::decode(&b, Path::new("c.ckpt"))
                .unwrap_err()
                .to_string();
            assert!(msg.contains("checksum"), "{at}: {msg}");
        }
    }

    #[test]
    fn a_wrong_magic_or_version_is_named() {
        let mut bytes = sample().encode();
        bytes[8] = 9;
        let msg = Checkpoint::decode(&bytes, Path::new("v.ckpt"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("version 9"), "{msg}");
        bytes[0] = b'X';
        let msg = Checkpoint::decode(&bytes, Path::new("v.ckpt"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a convcg checkpoint"), "{msg}");
    }

    /// With a valid checksum over garbage, the section parser still refuses cleanly.
    fn with_crc(body: &[u8]) -> Vec<u8> {
        let mut b = CHECKPOINT_MAGIC.to_vec();
        b.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        b.extend_from_slice(&(body.len() as u64).to_le_bytes());
        b.extend_from_slice(body);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        let mut body = b"CONF".to_vec();
        body.extend_from_slice(&16u64.to_le_bytes());
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        body.extend_from_slice(&[0; 8]);
        let msg = Checkpoint::decode(&with_crc(&body), Path::new("h.ckpt"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("CONF"), "{msg}");
    }

    proptest! {
        #[test]
        fn any_body_with_a_valid_checksum_decodes_or_errs(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Checkpoint::decode(&with_crc(&body), Path::new("p.ckpt"));
        }

        #[test]
        fn damaging_a_real_body_never_panics(at in 0usize..10_000, value in any::<u8>()) {
            let mut body = sample().encode()[HEADER_LEN..].to_vec();
            body.truncate(body.len() - CRC_LEN);
            let at = at % body.len();
            body[at] = value;
            let _ = Checkpoint::decode(&with_crc(&body), Path::new("d.ckpt"));
        }
    }
}
