//! The model table: what the crate assumes about each model, kept as dated data.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Deserialize;

use super::models::{ModelFamily, ModelInfo, base_model_id};

/// The built-in table's text.
const BUILT_IN: &str = include_str!("models.json");

/// The most model names warned about per table (model ids come from requests).
const MAX_WARNED: usize = 1024;

/// What is reserved for an unknown model that gives no max-tokens field: large, because
/// under-reserving is what gets a client throttled.
pub(crate) const UNKNOWN_MAX_OUTPUT: u64 = 64_000;

/// The Bedrock endpoint a row describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `bedrock-runtime` (InvokeModel, Converse, their streams, `/openai/v1`): one tokens-per-
    /// minute quota per model, output settled with burndown.
    Runtime,
    /// `bedrock-mantle`: separate input and output tokens-per-minute quotas, no burndown.
    Mantle,
}

impl Endpoint {
    /// The name used in table files: `runtime`, `mantle`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Runtime => "runtime",
            Endpoint::Mantle => "mantle",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "runtime" | "bedrock-runtime" => Some(Endpoint::Runtime),
            "mantle" | "bedrock-mantle" => Some(Endpoint::Mantle),
            _ => None,
        }
    }
}

/// A model table, an override or a table file that cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ModelTableError {
    /// The text is not a table: bad JSON, a missing or unknown field, a wrong type.
    Parse {
        /// What the parser said (with line and column).
        message: String,
    },
    /// The table file could not be read.
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A burndown of 0: every output token would be free, which no endpoint does.
    ZeroBurndown {
        /// The row's pattern or the overridden id.
        pattern: String,
    },
    /// A pattern that is empty or has characters no model id has (spaces, upper case).
    BadPattern {
        /// The pattern.
        pattern: String,
    },
    /// An override pattern that matches no row of the table (a typo, usually). To add a model
    /// the table does not know, override its exact id or load a newer table.
    PatternMatchesNothing {
        /// The pattern.
        pattern: String,
    },
    /// A family name that is not one of `anthropic`, `titan-text`, `embedding`, `nova`,
    /// `llama`, `jurassic`, `max-tokens`, `unknown`.
    UnknownFamily {
        /// The name.
        family: String,
    },
    /// An endpoint that is not `runtime` or `mantle`.
    UnknownEndpoint {
        /// The name.
        endpoint: String,
    },
    /// A date that is not `YYYY-MM-DD`.
    BadDate {
        /// The value.
        date: String,
    },
    /// A default max tokens above the row's maximum output.
    DefaultAboveMaximum {
        /// The row's pattern.
        pattern: String,
    },
    /// A table format this version does not read.
    UnsupportedFormat {
        /// The format number.
        format: u32,
    },
}

impl fmt::Display for ModelTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse { message } => write!(f, "the model table does not parse: {message}"),
            Self::Io { path, source } => write!(f, "cannot read the model table {path}: {source}"),
            Self::ZeroBurndown { pattern } => write!(
                f,
                "`{pattern}`: an output burndown of 0 is not a burndown (1 is the least)"
            ),
            Self::BadPattern { pattern } => write!(
                f,
                "`{pattern}` is not a model pattern (lower-case id characters, `*` and `?`)"
            ),
            Self::PatternMatchesNothing { pattern } => write!(
                f,
                "the pattern `{pattern}` matches no model of the table: override an exact id, \
                 or load a newer table"
            ),
            Self::UnknownFamily { family } => write!(
                f,
                "unknown model family `{family}` (anthropic, titan-text, embedding, nova, llama, \
                 jurassic, max-tokens, unknown)"
            ),
            Self::UnknownEndpoint { endpoint } => {
                write!(f, "unknown endpoint `{endpoint}` (runtime, mantle)")
            }
            Self::BadDate { date } => write!(f, "`{date}` is not a YYYY-MM-DD date"),
            Self::DefaultAboveMaximum { pattern } => write!(
                f,
                "`{pattern}`: the default max tokens is above the maximum output"
            ),
            Self::UnsupportedFormat { format } => write!(
                f,
                "model table format {format} is newer than this crate reads (1)"
            ),
        }
    }
}

