//! The on-disk state of a run, read and written with the `csv` crate: `results.csv` (one [`Row`]
//! per advertiser, instance and `M`), `done.csv` (finished instances), `logz.csv` (per-query
//! [`ZEstimate`]) and `config.json`.

use super::{ExperimentConfig, Row, ZEstimate, generator_name};
use crate::error::{EngineError, Result};
use crate::mosaic::Generator;
use llm_auction_model::atomic_file::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The header of `results.csv`: [`Row`]'s fields in order.
pub const CSV_HEADER: &str = "query_id,seed,generator,m,agent,agent_name,winner,logprob_opt_reply,expected_logprob_opt,log_z,opt_proxy,ref_proxy,reward_with,reward_without,n_without,reward_gain,payment,payment_no_offset,utility_gain,utility_gain_no_offset,revenue,revenue_no_offset,mentioned";

/// The header of `logz.csv`: [`ZEstimate`]'s fields in order.
const LOGZ_HEADER: &str = "query_id,log_z,opt_proxy,ref_proxy,samples";

/// One line of `done.csv`: a finished `(query, seed, generator)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Done {
    query_id: u32,
    seed: u64,
    #[serde(with = "generator_column")]
    generator: Generator,
}

/// [`Row::generator`] as the files write it (`context`, `reference`).
pub(super) mod generator_column {
    use super::{Generator, generator_name};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(g: &Generator, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(generator_name(*g))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Generator, D::Error> {
        let name = String::deserialize(d)?;
        [Generator::ContextAware, Generator::Reference]
            .into_iter()
            .find(|g| generator_name(*g) == name)
            .ok_or_else(|| D::Error::custom(format!("unknown generator {name:?}")))
    }
}

/// [`Row::mentioned`] as the files write it (`1`, `0`).
pub(super) mod bit {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(b: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(u8::from(*b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(D::Error::custom(format!("{v} is not 0 or 1"))),
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn csv_err(path: &Path, e: csv::Error) -> EngineError {
    let line = e
        .position()
        .map_or(String::new(), |p| format!("line {}: ", p.line()));
    EngineError::Auction {
        field: "results".into(),
        message: format!("{}: {line}{e}", path.display()),
    }
}

/// The whole lines of a file and the length of a torn last line (no final newline: a crash
/// mid-write) left out of them; `None` when the file does not exist.
fn whole_lines(path: &Path) -> Result<Option<(String, usize)>> {
    match std::fs::read_to_string(path) {
        Ok(mut text) => {
            let keep = text.rfind('\n').map_or(0, |i| i + 1);
            let torn = text.len() - keep;
            text.truncate(keep);
            Ok(Some((text, torn)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Records of a CSV text (with or without a header line); records that do not parse are skipped (`done.csv`, `logz.csv`
/// hold only what this module wrote, so a bad line can only be a torn one).
fn records<T: for<'de> Deserialize<'de>>(text: &str, has_headers: bool) -> Vec<T> {
    csv::ReaderBuilder::new()
        .has_headers(has_headers)
        .from_reader(text.as_bytes())
        .deserialize()
        .filter_map(std::result::Result::ok)
        .collect()
}

/// `rows` as CSV lines, without a header.
fn csv_lines<T: Serialize>(rows: &[T], path: &Path) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| csv_err(path, e))?;
    }
    w.into_inner().map_err(|e| io_err(path)(e.into_error()))
}

/// Appends bytes and syncs them to disk.
fn append(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes).map_err(io_err(path))
}

/// One of the run's CSV files, read once and repaired in memory; [`CsvFile::save`] writes it back
/// (atomically) only when a repair changed it.
struct CsvFile {
    path: PathBuf,
    /// Its whole lines: a torn last line (no final newline: a crash mid-write) is dropped, so that
    /// the next append starts on a line of its own and readers see only whole rows.
    text: String,
    changed: bool,
}

impl CsvFile {
    fn load(path: PathBuf) -> Result<Self> {
        let (text, torn) = whole_lines(&path)?.unwrap_or_default();
        if torn > 0 {
            tracing::warn!(path = %path.display(), bytes = torn, "dropping a torn last line");
        }
        let changed = torn > 0;
        Ok(Self {
            path,
            text,
            changed,
        })
    }

    /// Checks the header against `header`: writes it into an empty file, restores a missing one
    /// (rows written after a crash left an empty file), refuses a file of another version.
    fn ensure_header(&mut self, header: &str) -> Result<()> {
        let first = self.text.lines().next().unwrap_or("");
        if self.text.is_empty() {
            self.text = format!("{header}\n");
            self.changed = true;
            return Ok(());
        }
        if first.is_empty() || first == header {
            return Ok(());
        }
        let columns = |l: &str| l.split(',').count();
        // A data row starts with a query id; a header of another version with a name.
        let is_row = first
            .split(',')
            .next()
            .is_some_and(|f| f.parse::<u64>().is_ok())
            && columns(first) == columns(header);
        if !is_row {
            return Err(EngineError::Auction {
                field: "out".into(),
                message: format!(
                    "{} was written by another version of the runner (its columns differ); use another --out",
                    self.path.display()
                ),
            });
        }
        tracing::warn!(path = %self.path.display(), "restoring the missing CSV header");
        self.text = format!("{header}\n{}", self.text);
        self.changed = true;
        Ok(())
    }

    /// Keeps only the rows (of this headed file) whose instance is in `done`.
    fn keep_done_rows(&mut self, done: &HashSet<Done>) -> Result<()> {
        let path = &self.path;
        let mut rdr = csv::Reader::from_reader(self.text.as_bytes());
        let headers = rdr.headers().map_err(|e| csv_err(path, e))?.clone();
        let mut kept = csv::Writer::from_writer(Vec::new());
        kept.write_record(&headers).map_err(|e| csv_err(path, e))?;
        let mut dropped = 0;
        for record in rdr.records() {
            let record = record.map_err(|e| csv_err(path, e))?;
            // A row's instance: its first three columns, read by name.
            let key = record.deserialize::<Done>(Some(&headers)).ok();
            if key.is_some_and(|k| done.contains(&k)) {
                kept.write_record(&record).map_err(|e| csv_err(path, e))?;
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::info!(dropped, "dropping rows of unfinished instances");
            let bytes = kept
                .into_inner()
                .map_err(|e| io_err(path)(e.into_error()))?;
            self.text = String::from_utf8(bytes).map_err(|e| {
                io_err(path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })?;
            self.changed = true;
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        if self.changed {
            write_file(&self.path, self.text.as_bytes())?;
        }
        Ok(())
    }
}

/// Whether two `config.json` texts describe the same run: the grid may grow between runs (more
/// queries or seeds); the rest must match.
fn same_run(a: &str, b: &str) -> bool {
    let strip = |s: &str| -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(s).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("queries");
            o.remove("seeds");
        }
        v
    };
    strip(a) == strip(b)
}

/// The on-disk state of a run.
///
/// Rows of an instance are appended and flushed to disk *before* the instance is recorded as done;
/// on opening, rows of instances that are not recorded as done (a run killed between the two writes)
/// are dropped by rewriting `results.csv` atomically (temporary file + rename). So a resumed run
/// recomputes exactly the unfinished instances and loses nothing.
pub struct Store {
    dir: PathBuf,
    done: HashSet<Done>,
    z: BTreeMap<u32, ZEstimate>,
}

impl Store {
    /// Opens (or creates) the run directory; with `resume` false an existing run is an error.
    ///
    /// # Errors
    /// [`EngineError::Io`]; [`EngineError::Auction`] when `resume` is false and results exist, or
    /// when the directory holds a run of another configuration or format.
    pub fn open(dir: &Path, cfg: &ExperimentConfig, resume: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cfg_path = dir.join("config.json");
        let cfg_text = serde_json::to_string_pretty(cfg)
            .map_err(|e| io_err(&cfg_path)(std::io::Error::other(e)))?;
        let mut results = CsvFile::load(dir.join("results.csv"))?;
        let mut logz = CsvFile::load(dir.join("logz.csv"))?;
        let done_file = CsvFile::load(dir.join("done.csv"))?;
        if results.text.lines().skip(1).any(|l| !l.is_empty()) && !resume {
            return Err(EngineError::Auction {
                field: "out".into(),
                message: format!(
                    "{} already holds results; use --resume or another --out",
                    dir.display()
                ),
            });
        }
        if let Ok(old) = std::fs::read_to_string(&cfg_path)
            && !same_run(&old, &cfg_text)
        {
            return Err(EngineError::Auction {
                field: "out".into(),
                message: format!(
                    "{} holds a run with another configuration (see its config.json)",
                    dir.display()
                ),
            });
        }
        // Each CSV file holds its header before any row, written atomically: a crash or a full
        // disk never leaves one empty or headerless.
        results.ensure_header(CSV_HEADER)?;
        logz.ensure_header(LOGZ_HEADER)?;
        let done: HashSet<Done> = records(&done_file.text, false).into_iter().collect();
        results.keep_done_rows(&done)?;
        let z = records::<ZEstimate>(&logz.text, true)
            .into_iter()
            .map(|z| (z.query_id, z))
            .collect();
        for file in [&results, &logz, &done_file] {
            file.save()?;
        }
        write_file(&cfg_path, cfg_text.as_bytes())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            done,
            z,
        })
    }

    /// Whether an instance is finished.
    pub fn is_done(&self, query_id: u32, seed: u64, generator: Generator) -> bool {
        self.done.contains(&Done {
            query_id,
            seed,
            generator,
        })
    }

    /// The stored `Ẑ` of a query.
    pub fn z(&self, query_id: u32) -> Option<ZEstimate> {
        self.z.get(&query_id).copied()
    }

    /// Stores a query's `Ẑ`.
    ///
    /// # Errors
    /// [`EngineError::Io`].
    pub fn put_z(&mut self, z: ZEstimate) -> Result<()> {
        let path = self.dir.join("logz.csv");
        append(&path, &csv_lines(&[z], &path)?)?;
        self.z.insert(z.query_id, z);
        Ok(())
    }

    /// Appends an instance's rows, then records it as done.
    ///
    /// # Errors
    /// [`EngineError::Io`].
    pub fn put_instance(
        &mut self,
        query_id: u32,
        seed: u64,
        generator: Generator,
        rows: &[Row],
    ) -> Result<()> {
        let path = self.dir.join("results.csv");
        append(&path, &csv_lines(rows, &path)?)?;
        let done = Done {
            query_id,
            seed,
            generator,
        };
        let done_path = self.dir.join("done.csv");
        append(&done_path, &csv_lines(&[done], &done_path)?)?;
        self.done.insert(done);
        Ok(())
    }

    /// Finished instances.
    pub fn done_count(&self) -> usize {
        self.done.len()
    }
}

/// Parses `results.csv` back into rows (a torn last line is skipped).
///
/// # Errors
/// [`EngineError::Io`] for an unreadable file; [`EngineError::Auction`] naming `results`, the file
/// and the line for a malformed one.
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let (text, _) = whole_lines(path)?
        .ok_or_else(|| io_err(path)(std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    if text.lines().next() != Some(CSV_HEADER) {
        return Err(EngineError::Auction {
            field: "results".into(),
            message: format!("{}: unexpected header", path.display()),
        });
    }
    csv::Reader::from_reader(text.as_bytes())
        .deserialize()
        .map(|r| r.map_err(|e| csv_err(path, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(k: u32) -> Row {
        let x = |j: u32| f64::from(k) + f64::from(j) / 64.0;
        Row {
            query_id: k,
            seed: u64::from(k) + 100,
            generator: if k.is_multiple_of(2) {
                Generator::ContextAware
            } else {
                Generator::Reference
            },
            m: 4,
            agent: 1,
            agent_name: format!("agent, \"{k}\""),
            winner: 2,
            logprob_opt_reply: x(1),
            expected_logprob_opt: x(2),
            log_z: x(3),
            opt_proxy: x(4),
            ref_proxy: x(5),
            reward_with: x(6),
            reward_without: x(7),
            n_without: 3,
            reward_gain: x(8),
            payment: x(9),
            payment_no_offset: x(10),
            utility_gain: x(11),
            utility_gain_no_offset: x(12),
            revenue: x(13),
            revenue_no_offset: x(14),
            mentioned: k % 2 == 1,
        }
    }

    /// The hand-written headers are the field names serde writes, in order, and rows written
    /// below them read back equal (quoted names included).
    #[test]
    fn headers_are_the_serialized_field_names() {
        let header_of = |w: csv::Writer<Vec<u8>>| {
            let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
            text.lines().next().map(str::to_owned)
        };
        let rows = [row(0), row(1)];
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in &rows {
            w.serialize(r).unwrap();
        }
        assert_eq!(header_of(w).as_deref(), Some(CSV_HEADER));
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(ZEstimate {
            query_id: 3,
            log_z: -1.5,
            opt_proxy: -2.0,
            ref_proxy: -2.5,
            samples: 8,
        })
        .unwrap();
        assert_eq!(header_of(w).as_deref(), Some(LOGZ_HEADER));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        let mut text = format!("{CSV_HEADER}\n").into_bytes();
        text.extend(csv_lines(&rows, &path).unwrap());
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_rows(&path).unwrap(), rows);
    }

    /// A header goes into an empty file only: a file whose first line is blank keeps its rows.
    #[test]
    fn the_header_is_written_into_an_empty_file_only() {
        let mut f = CsvFile {
            path: PathBuf::from("logz.csv"),
            text: String::new(),
            changed: false,
        };
        f.ensure_header(LOGZ_HEADER).unwrap();
        assert_eq!(
            (f.text.as_str(), f.changed),
            (&*format!("{LOGZ_HEADER}\n"), true)
        );
        let blank_first = "\n3,-1.5,-2,-2.5,8\n";
        let mut f = CsvFile {
            path: PathBuf::from("logz.csv"),
            text: blank_first.into(),
            changed: false,
        };
        f.ensure_header(LOGZ_HEADER).unwrap();
        assert_eq!((f.text.as_str(), f.changed), (blank_first, false));
    }
}
