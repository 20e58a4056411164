//! The picking scenario: a picker over a live cache follows it as instances leave.

use super::ctx::ServiceCtx;
use crate::failure::{ensure, ensure_eq, Check};
use registry_service::{Picker, PickerOptions, Strategy};
use std::collections::BTreeSet;

/// The ids of `picks` picks.
fn picked(picker: &Picker, picks: usize) -> Vec<Option<String>> {
    (0..picks)
        .map(|_| picker.pick().map(|i| i.id.clone()))
        .collect()
}

/// A round-robin picker over a discovery cache picks every instance, stops picking one as soon
/// as the cache removes it, and picks nothing once none is left.
pub(crate) async fn picker_follows_the_cache(cx: &mut ServiceCtx<'_>) -> Check {
    let app = cx.client("app").await;
    let cache = cx.client("cache").await;
    let n0 = cx.register(&app, ServiceCtx::instance("n0")).await?;
    let n1 = cx.register(&app, ServiceCtx::instance("n1")).await?;
    let discovery = cx.discover(&cache).await?;
    ensure_eq!(discovery.len(), 2, "cached instances");
    let picker = Picker::new(discovery.clone(), PickerOptions::new(Strategy::RoundRobin));
    let ids: BTreeSet<_> = picked(&picker, 4).into_iter().collect();
    ensure_eq!(
        ids,
        BTreeSet::from([Some("n0".to_owned()), Some("n1".to_owned())]),
        "ids picked from two instances"
    );

    n1.deregister().await.map_err(|e| e.to_string())?;
    cx.eventually(cx.allowance(), "n1 removed from the cache", || async {
        ensure_eq!(discovery.len(), 1, "cached instances");
        Ok(())
    })
    .await?;
    let ids = picked(&picker, 10);
    ensure!(
        ids.iter().all(|id| id.as_deref() == Some("n0")),
        "picks after n1 left: {ids:?}"
    );

    n0.deregister().await.map_err(|e| e.to_string())?;
    cx.eventually(cx.allowance(), "n0 removed from the cache", || async {
        ensure!(discovery.is_empty(), "still cached");
        Ok(())
    })
    .await?;
    ensure_eq!(picked(&picker, 1), vec![None], "a pick with no instance");
    Ok(())
}
