//! The whole service-layer suite on a real etcd, through the ready-made backend an app uses
//! (`testing::backend()`): one named test per scenario, all on one private server started for
//! this test binary, scenarios one at a time (real-time scenarios take turns), each under a
//! fresh key prefix. A partition cuts one client's link; an outage kills the server and
//! restarts it on the same data dir and ports. A lease cannot be made to expire on demand on a
//! real server, so that capability is declared absent.

registry_conformance::service_suite!(registry_etcd::testing::backend);
