//! Node priority groups (APISIX `nodes[].priority`): nodes of the highest priority take
//! all traffic; a lower group is used only when every node above it is unacceptable
//! (tried by this request, or unhealthy). Each group has its own picker, so a chash key
//! keeps its node within a group.

use super::{BalancerNode, Picker};

/// What kind of picker each group gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickerKind {
    RoundRobin,
    Chash,
}

#[derive(Debug)]
struct Group {
    picker: Picker,
    /// Upstream node indexes of this group, by position in the group's picker.
    members: Vec<usize>,
}

/// The pickers of one upstream, highest priority first.
#[derive(Debug)]
pub struct PriorityPicker {
    groups: Vec<Group>,
}

impl PriorityPicker {
    /// Groups `nodes` by `priorities[i]` (same length as `nodes`), highest first.
    pub fn new(kind: PickerKind, nodes: &[BalancerNode], priorities: &[i32]) -> PriorityPicker {
        let mut levels: Vec<i32> = priorities.to_vec();
        levels.sort_unstable_by(|a, b| b.cmp(a));
        levels.dedup();
        let groups = levels
            .into_iter()
            .map(|level| {
                let members: Vec<usize> = (0..nodes.len())
                    .filter(|i| priorities.get(*i).copied().unwrap_or(0) == level)
                    .collect();
                let group_nodes: Vec<BalancerNode> = members.iter().map(|i| nodes[*i]).collect();
                let picker = match kind {
                    PickerKind::RoundRobin => Picker::round_robin(&group_nodes),
                    PickerKind::Chash => Picker::chash(&group_nodes),
                };
                Group { picker, members }
            })
            .collect();
        PriorityPicker { groups }
    }

    /// Picks an upstream node index: the first group with an acceptable node wins.
    pub fn pick(&self, key: &[u8], accept: impl Fn(usize) -> bool) -> Option<usize> {
        self.groups.iter().find_map(|g| {
            g.picker
                .pick(key, |local| accept(g.members[local]))
                .map(|local| g.members[local])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<BalancerNode> {
        (0..n)
            .map(|i| BalancerNode {
                addr: format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                weight: 1,
            })
            .collect()
    }

    #[test]
    fn higher_priority_first_lower_as_backup() {
        let p = PriorityPicker::new(PickerKind::RoundRobin, &nodes(3), &[0, 10, 0]);
        for _ in 0..5 {
            assert_eq!(p.pick(b"", |_| true), Some(1));
        }
        let backups: Vec<usize> = (0..4).map(|_| p.pick(b"", |i| i != 1).unwrap()).collect();
        assert_eq!(backups, vec![0, 2, 0, 2]);
        assert_eq!(p.pick(b"", |_| false), None);
    }

    #[test]
    fn chash_within_a_group_is_stable() {
        let p = PriorityPicker::new(PickerKind::Chash, &nodes(4), &[1, 1, 0, 0]);
        let first = p.pick(b"user-7", |_| true).unwrap();
        assert!(first < 2);
        assert_eq!(p.pick(b"user-7", |_| true), Some(first));
        let backup = p.pick(b"user-7", |i| i >= 2).unwrap();
        assert!(backup >= 2);
    }
}
