//! The overlay: every key written since the last checkpoint, with its newest value, in memory.
//!
//! Writes land here and in the journal (`journal.rs`), not in sled; a checkpoint moves them
//! into sled and then drops from here what it moved, unless a newer write of the key came in
//! meanwhile. Reads look here first and fall back to sled, so they see every write the moment
//! it lands; a scan merges this over sled's range.

use std::collections::BTreeMap;
use std::ops::Bound;

use ipam_core::Kind;
use sled::IVec;

use crate::journal::Change;

/// The newest value of one key (`None`: removed) and the sequence number of the write.
#[derive(Debug, Clone)]
struct Slot {
    value: Option<IVec>,
    seq: u64,
}

/// What a checkpoint moves into sled: each key's newest value and the write it came from.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) changes: Vec<(Change, u64)>,
}

/// The keys written since the last checkpoint, per tree.
#[derive(Debug)]
pub(crate) struct Overlay {
    trees: Vec<BTreeMap<Vec<u8>, Slot>>,
}

/// The position of `kind` in `Kind::ALL`: where its tree is, in the overlay and in the store.
pub(crate) fn index(kind: Kind) -> usize {
    Kind::ALL
        .iter()
        .position(|&k| k == kind)
        .expect("Kind::ALL lists every kind")
}

impl Overlay {
    pub(crate) fn new() -> Self {
        Overlay {
            trees: Kind::ALL.iter().map(|_| BTreeMap::new()).collect(),
        }
    }

    /// Records the changes of the write `seq`.
    pub(crate) fn apply(&mut self, seq: u64, changes: &[Change]) {
        for c in changes {
            self.trees[index(c.kind)].insert(
                c.key.clone(),
                Slot {
                    value: c.value.clone(),
                    seq,
                },
            );
        }
    }

    /// The newest value of `key`: `Some(None)` when it was removed, `None` when the overlay does
    /// not know the key (sled has its value).
    pub(crate) fn get(&self, kind: Kind, key: &[u8]) -> Option<Option<IVec>> {
        self.trees[index(kind)].get(key).map(|s| s.value.clone())
    }

    /// The keys from `from` on (all with an empty `from`) that start with `prefix`, with their
    /// newest values (`None`: removed).
    pub(crate) fn scan(
        &self,
        kind: Kind,
        prefix: &[u8],
        from: &[u8],
    ) -> Vec<(Vec<u8>, Option<IVec>)> {
        let start = if from > prefix { from } else { prefix };
        self.trees[index(kind)]
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, s)| (k.clone(), s.value.clone()))
            .collect()
    }

    /// Every key with its newest value, for a checkpoint.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let changes = Kind::ALL
            .iter()
            .zip(&self.trees)
            .flat_map(|(&kind, tree)| {
                tree.iter().map(move |(k, s)| {
                    (
                        Change {
                            kind,
                            key: k.clone(),
                            value: s.value.clone(),
                        },
                        s.seq,
                    )
                })
            })
            .collect();
        Snapshot { changes }
    }

    /// Forgets the keys of `snapshot` that no write changed since it was taken: sled has them.
    pub(crate) fn prune(&mut self, snapshot: &Snapshot) {
        for (c, seq) in &snapshot.changes {
            let tree = &mut self.trees[index(c.kind)];
            if tree.get(&c.key).is_some_and(|s| s.seq == *seq) {
                tree.remove(&c.key);
            }
        }
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.trees.iter().map(BTreeMap::len).sum()
    }
}

/// Merges the overlay's view of a range (`over`, sorted, `None` for removed) over sled's
/// (`under`, sorted): the newest value of every key, removed ones left out, in key order.
pub(crate) fn merge(
    under: Vec<(IVec, IVec)>,
    over: Vec<(Vec<u8>, Option<IVec>)>,
) -> Vec<(IVec, IVec)> {
    if over.is_empty() {
        return under;
    }
    let mut merged = Vec::with_capacity(under.len() + over.len());
    let mut under = under.into_iter().peekable();
    for (k, v) in over {
        // sled's keys before this one are not in the overlay: they stand.
        while let Some(entry) = under.next_if(|(u, _)| u.as_ref() < k.as_slice()) {
            merged.push(entry);
        }
        // sled's value of this very key is older.
        under.next_if(|(u, _)| u.as_ref() == k.as_slice());
        if let Some(v) = v {
            merged.push((IVec::from(k), v));
        }
    }
    merged.extend(under);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Change {
        Change::put(
            Kind::SpiderIPPool,
            key.as_bytes().to_vec(),
            value.as_bytes(),
        )
    }

    #[test]
    fn reads_see_the_newest_write_and_scans_merge_over_sled() {
        let mut o = Overlay::new();
        o.apply(1, &[put("a", "1"), put("b\0x", "2")]);
        o.apply(
            2,
            &[
                put("a", "3"),
                Change::remove(Kind::SpiderIPPool, b"b\0y".to_vec()),
            ],
        );
        assert_eq!(o.get(Kind::SpiderIPPool, b"a"), Some(Some(IVec::from("3"))));
        assert_eq!(o.get(Kind::SpiderIPPool, b"b\0y"), Some(None));
        assert_eq!(o.get(Kind::SpiderIPPool, b"c"), None);
        assert_eq!(o.get(Kind::SpiderEndpoint, b"a"), None);

        let sled = vec![
            (IVec::from("b\0w"), IVec::from("s")),
            (IVec::from("b\0y"), IVec::from("s")),
            (IVec::from("c"), IVec::from("s")),
        ];
        let prefix = o.scan(Kind::SpiderIPPool, b"b\0", b"");
        let merged = merge(sled[..2].to_vec(), prefix);
        let keys: Vec<&[u8]> = merged.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, [&b"b\0w"[..], b"b\0x"]);
        let all = merge(sled, o.scan(Kind::SpiderIPPool, b"", b"b"));
        let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, [&b"b\0w"[..], b"b\0x", b"c"]);
    }

    proptest::proptest! {
        /// The linear merge is the map model: sled's entries, then each overlay entry set or
        /// removed.
        #[test]
        fn merge_is_the_overlay_applied_to_sleds_entries(
            under in proptest::collection::btree_map(0u8..40, 0u8..4, 0..20),
            over in proptest::collection::btree_map(0u8..40, proptest::option::of(4u8..8), 0..20),
        ) {
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> =
                under.iter().map(|(k, v)| (vec![*k], vec![*v])).collect();
            for (k, v) in &over {
                match v {
                    Some(v) => model.insert(vec![*k], vec![*v]),
                    None => model.remove(&vec![*k]),
                };
            }
            let merged = merge(
                under.iter().map(|(k, v)| (IVec::from(&[*k][..]), IVec::from(&[*v][..]))).collect(),
                over.iter().map(|(k, v)| (vec![*k], v.map(|v| IVec::from(&[v][..])))).collect(),
            );
            let merged: Vec<(Vec<u8>, Vec<u8>)> =
                merged.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            proptest::prop_assert_eq!(merged, model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_prune_keeps_keys_written_after_the_snapshot() {
        let mut o = Overlay::new();
        o.apply(1, &[put("a", "1"), put("b", "1")]);
        let snapshot = o.snapshot();
        o.apply(2, &[put("b", "2")]);
        o.prune(&snapshot);
        assert_eq!(o.len(), 1);
        assert_eq!(o.get(Kind::SpiderIPPool, b"b"), Some(Some(IVec::from("2"))));
    }
}