impl std::error::Error for ModelTableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A glob over model ids: `*` any run of characters, `?` one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    text: String,
    /// Literal characters: the specificity.
    literal: usize,
}

impl Glob {
    fn new(pattern: &str) -> Result<Self, ModelTableError> {
        let ok = !pattern.is_empty()
            && pattern
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase());
        if !ok {
            return Err(ModelTableError::BadPattern {
                pattern: pattern.to_owned(),
            });
        }
        let literal = pattern
            .bytes()
            .filter(|b| !matches!(b, b'*' | b'?'))
            .count();
        Ok(Glob {
            text: pattern.to_owned(),
            literal,
        })
    }

    /// Whether the glob matches all of `s` (iterative, with one backtrack point: linear in
    /// practice, never exponential).
    fn matches(&self, s: &str) -> bool {
        let (p, s) = (self.text.as_bytes(), s.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }

    /// Whether two patterns can name the same model: either matches the other's text.
    fn overlaps(&self, other: &Glob) -> bool {
        self.matches(&other.text) || other.matches(&self.text)
    }
}

/// One row of a [`ModelTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRow {
    pattern: Glob,
    endpoint: Endpoint,
    info: ModelInfo,
    checked: String,
    note: Option<String>,
}

impl ModelRow {
    /// The pattern, as written.
    pub fn pattern(&self) -> &str {
        &self.pattern.text
    }
    /// The endpoint it describes.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }
    /// What it says of the models it matches.
    pub fn info(&self) -> ModelInfo {
        self.info
    }
    /// When it was last checked (`YYYY-MM-DD`); empty for a user's override by pattern.
    pub fn checked(&self) -> &str {
        &self.checked
    }
    /// The note of the row, if any (sources, open questions).
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
}

/// How a model id was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// An exact override, a pattern override or a row.
    Known,
    /// An `unknown_models` row: a vendor known to burn more than 1x.
    Family,
    /// Nothing matched.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TableData {
    checked: String,
    rows: Vec<ModelRow>,
    /// `unknown_models`, with the burndown already raised to their vendor's highest.
    families: Vec<ModelRow>,
    /// Pattern overrides (ahead of the rows).
    patterns: Vec<ModelRow>,
    /// Exact overrides by id or ARN, as given.
    exact: HashMap<String, ModelInfo>,
}

/// The model knowledge in use: dated rows by pattern and endpoint, the family rules for models
/// no row names, and the user's overrides by exact id or ARN and by pattern. Cheap to clone;
/// clones share the set of models already warned about.
///
/// # Why data, and why JSON
///
/// Bedrock's burndown rates and model maximums change monthly (late 2026: 15x, 10x, 5x and
/// 1x tiers), and a wrong rate is a throttle: a limiter that settles Opus 4.8 at 5x while the
/// server books 15x admits three times too much. So the knowledge is one table of rows, each
/// with the date it was last checked, compiled in from `models.json` and replaceable at run
/// time ([`ModelTable::from_json`], [`ModelTable::from_file`]) without a new release. JSON
/// because `serde_json` is already a dependency of the `bedrock` feature (TOML would add one),
/// and one row per line keeps diffs readable.
///
/// # Rows, patterns, the unknown
///
/// A row has a pattern (matched against the model id after its geographic prefix, lower
/// case; `*` is any run of characters, `?` one character), an endpoint (bedrock-runtime or
/// bedrock-mantle), the body family, the maximum output, the default max tokens, the output
/// burndown and its date. The most specific matching row wins (most literal characters).
///
/// A model no row matches but whose vendor burns more than 1x (an `unknown_models` row:
/// Anthropic, the GPT-5 family) gets the HIGHEST burndown of that vendor's rows, never a
/// silent 1x, and one `tracing` warning naming it: AWS adds models faster than any table, and
/// over-counting costs some throughput where under-counting costs throttles. Any other unknown
/// model (an ARN without a mapping, a vendor at 1x) gets 1x and a large reservation.
///
/// ```
/// use bedrock_throttle::bedrock::{ModelFamily, ModelInfo, ModelTable};
///
/// let table = ModelTable::default();
/// let info = table.lookup("us.anthropic.claude-sonnet-4-5-20250929-v1:0");
/// assert_eq!(info.family, ModelFamily::AnthropicClaude);
/// assert_eq!(info.output_burndown, 5);
/// assert_eq!(info.max_output_tokens, 64_000);
/// assert_eq!(table.lookup("global.anthropic.claude-opus-4-8-20261015-v1:0").output_burndown, 15);
///
/// // An Anthropic model the table does not know: the highest Anthropic burndown (and one
/// // warning), never 1x.
/// assert_eq!(table.lookup("anthropic.claude-opus-9-20290101-v1:0").output_burndown, 15);
///
/// // Overrides: by exact id or ARN, by pattern (which must match a row), by burndown alone.
/// let arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123";
/// let table = ModelTable::new()
///     .with_model(arn, ModelInfo::new(ModelFamily::AnthropicClaude, 64_000, 5))?
///     .with_burndown("anthropic.claude-sonnet-4-5*", 6)?;
/// assert_eq!(table.lookup(arn).output_burndown, 5);
/// assert_eq!(table.lookup("eu.anthropic.claude-sonnet-4-5-20250929-v1:0").output_burndown, 6);
/// assert!(table.clone().with_burndown("antropic.claude*", 5).is_err());
/// assert!(table.with_burndown(arn, 0).is_err());
/// # Ok::<(), bedrock_throttle::bedrock::ModelTableError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ModelTable {
    data: Arc<TableData>,
    warned: Arc<Mutex<HashSet<String>>>,
}

