//! Secrets: passwords and API keys, read from environment variables or files, never shown.
//!
//! A secret named `DUAL_INDEXER_X` comes from the variable `DUAL_INDEXER_X`, or from the file whose
//! path is in `DUAL_INDEXER_X_FILE` (a mounted Kubernetes or Docker secret; one trailing newline is
//! dropped). Never from a command-line flag, which any user of the machine can read in the process
//! list. [`Secret`]'s `Debug` prints `<redacted>` and it has no `Display`, so a secret cannot reach a
//! log line, `/status` or an error message by accident.

use std::fmt;
use std::sync::{Mutex, OnceLock};

/// Every secret value this process has read, so that text from elsewhere (librdkafka and HTTP
/// errors can echo a property's value) can be scrubbed before it is printed.
fn known() -> &'static Mutex<Vec<String>> {
    static KNOWN: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    KNOWN.get_or_init(|| Mutex::new(Vec::new()))
}

/// `text` with every secret value this process knows replaced by `<redacted>`.
pub fn scrub(text: &str) -> String {
    let known = known().lock().unwrap_or_else(|e| e.into_inner());
    known.iter().fold(text.to_owned(), |out, secret| {
        out.replace(secret.as_str(), "<redacted>")
    })
}

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value, and remembers it for [`scrub`].
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        // Very short values would scrub ordinary words; they are still never printed here.
        if value.len() >= 4 {
            let mut known = known().lock().unwrap_or_else(|e| e.into_inner());
            if !known.contains(&value) {
                known.push(value.clone());
            }
        }
        Self(value)
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads the secret `name` from `env` (the process environment in production): the variable
/// itself, or the file named by `<name>_FILE`. Setting both is an error, as is a file that cannot
/// be read or is empty; the error names the variable and the path, never the value.
pub fn from_env(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, String> {
    let file_var = format!("{name}_FILE");
    match (env(name), env(&file_var)) {
        (Some(_), Some(_)) => Err(format!("{name} and {file_var} are both set; set one")),
        (Some(value), None) if value.is_empty() => Err(format!("{name} is set but empty")),
        (Some(value), None) => Ok(Some(Secret::new(value))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{file_var}: cannot read `{path}`: {e}"))?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            if value.is_empty() {
                return Err(format!("{file_var}: `{path}` is empty"));
            }
            Ok(Some(Secret::new(value)))
        }
        (None, None) => Ok(None),
    }
}

/// The process environment, as [`from_env`] takes it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A URL without user and password, for records and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
            }
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

/// An environment of the given pairs, for tests of code that reads secrets.
#[cfg(test)]
pub(crate) fn fake_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        fake_env(pairs)
    }

    #[test]
    fn a_secret_comes_from_the_variable_or_its_file_and_is_never_printed() {
        let value = from_env("X_PASSWORD", &env(&[("X_PASSWORD", "hunter2")]))
            .unwrap()
            .unwrap();
        assert_eq!(value.expose(), "hunter2");
        assert_eq!(format!("{value:?}"), "<redacted>");
        assert!(!format!("{:?}", Some(&value)).contains("hunter2"));

        let path = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::write(&path, "from-a-file\n").unwrap();
        let path_text = path.display().to_string();
        let value = from_env("X_PASSWORD", &env(&[("X_PASSWORD_FILE", &path_text)]))
            .unwrap()
            .unwrap();
        assert_eq!(value.expose(), "from-a-file");
        std::fs::remove_file(&path).unwrap();

        assert_eq!(from_env("X_PASSWORD", &env(&[])).unwrap(), None);
    }

    #[test]
    fn text_from_elsewhere_is_scrubbed_of_known_secrets() {
        let secret = Secret::new("scrub-me-4711");
        let echoed = format!("property sasl.password {} not supported", secret.expose());
        assert_eq!(
            scrub(&echoed),
            "property sasl.password <redacted> not supported"
        );
        assert_eq!(scrub("nothing to hide"), "nothing to hide");
    }

    #[test]
    fn errors_name_the_variable_and_never_the_value() {
        let both = from_env(
            "X_PASSWORD",
            &env(&[("X_PASSWORD", "hunter2"), ("X_PASSWORD_FILE", "/p")]),
        )
        .unwrap_err();
        assert!(both.contains("X_PASSWORD and X_PASSWORD_FILE are both set"));
        assert!(!both.contains("hunter2"));
        let missing =
            from_env("X_PASSWORD", &env(&[("X_PASSWORD_FILE", "/no/such/file")])).unwrap_err();
        assert!(missing.starts_with("X_PASSWORD_FILE: cannot read `/no/such/file`"));
        let empty = from_env("X_PASSWORD", &env(&[("X_PASSWORD", "")])).unwrap_err();
        assert_eq!(empty, "X_PASSWORD is set but empty");
    }

    #[test]
    fn credentials_never_reach_a_record() {
        assert_eq!(
            redact_url("https://elastic:s3cret@es.example:9200/"),
            "https://es.example:9200/"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9200"),
            "http://127.0.0.1:9200/"
        );
        assert!(!redact_url("not a url with s3cret").contains("s3cret"));
    }
}
