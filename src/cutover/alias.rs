//! Aliases: read who holds one, plan a swap or a restore, and apply the plan as one atomic
//! `_aliases` call.
//!
//! Planning is pure, so the rules are unit-tested; only [`read`] and [`apply`] talk to a cluster.
//! Every `remove` in a plan carries `must_exist`, so a plan made from a state that someone else
//! changed in the meantime fails as a whole instead of half applying.

use std::collections::BTreeMap;

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::es;

/// Which indices hold an alias, with each holder's alias properties (filter, routing,
/// `is_write_index`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasState {
    /// The alias.
    pub alias: String,
    /// Index name → the alias's properties on it.
    pub holders: BTreeMap<String, Value>,
}

impl AliasState {
    /// The holders as a short list, for messages: `a, b` or `(none)`.
    pub fn describe(&self) -> String {
        if self.holders.is_empty() {
            "(none)".into()
        } else {
            self.holders.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// Reads which indices hold `alias`. An alias nobody holds is an empty state, not an error.
pub async fn read(client: &Elasticsearch, alias: &str) -> anyhow::Result<AliasState> {
    let (status, reply) =
        es::request(client, Method::Get, &format!("/_alias/{alias}"), None).await?;
    let mut holders = BTreeMap::new();
    match status {
        404 => {}
        200..=299 => {
            let Some(indices) = reply.as_object() else {
                anyhow::bail!(
                    "`GET /_alias/{alias}` answered with something other than an object: {reply}"
                );
            };
            for (index, entry) in indices {
                if let Some(props) = entry["aliases"].get(alias) {
                    holders.insert(index.clone(), props.clone());
                }
            }
        }
        _ => anyhow::bail!("reading alias `{alias}` failed with HTTP {status}: {reply}"),
    }
    Ok(AliasState {
        alias: alias.to_owned(),
        holders,
    })
}

/// Resolves an index or alias name to the one concrete index behind it.
pub async fn resolve_index(client: &Elasticsearch, name: &str) -> anyhow::Result<String> {
    let state = read(client, name).await?;
    match state.holders.len() {
        1 => return Ok(state.holders.into_keys().next().unwrap_or_default()),
        0 => {}
        _ => anyhow::bail!(
            "`{name}` is an alias of several indices ({}); name one index",
            state.describe()
        ),
    }
    let (status, _) = es::request(client, Method::Head, &format!("/{name}"), None).await?;
    anyhow::ensure!(status == 200, "there is no index or alias named `{name}`");
    Ok(name.to_owned())
}

/// The actions that make `to` the only holder of the alias. The alias keeps its properties
/// (those of its first holder). Empty when `to` already is the only holder.
pub fn plan_swap(current: &AliasState, to: &str) -> Vec<Value> {
    let props = current
        .holders
        .get(to)
        .or_else(|| current.holders.values().next())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let target = AliasState {
        alias: current.alias.clone(),
        holders: BTreeMap::from([(to.to_owned(), props)]),
    };
    plan_restore(current, &target)
}

/// The actions that turn `current` into exactly `target`: removes from holders that should not
/// hold the alias (or hold it with other properties), adds where it is missing or differs.
pub fn plan_restore(current: &AliasState, target: &AliasState) -> Vec<Value> {
    let alias = &current.alias;
    let mut actions = Vec::new();
    for (index, props) in &current.holders {
        if target.holders.get(index) != Some(props) {
            actions.push(json!({"remove": {"index": index, "alias": alias, "must_exist": true}}));
        }
    }
    for (index, props) in &target.holders {
        if current.holders.get(index) != Some(props) {
            let mut add = json!({"index": index, "alias": alias});
            if let (Some(add), Some(props)) = (add.as_object_mut(), props.as_object()) {
                for (k, v) in props {
                    add.insert(k.clone(), v.clone());
                }
            }
            actions.push(json!({ "add": add }));
        }
    }
    actions
}

/// Applies the actions as one `_aliases` call: all of them or none.
pub async fn apply(client: &Elasticsearch, actions: &[Value]) -> anyhow::Result<()> {
    if actions.is_empty() {
        return Ok(());
    }
    let body = json!({ "actions": actions });
    let (status, reply) = es::request(client, Method::Post, "/_aliases", Some(&body)).await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "the `_aliases` call failed with HTTP {status}, so nothing changed: {reply}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(holders: &[(&str, Value)]) -> AliasState {
        AliasState {
            alias: "tags".into(),
            holders: holders
                .iter()
                .map(|(i, p)| ((*i).to_owned(), p.clone()))
                .collect(),
        }
    }

    #[test]
    fn a_swap_moves_the_alias_and_keeps_its_properties() {
        let current = state(&[("tags-v1", json!({"is_write_index": true}))]);
        assert_eq!(
            plan_swap(&current, "tags-v2-000001"),
            vec![
                json!({"remove": {"index": "tags-v1", "alias": "tags", "must_exist": true}}),
                json!({"add": {"index": "tags-v2-000001", "alias": "tags", "is_write_index": true}}),
            ]
        );
    }

    #[test]
    fn a_swap_of_an_unheld_alias_only_adds() {
        assert_eq!(
            plan_swap(&state(&[]), "tags-v2-000001"),
            vec![json!({"add": {"index": "tags-v2-000001", "alias": "tags"}})]
        );
    }

    #[test]
    fn a_swap_to_the_only_holder_changes_nothing() {
        let current = state(&[("tags-v2-000001", json!({}))]);
        assert!(plan_swap(&current, "tags-v2-000001").is_empty());
    }

    #[test]
    fn a_swap_from_several_holders_leaves_one() {
        let current = state(&[("a", json!({})), ("b", json!({})), ("c", json!({}))]);
        let actions = plan_swap(&current, "b");
        assert_eq!(
            actions,
            vec![
                json!({"remove": {"index": "a", "alias": "tags", "must_exist": true}}),
                json!({"remove": {"index": "c", "alias": "tags", "must_exist": true}}),
            ]
        );
    }

    #[test]
    fn a_restore_returns_to_the_exact_previous_state() {
        let before = state(&[
            ("a", json!({"filter": {"term": {"x": 1}}})),
            ("b", json!({})),
        ]);
        let after = state(&[("c", json!({}))]);
        assert_eq!(
            plan_restore(&after, &before),
            vec![
                json!({"remove": {"index": "c", "alias": "tags", "must_exist": true}}),
                json!({"add": {"index": "a", "alias": "tags", "filter": {"term": {"x": 1}}}}),
                json!({"add": {"index": "b", "alias": "tags"}}),
            ]
        );
        assert!(plan_restore(&before, &before).is_empty());
        // Restoring "nobody held it" removes the alias.
        assert_eq!(
            plan_restore(&after, &state(&[])),
            vec![json!({"remove": {"index": "c", "alias": "tags", "must_exist": true}})]
        );
    }

    #[test]
    fn changed_properties_are_replaced_in_the_same_call() {
        let current = state(&[("a", json!({}))]);
        let target = state(&[("a", json!({"is_write_index": true}))]);
        assert_eq!(
            plan_restore(&current, &target),
            vec![
                json!({"remove": {"index": "a", "alias": "tags", "must_exist": true}}),
                json!({"add": {"index": "a", "alias": "tags", "is_write_index": true}}),
            ]
        );
    }
}
