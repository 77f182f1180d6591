//! The shadow report: one JSON line per shadowed request that reached a class, with the query,
//! the translation and, for every class but `equal`, both answers (each capped). `cutover` reads
//! it back through [`summarize`].

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One line of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// When the comparison finished, in Unix milliseconds.
    pub at_ms: u64,
    /// `_search`, `_count` or `_msearch`.
    pub endpoint: String,
    /// The request's path and query string, as the application sent it.
    pub path: String,
    /// `equal`, `analysis`, `different`, `untranslatable` or `error`.
    pub class: String,
    /// What differed, or why the request could not be translated or answered.
    pub differences: Vec<String>,
    /// The legacy answer's latency in milliseconds.
    pub legacy_ms: f64,
    /// The new cluster's latency in milliseconds, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_ms: Option<f64>,
    /// The request body (capped).
    pub query: String,
    /// The translated body (capped), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated: Option<String>,
    /// The legacy answer (capped), unless the class is `equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_answer: Option<String>,
    /// The new answer (capped), unless the class is `equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_answer: Option<String>,
}

/// The report file, appended to by the shadow tasks.
#[derive(Debug)]
pub struct ReportFile {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl ReportFile {
    /// Opens `path` for appending (a restarted proxy adds to the same report).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("opening the shadow report {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Appends one entry as one line. A write error is logged, not fatal: the report must never
    /// stop the proxy.
    pub fn append(&self, entry: &Entry) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a shadow report entry");
                return;
            }
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // One write of the whole line: concurrent appends never interleave within a line.
        if let Err(e) = file.write_all(&line) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot write the shadow report");
        }
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), saying how long it was.
pub fn capped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// What `cutover` needs from a report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Requests compared (`equal`, `analysis` or `different`).
    pub compared: u64,
    /// `different` entries at or after the window's start.
    pub different_in_window: u64,
    /// Compared entries at or after the window's start.
    pub compared_in_window: u64,
}

/// Reads a report and counts its entries; `window_start_ms` starts the last window.
pub fn summarize(path: &Path, window_start_ms: u64) -> Result<Summary, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the shadow report {}: {e}", path.display()))?;
    let mut summary = Summary::default();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        // A line cut short by a crash while it was written is not a comparison.
        let Ok(entry) = serde_json::from_str::<Entry>(&line) else {
            continue;
        };
        let compared = matches!(entry.class.as_str(), "equal" | "analysis" | "different");
        let recent = entry.at_ms >= window_start_ms;
        summary.compared += u64::from(compared);
        summary.compared_in_window += u64::from(compared && recent);
        summary.different_in_window += u64::from(entry.class == "different" && recent);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_capped_at_a_character_boundary() {
        assert_eq!(capped("abc", 3), "abc");
        assert_eq!(capped("aéb", 2), "a… (4 bytes in all)");
    }

    #[test]
    fn a_report_is_summarized_over_its_window() {
        let path = std::env::temp_dir().join(format!("shadow-report-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let report = ReportFile::open(&path).unwrap();
        let entry = |at_ms: u64, class: &str| Entry {
            at_ms,
            endpoint: "_search".into(),
            path: "/t/_search".into(),
            class: class.into(),
            differences: vec![],
            legacy_ms: 1.0,
            new_ms: Some(1.0),
            query: "{}".into(),
            translated: None,
            legacy_answer: None,
            new_answer: None,
        };
        for (at, class) in [
            (1, "different"),
            (5, "equal"),
            (6, "untranslatable"),
            (7, "analysis"),
        ] {
            report.append(&entry(at, class));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"cut")
            .unwrap();
        assert_eq!(
            summarize(&path, 5).unwrap(),
            Summary {
                compared: 3,
                different_in_window: 0,
                compared_in_window: 2
            }
        );
        assert_eq!(summarize(&path, 0).unwrap().different_in_window, 1);
        let _ = std::fs::remove_file(&path);
    }
}
