//! etcd's Go naming layout (`go.etcd.io/etcd/client/v3/naming`), both ways: publishing our
//! instances so Go gRPC clients on the etcd resolver (`etcd:///<target>`) find them, and reading
//! endpoints that Go services registered, so Rust discovery can list them beside its own.
//!
//! The layout is one key per endpoint, `<target>/<addr>`, whose value is the JSON of Go's
//! `internal.Update`, exactly as `endpoints.Manager.AddEndpoint` writes it:
//!
//! ```json
//! {"Op":0,"Addr":"127.0.0.1:50051","Metadata":null}
//! ```
//!
//! # Publishing: `Metadata` is null unless asked otherwise
//!
//! Go's resolver hands `Metadata` to grpc-go as `resolver.Address.Metadata`, an `interface{}`
//! that grpc-go compares with `==` whenever the resolver sends an update. A JSON object decodes
//! to a Go map, and comparing maps panics (`comparing uncomparable type map[string]interface
//! {}`): a Go client on grpc-go's default balancer, pick_first, crashes at the first update
//! after it connected, e.g. when one node leaves. So [`GoMetadata::None`], the default, writes
//! `null`, which every balancer accepts. [`GoMetadata::String`] carries the instance metadata
//! as a JSON *string* (a Go `string`, comparable, so safe); [`GoMetadata::Object`] writes an
//! object and is only for fleets whose Go clients all use a balancer that never compares
//! addresses' metadata (round_robin does not, in grpc-go 1.64).
//!
//! [`publish`] keeps the key next to the instance's own, attached to the same lease, so it lives
//! and dies with the registration: revoked on deregistration, expired after a crash, put again
//! whenever the registration comes back with a new lease.
//!
//! # Reading
//!
//! [`GoTarget::decode`] turns one key-value under `<target>/` into a [`ServiceInstance`]
//! (service: the target's last segment; id: the key's last segment, which is the address under
//! the standard layout; address: `Addr`; metadata: from `Metadata`, see [`metadata_from_go`]),
//! and [`GoTarget::instance_id`] names the instance a key (also a deleted one) stands for, so a
//! discovery cache can apply watch events; [`GoTarget::parse`] says why a value was skipped.
//! [`list`] reads a whole target once, and [`merge`] makes one list of a mixed fleet, where Rust
//! nodes publishing in both layouts appear once.

use registry_api::{InvalidArgument, KeyValue, LeaseId, ListOptions, PutOptions, Registry, Result};
use registry_service::instance::{validate_instance_id, validate_service};
use registry_service::{
    Discovery, InstanceLayout, InstanceSource, Metadata, Registration, RegistrationState,
    ServiceInstance,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `Op` of a stored endpoint as Go writes it: `Add` (0). Go's readers ignore `Op` and treat every
/// stored value as present; a deletion is the key's deletion.
pub const GO_OP_ADD: u8 = 0;

/// Go's stored endpoint value (`internal.Update`), field names, order and all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoEndpoint {
    /// The operation; [`GO_OP_ADD`] in everything Go writes. Missing is read as 0, as Go does.
    #[serde(rename = "Op", default)]
    pub op: u8,
    /// The address gRPC dials, `host:port`.
    #[serde(rename = "Addr")]
    pub addr: String,
    /// Anything; Go's resolver passes it on as the address's metadata. Keep it `null` or a
    /// string for Go's pick_first clients (see the module docs).
    #[serde(rename = "Metadata", default)]
    pub metadata: Value,
}

impl GoEndpoint {
    /// The endpoint Go's `AddEndpoint` writes for `Endpoint{Addr: addr}`: `Op` 0, `Metadata`
    /// null.
    ///
    /// ```
    /// use registry_examples::go_naming::GoEndpoint;
    ///
    /// let json = GoEndpoint::new("127.0.0.1:50051").to_json();
    /// assert_eq!(json, br#"{"Op":0,"Addr":"127.0.0.1:50051","Metadata":null}"#);
    /// ```
    pub fn new(addr: impl Into<String>) -> Self {
        GoEndpoint {
            op: GO_OP_ADD,
            addr: addr.into(),
            metadata: Value::Null,
        }
    }

