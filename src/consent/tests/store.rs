//! Derived state through a real store: the registry's cache of folded states never serves
//! a state from before a withdrawal.

use super::*;

fn test_store(dir: &std::path::Path) -> crate::store::Store {
    let (signer, _) = crate::dev::pki::test_credentials();
    let key = std::sync::Arc::new(crate::seal::DataKey::random().unwrap());
    crate::store::Store::open(dir, std::sync::Arc::new(signer), key).unwrap()
}

#[tokio::test]
async fn a_state_read_before_a_withdrawal_is_not_served_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = test_store(dir.path());
    let id = "c-cache-1";
    let append = |event: ConsentEvent| {
        let store = store.clone();
        async move {
            store
                .commit(move |tx| registry::append(tx, "pseudonym", &event))
                .await
                .unwrap()
        }
    };
    append(recorded(id)).await;
    // Read twice, so that the second read can come from the cache.
    for _ in 0..2 {
        let s = registry::state(&store, id).unwrap().unwrap();
        assert!(s.withdrawn.is_none());
    }
    append(withdrawn(id, "2026-06-01 09:00")).await;
    let s = registry::state(&store, id).unwrap().unwrap();
    assert!(s.withdrawn.is_some(), "the withdrawal must be seen");
    // Inside a job, the same: the withdrawal is in the events this job reads.
    let in_job = store
        .commit(move |tx| registry::state_in(tx, id))
        .await
        .unwrap()
        .unwrap();
    assert!(in_job.withdrawn.is_some());
    store.close();
}
