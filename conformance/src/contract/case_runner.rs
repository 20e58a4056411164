//! Running one named case: the runtime, the lock that serializes cases on a shared server, and
//! the entry points the macro and the suite's own tests call.

use crate::contract::backend::{Backend, Sharing};
use crate::contract::cases::{self, Ctx};
use crate::contract::fuzz;
use crate::contract::generated::Site;
use crate::contract::model_check;
use crate::failure::Failure;
use std::future::Future;
use std::sync::Mutex;
use tokio::runtime::Runtime;

/// Cases on a shared backend take this lock: revision accounting and compaction need the server
/// to themselves.
static SHARED: Mutex<()> = Mutex::new(());

/// The name of every case, in the order the macro stamps them.
pub fn case_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = cases::CASES.iter().map(|(n, _)| *n).collect();
    names.push(fuzz::NAME);
    names.push(model_check::NAME);
    names
}

/// A current-thread runtime with time and I/O, as each generated test builds its own.
pub fn runtime() -> Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        // No runtime means no test can run at all; there is nothing to recover.
        Err(e) => panic!("cannot build a tokio runtime: {e}"),
    }
}

/// Runs case `name` on `backend` inside `rt`. `source_file` (the test file, `file!()`) names
/// the test in the replay command a failing generated case (`model_check`,
/// `public_api_survives_arbitrary_input`) prints.
pub fn run_case<B: Backend>(
    name: &str,
    backend: &B,
    rt: &Runtime,
    source_file: Option<&'static str>,
) -> Result<(), Failure> {
    let site = Site {
        file: source_file,
        module: None,
    };
    run_case_at(name, backend, rt, site)
}

fn run_case_at<B: Backend>(
    name: &str,
    backend: &B,
    rt: &Runtime,
    site: Site,
) -> Result<(), Failure> {
    let _guard = match backend.capabilities().sharing {
        Sharing::Shared => Some(SHARED.lock().unwrap_or_else(|p| p.into_inner())),
        Sharing::Exclusive => None,
    };
    if name == model_check::NAME {
        return model_check::run_at(backend, rt, site, None);
    }
    if name == fuzz::NAME {
        return fuzz::run(backend, rt, site);
    }
    let Some((_, case)) = cases::CASES.iter().find(|(n, _)| *n == name) else {
        return Err(Failure::new(name, "no such case"));
    };
    rt.block_on(async {
        let mut cx = Ctx::start(backend, name).await?;
        let result = case(&mut cx).await;
        cx.cleanup().await;
        result.map_err(|m| Failure::new(name, m))
    })
}

/// What one generated test does: builds a runtime and the backend, runs the case, and panics
/// with the failure (a test's way of failing).
pub fn run_test<B, F, Fut>(name: &str, source_file: &'static str, make: F)
where
    B: Backend,
    F: FnOnce() -> Fut,
    Fut: Future<Output = B>,
{
    let site = Site {
        file: Some(source_file),
        module: None,
    };
    run_stamped(name, site, make);
}

/// What a test stamped by [`conformance_suite!`](crate::conformance_suite) does: as
/// [`run_test`], knowing the module that stamped it, so that a failure's replay command names
/// the test exactly.
#[doc(hidden)]
pub fn __run_stamped<B, F, Fut>(name: &str, file: &'static str, module: &'static str, make: F)
where
    B: Backend,
    F: FnOnce() -> Fut,
    Fut: Future<Output = B>,
{
    let site = Site {
        file: Some(file),
        module: Some(module),
    };
    run_stamped(name, site, make);
}

fn run_stamped<B, F, Fut>(name: &str, site: Site, make: F)
where
    B: Backend,
    F: FnOnce() -> Fut,
    Fut: Future<Output = B>,
{
    let rt = runtime();
    let backend = rt.block_on(make());
    if let Err(failure) = run_case_at(name, &backend, &rt, site) {
        panic!("{failure}");
    }
}