impl PartialEq for ModelTable {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl Default for ModelTable {
    fn default() -> Self {
        static BUILT: OnceLock<ModelTable> = OnceLock::new();
        BUILT
            .get_or_init(|| {
                ModelTable::from_json(BUILT_IN).unwrap_or_else(|e| {
                    // Checked by the tests: the built-in table always parses.
                    debug_assert!(false, "the built-in model table: {e}");
                    tracing::error!("the built-in model table: {e}; no model is known");
                    ModelTable::empty()
                })
            })
            .clone()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTable {
    format: u32,
    checked: String,
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
    models: Vec<FileRow>,
    #[serde(default)]
    unknown_models: Vec<FileRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRow {
    pattern: String,
    endpoint: String,
    family: String,
    max_output_tokens: u64,
    #[serde(default)]
    default_max_tokens: Option<u64>,
    #[serde(default)]
    output_burndown: Option<u64>,
    checked: String,
    #[serde(default)]
    note: Option<String>,
}

fn check_date(date: &str) -> Result<(), ModelTableError> {
    let b = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let num = |r: std::ops::Range<usize>| date[r].parse::<u32>().unwrap_or(0);
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && (1..=12).contains(&num(5..7))
        && (1..=31).contains(&num(8..10));
    if ok {
        Ok(())
    } else {
        Err(ModelTableError::BadDate {
            date: date.to_owned(),
        })
    }
}

impl FileRow {
    fn into_row(self, needs_burndown: bool) -> Result<ModelRow, ModelTableError> {
        let pattern = Glob::new(&self.pattern)?;
        let family =
            ModelFamily::from_name(&self.family).ok_or_else(|| ModelTableError::UnknownFamily {
                family: self.family.clone(),
            })?;
        let endpoint =
            Endpoint::parse(&self.endpoint).ok_or_else(|| ModelTableError::UnknownEndpoint {
                endpoint: self.endpoint.clone(),
            })?;
        check_date(&self.checked)?;
        let burndown = match self.output_burndown {
            Some(0) => {
                return Err(ModelTableError::ZeroBurndown {
                    pattern: self.pattern,
                });
            }
            Some(n) => n,
            None if needs_burndown => {
                return Err(ModelTableError::Parse {
                    message: format!("row `{}`: missing field `output_burndown`", self.pattern),
                });
            }
            None => 1,
        };
        let mut info = ModelInfo::new(family, self.max_output_tokens, burndown);
        if let Some(default) = self.default_max_tokens {
            if default > self.max_output_tokens {
                return Err(ModelTableError::DefaultAboveMaximum {
                    pattern: self.pattern,
                });
            }
            info = info.with_default_max_tokens(default);
        }
        Ok(ModelRow {
            pattern,
            endpoint,
            info,
            checked: self.checked,
            note: self.note,
        })
    }
}

/// The most specific row of `rows` on `endpoint` that matches `id`.
fn best<'a>(rows: &'a [ModelRow], endpoint: Endpoint, id: &str) -> Option<&'a ModelRow> {
    rows.iter()
        .filter(|r| r.endpoint == endpoint && r.pattern.matches(id))
        // The first of equally specific rows wins: `max_by_key` keeps the last, so reverse.
        .rev()
        .max_by_key(|r| r.pattern.literal)
}

impl ModelTable {
    /// The built-in table (the same as [`ModelTable::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A table with no rows: every model is unknown (1x, the large default reservation).
    pub fn empty() -> Self {
        Self::from_data(TableData {
            checked: String::new(),
            rows: Vec::new(),
            families: Vec::new(),
            patterns: Vec::new(),
            exact: HashMap::new(),
        })
    }

