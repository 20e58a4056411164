//! What the fuzz case sends, as proptest generates it: keys of any bytes (under the case's
//! prefix, or the empty key), TTLs, lease ids and revisions from the whole `i64` range, values
//! sized around the backend's limit, keep-alive batches of a few ids or at the batch limit.
//! Lease ids and revisions may also be picked relative to what the sequence has seen, so that
//! calls meet each other's leases and history.

use crate::contract::backend::{Capabilities, Time};
use proptest::collection::vec;
use proptest::prelude::*;

/// A single key.
#[derive(Clone, Debug)]
pub(super) enum Key {
    /// The empty key: bad input, refused.
    Empty,
    /// These bytes (NUL, 0xff, anything) after the case's prefix.
    Under(Vec<u8>),
}

/// A value to put.
#[derive(Clone, Debug)]
pub(super) enum Value {
    /// These bytes.
    Bytes(Vec<u8>),
    /// As long as makes key plus value `limit + delta` bytes (built when sent, so a shrunk
    /// input stays readable).
    AroundLimit(i64),
}

/// A lease id.
#[derive(Clone, Debug)]
pub(super) enum LeaseRef {
    /// The `i % n`-th lease granted so far (the number `i` itself while none was).
    Granted(usize),
    /// This number.
    Raw(i64),
}

/// The ids of a keep-alive batch.
#[derive(Clone, Debug)]
pub(super) enum Batch {
    /// These leases, in this order.
    Of(Vec<LeaseRef>),
    /// These leases over and over, `MAX_KEEP_ALIVE_BATCH` ids in all: the largest batch the
    /// contract takes (built when sent, so a shrunk input stays readable).
    Full(Vec<LeaseRef>),
    /// The same, one id past the limit: refused whole.
    Oversized(Vec<LeaseRef>),
}

/// A revision.
#[derive(Clone, Debug)]
pub(super) enum RevRef {
    /// The current revision plus this.
    Near(i64),
    /// This number.
    Raw(i64),
}

/// One call of the public API, or (virtual time only) a clock advance.
#[derive(Clone, Debug)]
pub(super) enum Call {
    Grant {
        ttl: i64,
        id: Option<i64>,
    },
    KeepAlive(LeaseRef),
    KeepAliveMany(Batch),
    Revoke(LeaseRef),
    TimeToLive(LeaseRef),
    Leases,
    Put {
        key: Key,
        value: Value,
        lease: Option<LeaseRef>,
        prev_kv: bool,
    },
    Get(Key),
    /// A prefix read; the prefix is always under the case's own, never the whole keyspace.
    List {
        prefix: Vec<u8>,
        at: Option<RevRef>,
    },
    Delete(Key),
    DeletePrefix(Vec<u8>),
    Compact(RevRef),
    Watch {
        prefix: Vec<u8>,
        from: Option<RevRef>,
        prev_kv: bool,
    },
    /// Milliseconds of virtual time.
    Advance(u64),
}

/// Bytes to append to the case's prefix: mostly short paths over a small alphabet (so that
/// calls meet each other's keys), sometimes any bytes.
fn relative() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(b'/'), Just(0u8), Just(0xffu8)],
            0..5
        ),
        1 => vec(any::<u8>(), 0..40),
    ]
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        7 => relative().prop_map(Key::Under),
        1 => Just(Key::Empty),
    ]
}

/// Mostly small values; on real time big ones are rarer, since each is a megabyte on the wire.
fn value(caps: &Capabilities) -> impl Strategy<Value = Value> {
    let small = if caps.time == Time::Virtual { 8 } else { 30 };
    prop_oneof![
        small => vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        1 => (-16i64..=4).prop_map(Value::AroundLimit),
        1 => (1i64..4096).prop_map(Value::AroundLimit),
    ]
}

/// Extremes and ordinary numbers alike, the TTL limit on both sides included.
fn number(caps: &Capabilities) -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => -3i64..12,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(caps.max_ttl),
        1 => Just(caps.max_ttl.saturating_add(1)),
        1 => any::<i64>(),
    ]
}

/// A TTL. On real time, ones under a minute (zero and below too, which are granted the
/// minimum) are raised past a minute: a lease expiring mid-sequence would look like a failed
/// call changing the store.
fn ttl(caps: &Capabilities) -> impl Strategy<Value = i64> {
    let real = caps.time == Time::Real;
    number(caps).prop_map(move |ttl| {
        if real && ttl < 60 {
            60 + ttl.rem_euclid(60)
        } else {
            ttl
        }
    })
}

fn lease_ref(caps: &Capabilities) -> impl Strategy<Value = LeaseRef> {
    prop_oneof![
        3 => any::<usize>().prop_map(LeaseRef::Granted),
        1 => number(caps).prop_map(LeaseRef::Raw),
    ]
}

/// Mostly a few leases (none too), each as a single keep-alive picks it; now and then a batch
/// at the limit or one past it, made of a few leases repeated so that it meets live ones.
fn batch(caps: &Capabilities) -> impl Strategy<Value = Batch> {
    prop_oneof![
        10 => vec(lease_ref(caps), 0..6).prop_map(Batch::Of),
        1 => vec(lease_ref(caps), 1..4).prop_map(Batch::Full),
        2 => vec(lease_ref(caps), 1..4).prop_map(Batch::Oversized),
    ]
}

fn rev_ref(caps: &Capabilities) -> impl Strategy<Value = RevRef> {
    prop_oneof![
        3 => (-4i64..3).prop_map(RevRef::Near),
        1 => number(caps).prop_map(RevRef::Raw),
    ]
}

/// One call, weighted towards puts.
fn call(caps: &Capabilities) -> BoxedStrategy<Call> {
    let lease = lease_ref(caps).boxed();
    let rev = rev_ref(caps).boxed();
    let calls = prop_oneof![
        2 => (ttl(caps), proptest::option::weighted(0.2, number(caps)))
            .prop_map(|(ttl, id)| Call::Grant { ttl, id }),
        1 => lease.clone().prop_map(Call::KeepAlive),
        1 => batch(caps).prop_map(Call::KeepAliveMany),
        1 => lease.clone().prop_map(Call::Revoke),
        1 => lease.clone().prop_map(Call::TimeToLive),
        1 => Just(Call::Leases),
        4 => (key(), value(caps), proptest::option::of(lease), any::<bool>())
            .prop_map(|(key, value, lease, prev_kv)| Call::Put { key, value, lease, prev_kv }),
        1 => key().prop_map(Call::Get),
        1 => (relative(), proptest::option::of(rev.clone()))
            .prop_map(|(prefix, at)| Call::List { prefix, at }),
        1 => key().prop_map(Call::Delete),
        1 => relative().prop_map(Call::DeletePrefix),
        1 => rev.clone().prop_map(Call::Compact),
        1 => (relative(), proptest::option::of(rev), any::<bool>())
            .prop_map(|(prefix, from, prev_kv)| Call::Watch { prefix, from, prev_kv }),
    ];
    if caps.time == Time::Virtual {
        let advance = (0u64..4_000).prop_map(Call::Advance);
        prop_oneof![14 => calls, 1 => advance].boxed()
    } else {
        calls.boxed()
    }
}

/// A sequence of calls: shorter on real time, where every call is a round trip.
pub(super) fn calls(caps: &Capabilities) -> BoxedStrategy<Vec<Call>> {
    let longest = if caps.time == Time::Virtual { 40 } else { 24 };
    vec(call(caps), 1..longest).boxed()
}