    /// The endpoint carrying `metadata` as `mode` says.
    pub fn with_metadata(mut self, metadata: &Metadata, mode: GoMetadata) -> Self {
        self.metadata = mode.encode(metadata);
        self
    }

    /// The stored JSON value.
    pub fn to_json(&self) -> Vec<u8> {
        // A u8, a string and a JSON value always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// How instance metadata travels in `Metadata` of the Go layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GoMetadata {
    /// `null`: what Go services themselves write by default; safe with every grpc-go balancer.
    #[default]
    None,
    /// The instance metadata's JSON as a JSON string (`"{\"version\":...}"`); a Go `string`,
    /// so as safe as `null`. Go code reads it with `json.Unmarshal([]byte(md.(string)), ...)`.
    String,
    /// The instance metadata as a JSON object. **Crashes Go clients on grpc-go's default
    /// balancer (pick_first)** at the first resolver update once connected: grpc-go compares
    /// metadata with `==`, and a decoded object is a map. Only for fleets whose Go clients all
    /// use round_robin or another balancer that never compares it.
    Object,
}

impl GoMetadata {
    /// The `Metadata` value for `metadata`.
    pub fn encode(self, metadata: &Metadata) -> Value {
        match self {
            GoMetadata::None => Value::Null,
            GoMetadata::String => Value::String(
                // Strings, a number and a string map always serialize.
                serde_json::to_string(metadata).unwrap_or_default(),
            ),
            GoMetadata::Object => serde_json::to_value(metadata).unwrap_or(Value::Null),
        }
    }
}

impl fmt::Display for GoMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GoMetadata::None => "none",
            GoMetadata::String => "string",
            GoMetadata::Object => "object",
        })
    }
}

impl FromStr for GoMetadata {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "none" => Ok(GoMetadata::None),
            "string" => Ok(GoMetadata::String),
            "object" => Ok(GoMetadata::Object),
            other => Err(format!(
                "unknown Go metadata mode {other:?}: expected none, string or object"
            )),
        }
    }
}

/// A Go naming target, e.g. `hello` or `prod/hello`: endpoints live at `<target>/<addr>`.
///
/// ```
/// use registry_examples::go_naming::GoTarget;
///
/// let target = GoTarget::new("hello")?;
/// let value = br#"{"Op":0,"Addr":"10.0.0.1:80","Metadata":{"zone":"eu-1"}}"#;
/// let instance = target.decode(b"hello/10.0.0.1:80", value).expect("an endpoint");
/// assert_eq!((instance.service.as_str(), instance.id.as_str()), ("hello", "10.0.0.1:80"));
/// assert_eq!(instance.address, "10.0.0.1:80");
/// assert_eq!(instance.metadata.zone.as_deref(), Some("eu-1"));
/// // A deleted key has no value; its id is enough to drop the instance.
/// assert_eq!(target.instance_id(b"hello/10.0.0.1:80"), Some("10.0.0.1:80"));
/// assert!(target.decode(b"hello/10.0.0.2:80", b"not json").is_none());
/// # Ok::<(), registry_api::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GoTarget {
    target: String,
    service: String,
}

impl GoTarget {
    /// A target, non-empty, neither starting nor ending with `/`; its last segment is the
    /// service name its instances get.
    pub fn new(target: impl Into<String>) -> Result<Self> {
        let target = target.into();
        if target.is_empty() || target.starts_with('/') || target.ends_with('/') {
            return Err(InvalidArgument::Config(format!(
                "Go naming target {target:?} must be non-empty and not start or end with '/'"
            ))
            .into());
        }
        let service = target.rsplit('/').next().unwrap_or(&target).to_owned();
        if validate_service(&service).is_err() {
            return Err(InvalidArgument::Config(format!(
                "Go naming target {target:?} does not end in a usable service name"
            ))
            .into());
        }
        Ok(GoTarget { target, service })
    }