    fn from_data(data: TableData) -> Self {
        Self {
            data: Arc::new(data),
            warned: Arc::default(),
        }
    }

    /// Reads a table in the built-in format (see `models.json` in the crate's sources): a
    /// newer table than the crate's, without a new release.
    ///
    /// ```
    /// use bedrock_throttle::bedrock::{ModelTable, ModelTableError};
    ///
    /// let table = ModelTable::from_json(r#"{
    ///   "format": 1, "checked": "2027-01-04",
    ///   "models": [
    ///     {"pattern": "anthropic.claude-opus-6*", "endpoint": "runtime", "family": "anthropic",
    ///      "max_output_tokens": 128000, "output_burndown": 20, "checked": "2027-01-04"}
    ///   ],
    ///   "unknown_models": [
    ///     {"pattern": "anthropic.*", "endpoint": "runtime", "family": "anthropic",
    ///      "max_output_tokens": 128000, "checked": "2027-01-04"}
    ///   ]
    /// }"#)?;
    /// assert_eq!(table.checked(), "2027-01-04");
    /// assert_eq!(table.lookup("us.anthropic.claude-opus-6-20270101-v1:0").output_burndown, 20);
    /// // Unknown Claude models get the highest Anthropic burndown of THIS table.
    /// assert_eq!(table.lookup("anthropic.claude-haiku-6-v1:0").output_burndown, 20);
    ///
    /// assert!(matches!(ModelTable::from_json("{"), Err(ModelTableError::Parse { .. })));
    /// # Ok::<(), ModelTableError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ModelTableError`]: the text does not parse, or a row is invalid (a burndown of 0, a
    /// bad pattern, family, endpoint or date).
    pub fn from_json(json: &str) -> Result<Self, ModelTableError> {
        let file: FileTable = serde_json::from_str(json).map_err(|e| ModelTableError::Parse {
            message: e.to_string(),
        })?;
        if file.format != 1 {
            return Err(ModelTableError::UnsupportedFormat {
                format: file.format,
            });
        }
        check_date(&file.checked)?;
        let rows = file
            .models
            .into_iter()
            .map(|r| r.into_row(true))
            .collect::<Result<Vec<_>, _>>()?;
        let mut families = file
            .unknown_models
            .into_iter()
            .map(|r| r.into_row(false))
            .collect::<Result<Vec<_>, _>>()?;
        // The vendor's highest known burndown: a newer table raises it by itself.
        for family in &mut families {
            let highest = rows
                .iter()
                .filter(|r| r.endpoint == family.endpoint && family.pattern.matches(r.pattern()))
                .map(|r| r.info.output_burndown)
                .max()
                .unwrap_or(1);
            family.info.output_burndown = family.info.output_burndown.max(highest);
        }
        Ok(Self::from_data(TableData {
            checked: file.checked,
            rows,
            families,
            patterns: Vec::new(),
            exact: HashMap::new(),
        }))
    }

    /// Reads a table file (the format of [`from_json`](Self::from_json)).
    ///
    /// # Errors
    ///
    /// [`ModelTableError::Io`] when the file cannot be read, else as
    /// [`from_json`](Self::from_json).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ModelTableError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ModelTableError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// When the table as a whole was last checked (`YYYY-MM-DD`).
    pub fn checked(&self) -> &str {
        &self.data.checked
    }

    /// The rows, in table order (overrides by pattern first).
    pub fn rows(&self) -> impl Iterator<Item = &ModelRow> + '_ {
        self.data.patterns.iter().chain(&self.data.rows)
    }

