//! Registering an instance and keeping it registered, whatever happens to its lease.
//!
//! [`Registration::start`] grants a lease, puts the instance under its key with that lease and
//! returns; the process's [`Registrar`] then keeps the lease alive every TTL/3 and heals:
//!
//! - the lease is lost when a keep-alive answers "not found" or no keep-alive has succeeded for
//!   a whole TTL; the registrar then grants a *new* lease (a dead lease id is never used again)
//!   and puts the instance again, retrying for ever with jittered exponential backoff;
//! - the registrar watches each registered service's prefix: a key deleted or overwritten while
//!   its lease lives is put back as soon as the watch shows it (no read per keep-alive round);
//! - re-registration writes the latest metadata and status given to the handle, not the ones
//!   it started with (Curator's CURATOR-181).
//!
//! # Errors that end a registration
//!
//! Retryable errors heal for ever: unavailable, timeouts, a lease not found, a watch cancelled,
//! any other backend error. An error no retry can fix ends the registration instead: the
//! registry refused the request itself with `PermissionDenied` (the client's role does not
//! cover the key: an etcd RBAC role for another prefix, or a permission taken away),
//! `NotSupported`, `InvalidArgument` or `TooLarge`. The registration then takes
//! [`RegistrationState::Failed`], with the error as [`RegistrationStatus::last_error`] and as
//! what [`Registration::wait_registered`] returns (and what [`Registration::start`] returns when
//! it happens on the first registration); its lease is revoked, or on a shared lease its key
//! deleted, where the registry lets that be done. A refused *change* of metadata or status
//! (`InvalidArgument`, `TooLarge`) is the exception: the value is refused, the call returns the
//! error, and the registration goes on with the value before.
//!
//! # An owned task
//!
//! The registrar's task is owned by its handles: if it ends for any reason other than its
//! registrations all stopping (a panic, even one inside a backend's call, or its runtime
//! shutting down), every registration on it takes [`RegistrationState::Failed`] at once, with
//! [`Error::TaskFailed`](crate::Error::TaskFailed) as its last error, and every wait returns it.
//!
//! # One scheduler per process
//!
//! Every registration of a process on one registry goes through one [`Registrar`]: one task,
//! one timer per instant at which leases are due, not one task and timer per registration.
//! Inside, small state machines whose transitions take an event and the time and return the
//! registry calls to make (lease slots, members, key watches), and a thin driver that makes the
//! calls and feeds every answer back through the same transition, however fast and from
//! whichever backend it came.
//! [`Registration::start`] uses a default registrar per registry (per `Arc` pointer), created on
//! first use and gone when its last registration is; [`Registrar::new`] makes one with other
//! options, e.g. [`RegistrarOptions::shared_lease`]: every registration on one lease, one
//! keep-alive per TTL/3 for all of them (as etcd's `concurrency.Session` does). Each registered
//! service's keys are watched through a [`watcher`](mod@crate::watcher), whose stall detection
//! catches a silent watch: the re-list that follows shows a key deleted meanwhile, and it is
//! put back.
//!
//! # Readiness and draining
//!
//! [`Registration::start_when_ready`] returns at once and puts the instance only once the app's
//! readiness future completes: an instance that is not ready is never visible.
//! [`Registration::shutdown`] drains: it writes the instance with [`Status::Draining`](crate::Status::Draining) (pickers
//! stop choosing it), waits a grace period and until its own watch has seen the change, then
//! revokes the lease. [`Registration::set_status`] changes the status at any time.
//!
//! # Keep the handle
//!
//! Dropping a [`Registration`] deregisters (revokes the lease) at once: `let _ =
//! Registration::start(..)` registers nothing for long. Keep the handle for as long as the
//! instance should stay registered.
//!
//! # How long recovery takes
//!
//! While the registry is unreachable the lease is declared lost one TTL after the last
//! keep-alive that succeeded, and re-registration retries after waits that grow from
//! `backoff.initial` up to `backoff.max`. A registration is back at most
//! `backoff.max + request_timeout` after the registry is reachable again (plus the grant and put
//! themselves): the wait it is in when the registry comes back is at most `backoff.max`, and an
//! attempt sent just before may hang for up to `request_timeout`. With the default options
//! (backoff 500 ms doubling to 30 s, request timeout 5 s) that is **35 s**; on the simulator,
//! where a call to an unreachable registry fails at once, 30 s. An outage shorter than the TTL
//! loses nothing: the next keep-alive round (at most TTL/3 later) renews the lease.

mod calls;
mod commands;
mod driver;
mod handle;
mod key_watches;
mod lease_clock;
mod leases;
mod machines;
mod members;
mod options;
mod registrar;
mod roster;
mod status;
mod timers;

pub use handle::Registration;
pub use options::{RegistrarOptions, RegistrationOptions};
pub use registrar::Registrar;
pub use status::{RegistrationState, RegistrationStatus, RegistrationStatusReader};