    /// The target as given.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The service name of its instances: the target's last segment.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// `<target>/`: the prefix to list or watch.
    pub fn prefix(&self) -> String {
        format!("{}/", self.target)
    }

    /// `<target>/<addr>`: the key Go's endpoints manager is conventionally given.
    pub fn key(&self, addr: &str) -> Result<String> {
        endpoint_key(&self.target, addr)
    }

    /// The instance id `key` stands for: its part after `<target>/`, when that is a valid id
    /// (non-empty, no `/`, UTF-8). Keys deeper down belong to other targets and give `None`.
    /// Works on deleted keys too, whose value is gone.
    pub fn instance_id<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let rest = key
            .strip_prefix(self.target.as_bytes())?
            .strip_prefix(b"/")?;
        let id = std::str::from_utf8(rest).ok()?;
        validate_instance_id(id).ok()?;
        Some(id)
    }

    /// The instance a stored key-value stands for, or `None` when the key is not directly under
    /// this target or the value is not an endpoint (not JSON, not an object, `Addr` missing,
    /// empty or not a string). Go's readers skip such values too.
    pub fn decode(&self, key: &[u8], value: &[u8]) -> Option<ServiceInstance> {
        self.parse(key, value).ok()
    }

    /// [`decode`](Self::decode), saying why a key-value is not an instance, for a reader that
    /// counts or logs what it skips.
    pub fn parse(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> std::result::Result<ServiceInstance, NotAnEndpoint> {
        let id = self.instance_id(key).ok_or(NotAnEndpoint::Key)?;
        let endpoint: GoEndpoint =
            serde_json::from_slice(value).map_err(|e| NotAnEndpoint::Value(e.to_string()))?;
        if endpoint.addr.is_empty() {
            return Err(NotAnEndpoint::EmptyAddr);
        }
        Ok(
            ServiceInstance::new(self.service.clone(), id, endpoint.addr)
                .with_metadata(metadata_from_go(&endpoint.metadata)),
        )
    }
}

/// A Go naming target as a source of instances for [`Discovery::with_layout`]: the gateway and
/// the CLI follow Go-registered endpoints through the same self-healing cache as their own.
///
/// [`Discovery::with_layout`]: registry_service::Discovery::with_layout
impl InstanceLayout for GoTarget {
    fn service(&self) -> &str {
        &self.service
    }

    fn prefix(&self) -> String {
        GoTarget::prefix(self)
    }

    fn instance_id(&self, key: &[u8]) -> Option<String> {
        GoTarget::instance_id(self, key).map(str::to_owned)
    }

    fn decode(&self, _id: &str, kv: &KeyValue) -> std::result::Result<ServiceInstance, String> {
        self.parse(&kv.key, &kv.value).map_err(|e| e.to_string())
    }
}

/// A picker's source over a mixed fleet: our own instances of a service and the endpoints of a
/// Go naming target, as one list ([`merge`]: a node published in both layouts counts once).
#[derive(Clone, Debug)]
pub struct MixedFleet {
    ours: Discovery,
    go: Discovery,
}

impl MixedFleet {
    /// Our instances from `ours`, Go's from `go` (a discovery with a [`GoTarget`] layout).
    pub fn new(ours: Discovery, go: Discovery) -> Self {
        MixedFleet { ours, go }
    }
}

impl InstanceSource for MixedFleet {
    fn instances(&self) -> Arc<[ServiceInstance]> {
        merge(&self.ours.snapshot(), &self.go.snapshot()).into()
    }
}

/// Why a key-value under a Go naming target is not an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotAnEndpoint {
    /// The key is not `<target>/<id>` with a valid id (deeper keys belong to other targets).
    Key,
    /// The value is not Go's endpoint JSON; the parser's message.
    Value(String),
    /// `Addr` is empty: nothing to dial.
    EmptyAddr,
}