    /// The same table, about to change: a new set of warned models (the answers change).
    fn edited(mut self) -> Self {
        self.warned = Arc::default();
        self
    }

    /// Overrides what is known of one model id or ARN (exact, after percent-decoding; a
    /// geographic profile id is its own entry).
    ///
    /// # Errors
    ///
    /// [`ModelTableError::ZeroBurndown`], [`ModelTableError::BadPattern`] for an empty id.
    pub fn with_model(
        self,
        model_id: impl Into<String>,
        info: ModelInfo,
    ) -> Result<Self, ModelTableError> {
        let model_id = model_id.into();
        if model_id.is_empty() {
            return Err(ModelTableError::BadPattern { pattern: model_id });
        }
        if info.output_burndown == 0 {
            return Err(ModelTableError::ZeroBurndown { pattern: model_id });
        }
        let mut table = self.edited();
        Arc::make_mut(&mut table.data).exact.insert(model_id, info);
        Ok(table)
    }

    /// Overrides what is known of every model `pattern` matches (ahead of every row). The
    /// pattern must match a row of the table (a typo is an error, not a silent no-op).
    ///
    /// # Errors
    ///
    /// [`ModelTableError::BadPattern`], [`ModelTableError::PatternMatchesNothing`],
    /// [`ModelTableError::ZeroBurndown`].
    pub fn with_pattern(self, pattern: &str, info: ModelInfo) -> Result<Self, ModelTableError> {
        let glob = Glob::new(pattern)?;
        if info.output_burndown == 0 {
            return Err(ModelTableError::ZeroBurndown {
                pattern: pattern.to_owned(),
            });
        }
        if !self.overlapping(&glob).any(|_| true) {
            return Err(ModelTableError::PatternMatchesNothing {
                pattern: pattern.to_owned(),
            });
        }
        let mut table = self.edited();
        let data = Arc::make_mut(&mut table.data);
        data.patterns.retain(|r| r.pattern != glob);
        data.patterns.push(ModelRow {
            pattern: glob,
            endpoint: Endpoint::Runtime,
            info,
            checked: String::new(),
            note: Some("override".to_owned()),
        });
        Ok(table)
    }

    /// Overrides the output burndown alone: of one exact id or ARN, or (with `*` or `?`) of
    /// every model a pattern matches, keeping what the table says of the rest.
    ///
    /// # Errors
    ///
    /// As [`with_model`](Self::with_model) and [`with_pattern`](Self::with_pattern).
    pub fn with_burndown(
        self,
        id_or_pattern: &str,
        burndown: u64,
    ) -> Result<Self, ModelTableError> {
        if id_or_pattern.contains(['*', '?']) {
            let glob = Glob::new(id_or_pattern)?;
            let mut info = self
                .overlapping(&glob)
                .max_by_key(|r| r.pattern.literal)
                .map(|r| r.info)
                .ok_or_else(|| ModelTableError::PatternMatchesNothing {
                    pattern: id_or_pattern.to_owned(),
                })?;
            info.output_burndown = burndown;
            self.with_pattern(id_or_pattern, info)
        } else {
            let mut info = self.resolve(id_or_pattern).0;
            info.output_burndown = burndown;
            self.with_model(id_or_pattern, info)
        }
    }

    /// The runtime rows (and pattern overrides) that `glob` can match: rows of known models,
    /// not the `unknown_models` rules (a typo under `anthropic.*` still matches nothing).
    fn overlapping<'a>(&'a self, glob: &'a Glob) -> impl Iterator<Item = &'a ModelRow> + 'a {
        self.rows()
            .filter(move |r| r.endpoint == Endpoint::Runtime && r.pattern.overlaps(glob))
    }

