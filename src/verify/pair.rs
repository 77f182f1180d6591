//! One id read on both sides, and what that reading shows. Pure; the first pass and every settle
//! round judge a pair the same way.

use serde_json::Value;

use super::diff::{self, FieldDiff, Ignore};
use crate::transform::legacy;

/// What one reading of an id on both sides shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// Equal after the legacy → new transform, or absent on both sides.
    Equal,
    /// In the legacy index only.
    MissingInNew,
    /// In the new index only.
    OnlyInNew,
    /// On both sides, with these fields differing.
    Differing(Vec<FieldDiff>),
    /// The legacy document has no place in the new schema (why).
    Untransformable(String),
}

/// Compares the legacy and new `_source` of one id (`None`: not there).
pub fn read(legacy: Option<&Value>, new: Option<&Value>, ignore: &Ignore) -> Reading {
    let (legacy, new) = match (legacy, new) {
        (None, None) => return Reading::Equal,
        (Some(_), None) => return Reading::MissingInNew,
        (None, Some(_)) => return Reading::OnlyInNew,
        (Some(l), Some(n)) => (l, n),
    };
    match legacy::to_new(legacy) {
        Err(reason) => Reading::Untransformable(reason),
        Ok(expected) => {
            let fields = diff::diff(&expected, new, ignore);
            if fields.is_empty() {
                Reading::Equal
            } else {
                Reading::Differing(fields)
            }
        }
    }
}

impl Reading {
    /// Whether lag can explain it: everything but equal and untransformable (the legacy
    /// document itself has no place in the new schema, whatever the timing).
    pub fn may_be_lag(&self) -> bool {
        matches!(
            self,
            Self::MissingInNew | Self::OnlyInNew | Self::Differing(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_side_present_or_absent_is_read_as_its_kind() {
        let ignore = Ignore::default();
        let doc = json!({"actions": {"tags": {}}});
        assert_eq!(read(None, None, &ignore), Reading::Equal);
        assert_eq!(read(Some(&doc), None, &ignore), Reading::MissingInNew);
        assert_eq!(read(None, Some(&doc), &ignore), Reading::OnlyInNew);
        assert!(Reading::OnlyInNew.may_be_lag());
        assert!(!Reading::Untransformable("x".into()).may_be_lag());
    }
}