impl fmt::Display for NotAnEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAnEndpoint::Key => f.write_str("the key is not <target>/<id>"),
            NotAnEndpoint::Value(why) => write!(f, "the value is not a Go endpoint: {why}"),
            NotAnEndpoint::EmptyAddr => f.write_str("the endpoint's Addr is empty"),
        }
    }
}

impl std::error::Error for NotAnEndpoint {}

/// Instance metadata from a Go endpoint's `Metadata`:
///
/// - an object whose values are all strings (what Go services put in a `map[string]string`):
///   `version` and `zone` fill those fields, `weight` the weight when it parses as a `u32`,
///   every other pair becomes a label;
/// - any other object: read as our own metadata JSON ([`GoMetadata::Object`]), defaults where
///   that fails;
/// - a string holding a JSON object ([`GoMetadata::String`]): that object, as above;
/// - anything else (`null`, numbers, arrays, other strings): default metadata.
pub fn metadata_from_go(value: &Value) -> Metadata {
    match value {
        Value::Object(map) => {
            let strings: Option<BTreeMap<&str, &str>> = map
                .iter()
                .map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
                .collect();
            match strings {
                Some(strings) => {
                    let mut metadata = Metadata::default();
                    for (key, value) in strings {
                        match key {
                            "version" => metadata.version = Some(value.to_owned()),
                            "zone" => metadata.zone = Some(value.to_owned()),
                            "weight" => {
                                if let Ok(weight) = value.parse() {
                                    metadata.weight = weight;
                                }
                            }
                            _ => {
                                metadata.labels.insert(key.to_owned(), value.to_owned());
                            }
                        }
                    }
                    metadata
                }
                None => serde_json::from_value(value.clone()).unwrap_or_default(),
            }
        }
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(inner @ Value::Object(_)) => metadata_from_go(&inner),
            _ => Metadata::default(),
        },
        _ => Metadata::default(),
    }
}

/// Every instance under `target`, read once, in key order; values that are not endpoints are
/// skipped. Instances' ids are unique: they are their keys' last segments.
pub async fn list(registry: &dyn Registry, target: &GoTarget) -> Result<Vec<ServiceInstance>> {
    let listed = registry
        .list(target.prefix().as_bytes(), ListOptions::default())
        .await?;
    Ok(listed
        .kvs
        .iter()
        .filter_map(|kv| target.decode(&kv.key, &kv.value))
        .collect())
}

/// One list of a mixed fleet: `ours` (our own layout) and `go` (read with a [`GoTarget`]), in
/// that order, each Go instance dropped when an instance of ours has its address. A Rust node
/// that publishes with [`publish`] is in both layouts; its own entry, with the full metadata and
/// its real id, is the one kept.
pub fn merge(ours: &[ServiceInstance], go: &[ServiceInstance]) -> Vec<ServiceInstance> {
    let addresses: std::collections::HashSet<&str> =
        ours.iter().map(|i| i.address.as_str()).collect();
    ours.iter()
        .chain(
            go.iter()
                .filter(|i| !addresses.contains(i.address.as_str())),
        )
        .cloned()
        .collect()
}

/// The key Go's endpoints manager uses: `<target>/<addr>`. The target must be non-empty and
/// must not end with `/`; the address must be non-empty.
pub fn endpoint_key(target: &str, addr: &str) -> Result<String> {
    if target.is_empty() || target.ends_with('/') {
        return Err(InvalidArgument::Config(format!(
            "Go naming target {target:?} must be non-empty and not end with '/'"
        ))
        .into());
    }
    if addr.is_empty() {
        return Err(InvalidArgument::Config("Go naming address is empty".into()).into());
    }
    Ok(format!("{target}/{addr}"))
}

/// How long to wait before putting the key again after a failed put.
const RETRY: Duration = Duration::from_secs(1);

