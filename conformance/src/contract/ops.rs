//! The operations generated sequences are made of, and their proptest strategies.
//!
//! Operations name keys, leases and revisions by selectors that are resolved against the
//! model when they run (the 2nd lease granted so far, a revision between the base and now), so
//! a sequence means the same on every backend and still means something after shrinking.

use crate::contract::backend::{Capabilities, Time};
use proptest::prelude::*;

/// The keys a sequence writes, relative to its prefix.
pub const KEYS: [&str; 6] = ["a/0", "a/1", "a/2", "b/0", "b/1", "c"];

/// The prefixes a sequence lists, deletes and watches, relative to its prefix ("" is all of it).
pub const PREFIXES: [&str; 4] = ["", "a/", "b/", "a/1"];

/// The small values a sequence writes.
pub const VALUES: [&str; 4] = ["", "v1", "v2", "xyz"];

/// Which key an operation touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySel {
    /// `KEYS[i % KEYS.len()]` under the sequence's prefix.
    Key(u8),
    /// The empty key (bad input: rejected, nothing written).
    Empty,
}

/// Which value a put writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueSel {
    /// `VALUES[i % VALUES.len()]`.
    Small(u8),
    /// A value that makes key plus value one byte over the backend's limit.
    Oversized,
}

/// Which lease an operation names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseSel {
    /// No lease (for a put: detach the key).
    None,
    /// The `i % n`-th lease granted so far in the sequence, live or not (an unknown lease when
    /// none was granted yet).
    Granted(u8),
    /// A lease id no backend issued.
    Unknown,
}

/// A revision picked relative to the model: `i % (current - base + 2)` above the sequence's
/// first revision, so from the base (possibly compacted) up to one future revision. A watch's
/// start reads it differently: when `i % 4 == 0`, `2 + (i / 4) % 16` above the current
/// revision (a start ahead), else `(i / 4) % (current - base + 2)` above the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevSel(pub u16);

/// One generated operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `put`.
    Put {
        /// The key.
        key: KeySel,
        /// The value.
        value: ValueSel,
        /// The lease to attach.
        lease: LeaseSel,
        /// Ask for the previous value.
        prev_kv: bool,
    },
    /// `get`.
    Get {
        /// The key.
        key: KeySel,
    },
    /// `list`, now or at a past revision.
    List {
        /// Index into [`PREFIXES`].
        prefix: u8,
        /// Read at this revision instead of now.
        at: Option<RevSel>,
    },
    /// `delete`.
    Delete {
        /// The key.
        key: KeySel,
    },
    /// `delete_prefix`.
    DeletePrefix {
        /// Index into [`PREFIXES`].
        prefix: u8,
    },
    /// `lease_grant`.
    Grant {
        /// The TTL asked, in seconds (may be bad input).
        ttl: i64,
    },
    /// `lease_keep_alive`.
    KeepAlive {
        /// The lease.
        lease: LeaseSel,
    },
    /// `lease_keep_alive_many`: a few leases, possibly repeated or unknown, renewed in one call.
    KeepAliveMany {
        /// The leases, in the order sent ([`LeaseSel::None`] sends an unknown lease).
        leases: Vec<LeaseSel>,
    },
    /// `lease_revoke`.
    Revoke {
        /// The lease.
        lease: LeaseSel,
    },
    /// `lease_time_to_live`.
    TimeToLive {
        /// The lease.
        lease: LeaseSel,
    },
    /// `watch`, read at the end of the sequence against the model's history.
    Watch {
        /// Index into [`PREFIXES`].
        prefix: u8,
        /// The start revision (see [`RevSel`] for how a watch reads it).
        start: RevSel,
        /// Ask for previous values.
        prev_kv: bool,
    },
    /// `compact` at a revision between the last compaction and now (skipped when there is
    /// none).
    Compact {
        /// The revision.
        at: RevSel,
    },
    /// Move virtual time (only generated for [`Time::Virtual`] backends).
    Advance {
        /// How far, in milliseconds.
        millis: u64,
    },
}

fn key_sel() -> impl Strategy<Value = KeySel> {
    prop_oneof![
        20 => (0..KEYS.len() as u8).prop_map(KeySel::Key),
        1 => Just(KeySel::Empty),
    ]
}

fn value_sel() -> impl Strategy<Value = ValueSel> {
    prop_oneof![
        20 => (0..VALUES.len() as u8).prop_map(ValueSel::Small),
        1 => Just(ValueSel::Oversized),
    ]
}

