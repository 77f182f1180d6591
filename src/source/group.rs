//! Reading and resetting a consumer group's committed offsets.
//!
//! Used by `run --reset-to-earliest`, by the tests and by the lag tooling. These calls block
//! (librdkafka's admin-style requests are synchronous), so async callers wrap them in
//! `spawn_blocking`.
//!
//! Resetting a group's offsets while members are consuming would be silently undone by their
//! next commit, so a reset is refused unless the group is known to be empty. Kafka tells that
//! through DescribeGroups; where the broker cannot answer it (the tansu test broker closes the
//! connection), membership is *unknown* and the reset is refused unless forced.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

/// What is known about a group's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// The broker says the group has no members.
    Empty,
    /// The broker lists this many members.
    Active(usize),
    /// The broker could not say; the reason is kept for the message.
    Unknown(String),
}

/// The rule for resetting offsets: only an empty group, or any group when forced.
pub fn reset_allowed(group: &str, membership: &Membership, force: bool) -> Result<(), String> {
    match membership {
        Membership::Empty => Ok(()),
        _ if force => Ok(()),
        Membership::Active(n) => Err(format!(
            "group `{group}` has {n} active member(s); stop them before resetting its offsets"
        )),
        Membership::Unknown(why) => Err(format!(
            "cannot tell whether group `{group}` has active members ({why}); stop every member and pass --force to reset anyway"
        )),
    }
}

/// Asks the broker for the group's members.
pub fn membership(config: &ClientConfig, group: &str) -> Membership {
    let consumer: BaseConsumer = match config.create() {
        Ok(c) => c,
        Err(e) => return Membership::Unknown(e.to_string()),
    };
    match consumer.fetch_group_list(Some(group), TIMEOUT) {
        Ok(list) => match list.groups().iter().find(|g| g.name() == group) {
            Some(g)
                if g.state().eq_ignore_ascii_case("Empty")
                    || g.state().eq_ignore_ascii_case("Dead") =>
            {
                Membership::Empty
            }
            Some(g) if !g.members().is_empty() => Membership::Active(g.members().len()),
            Some(g) => Membership::Unknown(format!(
                "the broker reports state `{}` with no member list",
                g.state()
            )),
            None => Membership::Empty,
        },
        Err(e) => Membership::Unknown(format!("DescribeGroups failed: {e}")),
    }
}

/// One partition's position, as seen from outside the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPosition {
    /// Partition number.
    pub partition: i32,
    /// Low watermark (first retained offset).
    pub low: i64,
    /// High watermark (next offset to be written).
    pub high: i64,
    /// The group's committed offset, if it has one.
    pub committed: Option<i64>,
}

/// Watermarks and the group's committed offsets for every partition of `topic`.
pub fn positions(
    config: &ClientConfig,
    group: &str,
    topic: &str,
) -> anyhow::Result<Vec<PartitionPosition>> {
    let consumer = offsets_client(config, group)?;
    let partitions = super::topics::partition_ids(&consumer, topic, TIMEOUT)?;
    if partitions.is_empty() {
        anyhow::bail!("topic `{topic}` does not exist or has no partitions");
    }
    let committed = committed(&consumer, topic, &partitions, TIMEOUT)?;
    let mut out = Vec::with_capacity(partitions.len());
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        out.push(PartitionPosition {
            partition: p,
            low,
            high,
            committed: committed.get(&p).copied().flatten(),
        });
    }
    out.sort_by_key(|p| p.partition);
    Ok(out)
}

/// Commits each partition's low watermark as the group's offset, so the next run replays all
/// that the topic retains. Refused while the group may have members, unless `force`.
pub fn reset_to_earliest(
    config: &ClientConfig,
    group: &str,
    topic: &str,
    force: bool,
) -> anyhow::Result<Vec<PartitionPosition>> {
    let membership = membership(&group_config(config, group), group);
    if let Membership::Unknown(why) = &membership {
        tracing::warn!(group, reason = %why, "group membership is unknown");
    }
    reset_allowed(group, &membership, force).map_err(anyhow::Error::msg)?;
    let before = positions(config, group, topic)?;
    let consumer: BaseConsumer = group_config(config, group).create()?;
    let mut list = TopicPartitionList::new();
    for p in &before {
        list.add_partition_offset(topic, p.partition, Offset::Offset(p.low))?;
    }
    consumer.commit(&list, CommitMode::Sync)?;
    Ok(before)
}

/// A client that reads `group`'s committed offsets without joining the group. Keep one for
/// repeated reads: each new client connects and fetches metadata again.
pub fn offsets_client(config: &ClientConfig, group: &str) -> KafkaResult<BaseConsumer> {
    group_config(config, group).create()
}

/// The group's committed offset for each of `partitions` of `topic` (`None` where it has none),
/// read with a client from [`offsets_client`], or with a member of the group.
pub fn committed<C: ConsumerContext, K: Consumer<C>>(
    client: &K,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
    let mut list = TopicPartitionList::new();
    for p in partitions {
        list.add_partition(topic, *p);
    }
    let answer = client.committed_offsets(list, timeout)?;
    Ok(partitions
        .iter()
        .map(|p| {
            let offset = answer
                .find_partition(topic, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            (*p, offset)
        })
        .collect())
}

fn group_config(config: &ClientConfig, group: &str) -> ClientConfig {
    let mut c = config.clone();
    c.set("group.id", group).set("enable.auto.commit", "false");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_group_may_be_reset() {
        assert!(reset_allowed("g", &Membership::Empty, false).is_ok());
    }

    #[test]
    fn an_active_group_is_refused_unless_forced() {
        let err = reset_allowed("g", &Membership::Active(2), false).unwrap_err();
        assert!(err.contains("2 active member(s)"), "{err}");
        assert!(reset_allowed("g", &Membership::Active(2), true).is_ok());
    }

    #[test]
    fn unknown_membership_takes_the_safe_path() {
        let err = reset_allowed(
            "g",
            &Membership::Unknown("DescribeGroups failed".into()),
            false,
        )
        .unwrap_err();
        assert!(err.contains("--force"), "{err}");
        assert!(reset_allowed("g", &Membership::Unknown("x".into()), true).is_ok());
    }
}