/// Puts `endpoint` under `<target>/<addr>` with the registration's lease, then keeps it there
/// in a background task (ended by deregistration or by aborting the handle). Fails when the
/// target is malformed, the registration has no lease yet, or the first put fails.
pub async fn publish(
    registry: Arc<dyn Registry>,
    registration: &Registration,
    target: &str,
    endpoint: GoEndpoint,
) -> Result<(String, JoinHandle<()>)> {
    let key = endpoint_key(target, &endpoint.addr)?;
    let value = endpoint.to_json();
    let lease = registration.lease().ok_or_else(|| {
        registry_api::Error::unavailable("the registration has no lease to attach to")
    })?;
    registry
        .put(key.as_bytes(), &value, PutOptions::with_lease(lease))
        .await?;
    let task = tokio::spawn(follow(
        registry,
        registration.subscribe(),
        key.clone(),
        value,
        lease,
    ));
    Ok((key, task))
}

/// Puts the key again each time the registration holds a lease the key is not attached to.
async fn follow(
    registry: Arc<dyn Registry>,
    mut states: watch::Receiver<RegistrationState>,
    key: String,
    value: Vec<u8>,
    mut attached: LeaseId,
) {
    loop {
        let state = states.borrow_and_update().clone();
        match state {
            RegistrationState::Deregistered => return,
            RegistrationState::Registered { lease, .. } if lease != attached => {
                match registry
                    .put(key.as_bytes(), &value, PutOptions::with_lease(lease))
                    .await
                {
                    Ok(_) => attached = lease,
                    Err(e) => {
                        tracing::warn!(key, error = %e, "could not put the Go naming key; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(RETRY) => continue,
                            changed = states.changed() => if changed.is_err() { return },
                        }
                        continue;
                    }
                }
            }
            _ => {}
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_value_is_what_gos_add_endpoint_writes() {
        // Go's endpoints.Manager.AddEndpoint(ctx, key, Endpoint{Addr: addr}) stores exactly this.
        let endpoint = GoEndpoint::new("127.0.0.1:50051");
        assert_eq!(
            String::from_utf8(endpoint.to_json()).unwrap(),
            r#"{"Op":0,"Addr":"127.0.0.1:50051","Metadata":null}"#
        );
        let with_metadata = GoEndpoint::new("a:1")
            .with_metadata(&Metadata::default().with_zone("z"), GoMetadata::default());
        assert_eq!(with_metadata.metadata, Value::Null, "null unless asked");
        assert_eq!(
            endpoint_key("foo/bar/my-service", "1.2.3.4:80").unwrap(),
            "foo/bar/my-service/1.2.3.4:80"
        );
        assert!(endpoint_key("", "a:1").is_err());
        assert!(endpoint_key("svc/", "a:1").is_err());
        assert!(endpoint_key("svc", "").is_err());
    }

    #[test]
    fn metadata_modes_encode_and_read_back() {
        let metadata = Metadata::default()
            .with_version("1.2.0")
            .with_zone("eu-1")
            .with_weight(3)
            .with_label("tier", "web");
        let string = GoMetadata::String.encode(&metadata);
        let Value::String(text) = &string else {
            panic!("a JSON string, got {string}");
        };
        assert!(text.starts_with('{'), "{text}");
        let object = GoMetadata::Object.encode(&metadata);
        assert!(object.is_object(), "{object}");
        assert_eq!(GoMetadata::None.encode(&metadata), Value::Null);

        assert_eq!(metadata_from_go(&string), metadata);
        assert_eq!(metadata_from_go(&object), metadata);
        assert_eq!(metadata_from_go(&Value::Null), Metadata::default());

        for mode in [GoMetadata::None, GoMetadata::String, GoMetadata::Object] {
            assert_eq!(mode.to_string().parse::<GoMetadata>(), Ok(mode));
        }
        assert!("map".parse::<GoMetadata>().is_err());
    }

    #[test]
    fn metadata_written_by_go_as_a_string_map() {
        let go = serde_json::json!({"version": "v2", "zone": "z", "weight": "5", "team": "pay"});
        assert_eq!(
            metadata_from_go(&go),
            Metadata::default()
                .with_version("v2")
                .with_zone("z")
                .with_weight(5)
                .with_label("team", "pay")
        );
        let bad_weight = serde_json::json!({"weight": "heavy"});
        assert_eq!(metadata_from_go(&bad_weight).weight, 1);
        for other in [
            serde_json::json!(7),
            serde_json::json!(["a"]),
            serde_json::json!("not json"),
            serde_json::json!("[1]"),
            serde_json::json!({"labels": 3}),
        ] {
            assert_eq!(metadata_from_go(&other), Metadata::default(), "{other}");
        }
    }

    #[test]
    fn targets_are_checked_and_name_their_service() {
        let target = GoTarget::new("prod/eu/hello").unwrap();
        assert_eq!(target.service(), "hello");
        assert_eq!(target.target(), "prod/eu/hello");
        assert_eq!(target.prefix(), "prod/eu/hello/");
        assert_eq!(
            target.key("1.2.3.4:80").unwrap(),
            "prod/eu/hello/1.2.3.4:80"
        );
        assert_eq!(GoTarget::new("hello").unwrap().service(), "hello");
        for bad in ["", "/", "hello/", "/hello", "a//"] {
            assert!(GoTarget::new(bad).is_err(), "{bad:?}");
        }
        assert!(GoTarget::new("hello").unwrap().key("").is_err());
    }

    #[test]
    fn decodes_what_go_writes_and_skips_the_rest() {
        let target = GoTarget::new("hello").unwrap();
        let go_written = br#"{"Op":0,"Addr":"10.0.0.1:80","Metadata":null}"#;
        assert_eq!(
            target.decode(b"hello/10.0.0.1:80", go_written),
            Some(ServiceInstance::new("hello", "10.0.0.1:80", "10.0.0.1:80"))
        );
        // Go always writes Op, older writers may not; Go reads every stored value as present
        // whatever its Op says, and so do we.
        assert!(target
            .decode(b"hello/x", br#"{"Addr":"10.0.0.2:80"}"#)
            .is_some());
        assert!(target
            .decode(b"hello/x", br#"{"Op":1,"Addr":"10.0.0.2:80"}"#)
            .is_some());
        // The id is the key's last segment, so two keys for one address stay two instances.
        let custom = target
            .decode(
                b"hello/node-7",
                br#"{"Op":0,"Addr":"10.0.0.3:80","Metadata":{"zone":"z"}}"#,
            )
            .unwrap();
        assert_eq!(custom.id, "node-7");
        assert_eq!(custom.address, "10.0.0.3:80");
        assert_eq!(custom.metadata.zone.as_deref(), Some("z"));

        let good = br#"{"Op":0,"Addr":"10.0.0.1:80","Metadata":null}"#;
        for key in [
            &b"hello/"[..],
            b"hello",
            b"hello2/10.0.0.1:80",
            b"hello/deeper/10.0.0.1:80",
            b"other/10.0.0.1:80",
            b"hello/\xff",
        ] {
            assert_eq!(target.decode(key, good), None, "{key:?}");
        }
        for value in [
            &b""[..],
            b"not json",
            b"[]",
            b"null",
            b"{}",
            br#"{"Addr":""}"#,
            br#"{"Addr":7}"#,
            br#"{"Op":"add","Addr":"10.0.0.1:80"}"#,
        ] {
            assert_eq!(target.decode(b"hello/x", value), None, "{value:?}");
        }
        assert_eq!(
            target.instance_id(b"hello/10.0.0.1:80"),
            Some("10.0.0.1:80")
        );
        assert_eq!(target.instance_id(b"hello/a/b"), None);
    }

    #[test]
    fn a_mixed_fleet_is_one_list_with_rust_nodes_once() {
        let ours = [
            ServiceInstance::new("hello", "a", "127.0.0.1:1")
                .with_metadata(Metadata::default().with_zone("z")),
            ServiceInstance::new("hello", "b", "127.0.0.1:2"),
        ];
        let go = [
            // Rust node a, published in Go's layout too.
            ServiceInstance::new("hello", "127.0.0.1:1", "127.0.0.1:1"),
            ServiceInstance::new("hello", "127.0.0.1:9", "127.0.0.1:9"),
        ];
        let merged = merge(&ours, &go);
        let ids: Vec<&str> = merged.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "127.0.0.1:9"]);
        assert_eq!(merged[0], ours[0], "our entry, with its metadata, wins");
        assert_eq!(merge(&[], &go), go);
        assert_eq!(merge(&ours, &[]), ours);
    }

    #[tokio::test(start_paused = true)]
    async fn list_reads_one_target_only() {
        let registry = registry_memory::MemoryRegistry::new();
        let target = GoTarget::new("team/hello").unwrap();
        for (key, value) in [
            (
                "team/hello/10.0.0.1:80",
                r#"{"Op":0,"Addr":"10.0.0.1:80","Metadata":null}"#,
            ),
            (
                "team/hello/10.0.0.2:80",
                r#"{"Op":0,"Addr":"10.0.0.2:80","Metadata":"x"}"#,
            ),
            ("team/hello/broken", "{"),
            (
                "team/hello2/10.0.0.9:80",
                r#"{"Op":0,"Addr":"10.0.0.9:80"}"#,
            ),
            (
                "team/hello/sub/10.0.0.8:80",
                r#"{"Op":0,"Addr":"10.0.0.8:80"}"#,
            ),
        ] {
            registry
                .put(key.as_bytes(), value.as_bytes(), PutOptions::default())
                .await
                .unwrap();
        }
        let listed = list(&registry, &target).await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["10.0.0.1:80", "10.0.0.2:80"]);
        assert!(listed.iter().all(|i| i.service == "hello"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_key_follows_the_registration_lease() {
        use registry_service::{RegistrationOptions, ServiceInstance};
        let registry: Arc<dyn Registry> = Arc::new(registry_memory::MemoryRegistry::new());
        let registration = Registration::start(
            registry.clone(),
            ServiceInstance::new("hello", "a", "127.0.0.1:1"),
            RegistrationOptions::default().ttl(Duration::from_secs(3)),
        )
        .await
        .unwrap();
        let endpoint = GoEndpoint::new("127.0.0.1:1");
        let (key, _task) = publish(registry.clone(), &registration, "hello", endpoint.clone())
            .await
            .unwrap();
        assert_eq!(key, "hello/127.0.0.1:1");
        let kv = registry.get(key.as_bytes()).await.unwrap().kv.expect("put");
        assert_eq!(kv.lease, registration.lease());
        let parsed: GoEndpoint = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(parsed, endpoint);

        // Someone revokes the lease: both keys go; the registration comes back with a new
        // lease, and the Go key follows it.
        let old = registration.lease().unwrap();
        registry.lease_revoke(old).await.unwrap();
        assert!(registry.get(key.as_bytes()).await.unwrap().kv.is_none());
        let mut states = registration.subscribe();
        let fresh = loop {
            if let RegistrationState::Registered { lease, .. } = *states.borrow_and_update() {
                if lease != old {
                    break lease;
                }
            }
            states.changed().await.unwrap();
        };
        let mut attached = None;
        for _ in 0..100 {
            attached = registry
                .get(key.as_bytes())
                .await
                .unwrap()
                .kv
                .and_then(|kv| kv.lease);
            if attached == Some(fresh) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(attached, Some(fresh));

        // Deregistration revokes the lease: the Go key goes with it.
        registration.deregister().await.unwrap();
        assert!(registry.get(key.as_bytes()).await.unwrap().kv.is_none());
    }
}