    /// What is known of `model_id` on bedrock-runtime. A model the table does not know, of a
    /// vendor known to burn more than 1x, gets the vendor's highest burndown and ONE `tracing`
    /// warning naming it (per table and model); an ARN without a mapping gets one warning too.
    pub fn lookup(&self, model_id: &str) -> ModelInfo {
        let (info, resolved) = self.resolve(model_id);
        match resolved {
            Resolved::Known => {}
            Resolved::Family => self.warn_once(model_id, || {
                tracing::warn!(
                    model = model_id,
                    burndown = info.output_burndown,
                    table_checked = %self.data.checked,
                    "the model table does not know this model: settling its output at its \
                     vendor's highest burndown; add it (ModelTable::with_model, or a newer table) \
                     to settle it exactly"
                )
            }),
            Resolved::Unknown if model_id.starts_with("arn:") => self.warn_once(model_id, || {
                tracing::warn!(
                    model = model_id,
                    "an ARN the model table does not map: its family and burndown are unknown \
                     (1x assumed); map it with ModelTable::with_model"
                )
            }),
            Resolved::Unknown => {}
        }
        info
    }

    fn warn_once(&self, model_id: &str, warn: impl FnOnce()) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.len() < MAX_WARNED && warned.insert(model_id.to_owned()) {
            drop(warned);
            warn();
        }
    }

    /// What is known of `model_id` on bedrock-runtime, and how it was found; no warning.
    pub(crate) fn resolve(&self, model_id: &str) -> (ModelInfo, Resolved) {
        self.resolve_on(Endpoint::Runtime, model_id)
    }

    /// As [`resolve`](Self::resolve), on `endpoint`.
    pub(crate) fn resolve_on(&self, endpoint: Endpoint, model_id: &str) -> (ModelInfo, Resolved) {
        let data = &self.data;
        if let Some(info) = data.exact.get(model_id) {
            return (*info, Resolved::Known);
        }
        // Model ids are lower case: allocate only for the odd one that is not.
        let lower;
        let id = if model_id.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = model_id.to_ascii_lowercase();
            lower.as_str()
        } else {
            model_id
        };
        let id = base_model_id(id);
        if let Some(row) =
            best(&data.patterns, endpoint, id).or_else(|| best(&data.rows, endpoint, id))
        {
            return (row.info, Resolved::Known);
        }
        if let Some(row) = best(&data.families, endpoint, id) {
            return (row.info, Resolved::Family);
        }
        (
            ModelInfo::new(ModelFamily::Unknown, UNKNOWN_MAX_OUTPUT, 1),
            Resolved::Unknown,
        )
    }

    /// Whether a row or an override names `model_id` (the emulator's strict model check).
    #[cfg(feature = "emulator")]
    pub(crate) fn knows(&self, model_id: &str) -> bool {
        self.resolve(model_id).1 == Resolved::Known
    }

    /// The row that answers for `model_id` on bedrock-runtime, if one does (for its date).
    pub fn row_of(&self, model_id: &str) -> Option<&ModelRow> {
        let id = model_id.to_ascii_lowercase();
        let id = base_model_id(&id);
        let data = &self.data;
        best(&data.patterns, Endpoint::Runtime, id)
            .or_else(|| best(&data.rows, Endpoint::Runtime, id))
            .or_else(|| best(&data.families, Endpoint::Runtime, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_parses() {
        let table = ModelTable::from_json(BUILT_IN).unwrap();
        assert_eq!(table.checked(), "2026-12-07");
        assert!(table.rows().count() > 30);
    }

    #[test]
    fn globs() {
        let g = |p: &str| Glob::new(p).unwrap();
        assert!(g("anthropic.*").matches("anthropic.claude"));
        assert!(g("a?c").matches("abc"));
        assert!(!g("a?c").matches("ac"));
        assert!(g("*-4-5*").matches("claude-haiku-4-5-2025"));
        assert!(!g("anthropic.claude-sonnet-5-2*").matches("anthropic.claude-sonnet-4-5-2025"));
        assert!(g("*").matches(""));
        assert!(g("a*b*c").matches("aXbYbZc"));
        assert!(!g("a*b*c").matches("aXbYbZ"));
        assert!(Glob::new("").is_err());
        assert!(Glob::new("Anthropic.*").is_err());
        assert!(Glob::new("a b").is_err());
    }

    #[test]
    fn tiers_of_late_2026() {
        let t = ModelTable::default();
        let b = |id: &str| t.resolve(id).0.output_burndown;
        assert_eq!(b("us.anthropic.claude-opus-4-8-20261015-v1:0"), 15);
        assert_eq!(b("anthropic.claude-sonnet-5-20260917-v1:0"), 10);
        assert_eq!(b("global.anthropic.claude-opus-5-20261101-v1:0"), 10);
        assert_eq!(b("anthropic.claude-opus-5-5-20261201-v1:0"), 10);
        assert_eq!(b("openai.gpt-5.6-sol-v1:0"), 10);
        assert_eq!(b("mx.anthropic.claude-sonnet-4-20250514-v1:0"), 5);
        assert_eq!(b("anthropic.claude-opus-4-7-v1:0"), 5);
        assert_eq!(b("openai.gpt-oss-120b-1:0"), 1);
        assert_eq!(b("amazon.nova-pro-v1:0"), 1);
        // Unknown vendors' models: family highest, flagged.
        assert_eq!(
            t.resolve("anthropic.claude-sonnet-7-v1:0"),
            (
                ModelInfo::new(ModelFamily::AnthropicClaude, 128_000, 15),
                Resolved::Family
            )
        );
        assert_eq!(t.resolve("openai.gpt-5.9-nova-v1:0").0.output_burndown, 10);
        assert_eq!(t.resolve("acme.model-v1").1, Resolved::Unknown);
        assert_eq!(t.resolve("acme.model-v1").0.output_burndown, 1);
    }

    #[test]
    fn bad_tables_are_typed_errors() {
        let row = |extra: &str| {
            format!(
                r#"{{"format":1,"checked":"2026-12-07","models":[{{"pattern":"x.*","endpoint":"runtime","family":"anthropic","max_output_tokens":10,"checked":"2026-12-07"{extra}}}]}}"#
            )
        };
        assert!(ModelTable::from_json(&row(r#","output_burndown":1"#)).is_ok());
        assert!(matches!(
            ModelTable::from_json(&row(r#","output_burndown":0"#)),
            Err(ModelTableError::ZeroBurndown { .. })
        ));
        assert!(matches!(
            ModelTable::from_json(&row("")),
            Err(ModelTableError::Parse { .. })
        ));
        assert!(matches!(
            ModelTable::from_json(&row(r#","output_burndown":1,"burndown":2"#)),
            Err(ModelTableError::Parse { .. })
        ));
        assert!(matches!(
            ModelTable::from_json(&row(r#","output_burndown":1,"default_max_tokens":11"#)),
            Err(ModelTableError::DefaultAboveMaximum { .. })
        ));
        let bad = row(r#","output_burndown":1"#).replace("anthropic", "martian");
        assert!(matches!(
            ModelTable::from_json(&bad),
            Err(ModelTableError::UnknownFamily { .. })
        ));
        let bad = row(r#","output_burndown":1"#).replacen("2026-12-07", "2026-13-07", 1);
        assert!(matches!(
            ModelTable::from_json(&bad),
            Err(ModelTableError::BadDate { .. })
        ));
        assert!(matches!(
            ModelTable::from_file("/nonexistent/models.json"),
            Err(ModelTableError::Io { .. })
        ));
    }

    #[test]
    fn overrides() {
        let t = ModelTable::default();
        let five = t
            .clone()
            .with_burndown("anthropic.claude-opus-4-8*", 5)
            .unwrap();
        assert_eq!(
            five.resolve("us.anthropic.claude-opus-4-8-20261015-v1:0")
                .0
                .output_burndown,
            5
        );
        // A concrete id as a pattern overlaps its row.
        assert!(
            t.clone()
                .with_pattern(
                    "anthropic.claude-opus-4-8-2026*",
                    ModelInfo::new(ModelFamily::AnthropicClaude, 1, 2)
                )
                .is_ok()
        );
        assert!(matches!(
            t.clone().with_burndown("anthropic.claud-opus*", 5),
            Err(ModelTableError::PatternMatchesNothing { .. })
        ));
        assert!(matches!(
            t.clone().with_burndown("anthropic.claude-opus-4-8*", 0),
            Err(ModelTableError::ZeroBurndown { .. })
        ));
        let exact = t.with_burndown("acme.model-v1", 3).unwrap();
        assert_eq!(
            exact.resolve("acme.model-v1"),
            (
                ModelInfo::new(ModelFamily::Unknown, UNKNOWN_MAX_OUTPUT, 3),
                Resolved::Known
            )
        );
    }
}