fn lease_sel() -> impl Strategy<Value = LeaseSel> {
    prop_oneof![
        3 => Just(LeaseSel::None),
        8 => (0..8u8).prop_map(LeaseSel::Granted),
        1 => Just(LeaseSel::Unknown),
    ]
}

/// A keep-alive batch: up to four leases, mostly granted ones (so that several live leases
/// share a batch), now and then an unknown one; the same lease may come twice.
fn batch_sel() -> impl Strategy<Value = Vec<LeaseSel>> {
    let lease = prop_oneof![
        8 => (0..8u8).prop_map(LeaseSel::Granted),
        1 => Just(LeaseSel::Unknown),
    ];
    proptest::collection::vec(lease, 0..=4)
}

fn prefix_sel() -> impl Strategy<Value = u8> {
    0..PREFIXES.len() as u8
}

fn rev_sel() -> impl Strategy<Value = RevSel> {
    any::<u16>().prop_map(RevSel)
}

/// TTLs to ask for: too large ones, ones below the minimum (zero and below included, which are
/// granted the minimum), ordinary ones and the extremes. On real time every granted TTL is long
/// enough not to expire while a sequence runs, so none below the minimum is asked.
fn ttl(caps: &Capabilities) -> BoxedStrategy<i64> {
    let (min, max) = (caps.min_ttl, caps.max_ttl);
    let bad = prop_oneof![Just(max.saturating_add(1)), Just(i64::MAX)];
    let not_positive = prop_oneof![Just(0i64), Just(-1), Just(-7), Just(i64::MIN)];
    match caps.time {
        Time::Virtual => prop_oneof![
            1 => bad,
            1 => not_positive,
            2 => Just(1i64),
            3 => Just(min),
            8 => 1..=12i64,
            1 => Just(max),
        ]
        .boxed(),
        Time::Real => prop_oneof![
            2 => bad,
            8 => prop_oneof![Just(120i64), Just(300), Just(3600)],
            1 => Just(max),
        ]
        .boxed(),
    }
}

fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(1_000u64),
        Just(1_999),
        Just(2_000),
        Just(3_000),
        Just(5_000),
        0..12_000u64,
    ]
}

/// One operation, weighted towards writes and watches.
pub fn op(caps: &Capabilities) -> BoxedStrategy<Op> {
    let put = (key_sel(), value_sel(), lease_sel(), any::<bool>()).prop_map(
        |(key, value, lease, prev_kv)| Op::Put {
            key,
            value,
            lease,
            prev_kv,
        },
    );
    let common = prop_oneof![
        12 => put,
        2 => key_sel().prop_map(|key| Op::Get { key }),
        3 => (prefix_sel(), proptest::option::of(rev_sel()))
            .prop_map(|(prefix, at)| Op::List { prefix, at }),
        4 => key_sel().prop_map(|key| Op::Delete { key }),
        2 => prefix_sel().prop_map(|prefix| Op::DeletePrefix { prefix }),
        5 => ttl(caps).prop_map(|ttl| Op::Grant { ttl }),
        3 => lease_sel().prop_map(|lease| Op::KeepAlive { lease }),
        2 => batch_sel().prop_map(|leases| Op::KeepAliveMany { leases }),
        3 => lease_sel().prop_map(|lease| Op::Revoke { lease }),
        2 => lease_sel().prop_map(|lease| Op::TimeToLive { lease }),
        3 => (prefix_sel(), rev_sel(), any::<bool>())
            .prop_map(|(prefix, start, prev_kv)| Op::Watch { prefix, start, prev_kv }),
        1 => rev_sel().prop_map(|at| Op::Compact { at }),
    ];
    match caps.time {
        Time::Virtual => prop_oneof![
            10 => common,
            1 => advance().prop_map(|millis| Op::Advance { millis }),
        ]
        .boxed(),
        Time::Real => common.boxed(),
    }
}

/// A sequence of 1 to 40 operations for a backend with these capabilities.
pub fn ops(caps: &Capabilities) -> BoxedStrategy<Vec<Op>> {
    proptest::collection::vec(op(caps), 1..=40).boxed()
}

/// The value a [`ValueSel`] writes, for a key of `key_len` bytes.
pub(crate) fn value_bytes(sel: ValueSel, key_len: usize, caps: &Capabilities) -> Vec<u8> {
    match sel {
        ValueSel::Small(i) => VALUES[usize::from(i) % VALUES.len()].as_bytes().to_vec(),
        ValueSel::Oversized => {
            vec![
                b'x';
                caps.max_value_bytes
                    .saturating_sub(key_len)
                    .saturating_add(1)
            ]
        }
    }
}
