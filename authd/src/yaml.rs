//! Strict, bounded YAML reading shared by the config, users file and snippets.
//!
//! Errors carry the source name, line, column and the dotted key path of the failing
//! value, so an operator can fix the file without guessing.

use std::cell::RefCell;

use serde::de::DeserializeOwned;
use serde_saphyr::{
    Budget, DuplicateKeyPolicy, MergeKeyPolicy, Options, RenderOptions, SnippetMode,
};

/// A YAML problem: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub source: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub key_path: String,
    pub reason: String,
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        if !self.key_path.is_empty() {
            write!(f, ": {}", self.key_path)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for YamlError {}

/// Limits that keep hostile files (alias bombs, deep nesting) cheap to refuse.
fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = 64;
    // Users files, snippets and authd.yml never need anchors; refusing them outright
    // is the simplest defence against alias bombs.
    budget.max_aliases = 0;
    budget.max_anchors = 0;
    budget.max_events = 500_000;
    budget.max_nodes = 250_000;
    budget.max_documents = 1;
    budget.max_recorded_anchor_events = 10_000;
    budget.max_recorded_anchor_bytes = 1024 * 1024;
    serde_saphyr::options! {
        budget: Some(budget),
        duplicate_keys: DuplicateKeyPolicy::Error,
        merge_keys: MergeKeyPolicy::Error,
        strict_booleans: true,
        with_snippet: false,
    }
}

/// Plain words for a breached parser budget.
fn budget_reason(raw: &str) -> &'static str {
    if raw.contains("Alias") || raw.contains("Anchor") {
        "YAML anchors and aliases (&name, *name) are not allowed"
    } else if raw.contains("Depth") {
        "nested deeper than the limit of 64 levels"
    } else {
        "the document is larger or more complex than the limit"
    }
}

/// Deserialises `text` into `T`, refusing inputs larger than `max_bytes`.
pub fn parse_yaml<T: DeserializeOwned>(
    text: &str,
    source: &str,
    max_bytes: usize,
) -> Result<T, YamlError> {
    if text.len() > max_bytes {
        return Err(YamlError {
            source: source.to_string(),
            line: None,
            column: None,
            key_path: String::new(),
            reason: format!(
                "file is {} bytes, larger than the {max_bytes}-byte limit",
                text.len()
            ),
        });
    }
    let path = RefCell::new(String::new());
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            let p = e.path().to_string();
            *path.borrow_mut() = if p == "." { String::new() } else { p };
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let loc = e.location();
        let mut reason = e.render_with_options(serde_saphyr::render_options! {
            snippets: SnippetMode::Off,
        });
        // The rendered text ends with the location, which we report separately.
        if let Some(i) = reason.rfind(" at line ") {
            reason.truncate(i);
        }
        if reason.contains("budget breached") {
            reason = budget_reason(&reason).to_string();
        }
        YamlError {
            source: source.to_string(),
            line: loc.map(|l| l.line()).filter(|l| *l > 0),
            column: loc.map(|l| l.column()).filter(|c| *c > 0),
            key_path: path.into_inner(),
            reason,
        }
    })
}

/// Used where a snippet of RenderOptions is needed elsewhere; keeps the import honest.
#[allow(dead_code)]
fn _render_options_type(_: RenderOptions<'_>) {}
