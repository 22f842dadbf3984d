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

#[tokio::test]
async fn a_job_sees_the_event_its_own_group_appended() {
    let dir = tempfile::tempdir().unwrap();
    let store = test_store(dir.path());
    let id = "c-cache-2";
    store
        .commit(move |tx| registry::append(tx, "pseudonym", &recorded(id)))
        .await
        .unwrap();
    // Cached at the tree's generation after that commit …
    assert!(registry::state(&store, id)
        .unwrap()
        .unwrap()
        .withdrawn
        .is_none());
    // … which the committed tree still has while this job appends: the job must read
    // its own write, not the cached state.
    let in_job = store
        .commit(move |tx| {
            registry::append(tx, "pseudonym", &withdrawn(id, "2026-06-01 09:00"))?;
            registry::state_in(tx, id)
        })
        .await
        .unwrap()
        .unwrap();
    assert!(in_job.withdrawn.is_some());
    assert!(registry::state(&store, id)
        .unwrap()
        .unwrap()
        .withdrawn
        .is_some());
    store.close();
}

#[tokio::test]
async fn two_stores_with_the_same_consent_id_do_not_share_a_state() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (test_store(a_dir.path()), test_store(b_dir.path()));
    let id = "c-cache-3";
    for (store, events) in [
        (&a, vec![recorded(id)]),
        (&b, vec![recorded(id), withdrawn(id, "2026-06-01 09:00")]),
    ] {
        for event in events {
            store
                .commit(move |tx| registry::append(tx, "pseudonym", &event))
                .await
                .unwrap();
        }
    }
    // Both stores have written their events tree equally often: only the store tells
    // the cached states apart.
    for _ in 0..2 {
        assert!(registry::state(&a, id)
            .unwrap()
            .unwrap()
            .withdrawn
            .is_none());
        assert!(registry::state(&b, id)
            .unwrap()
            .unwrap()
            .withdrawn
            .is_some());
    }
    a.close();
    b.close();
}

#[tokio::test]
async fn a_state_with_one_more_event_is_the_fold_of_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = test_store(dir.path());
    // An update from the peer that overtook the mirror (no established state yet), and a
    // consent already mirrored: each with a mirror appended.
    let cases = [
        vec![update(ConsentStatus::Withdrawn, "2026-03-03 08:00")],
        vec![mirrored(ConsentStatus::Active)],
    ];
    for stored in cases {
        let id = "c-1";
        let removed = store
            .commit(move |tx| registry::remove(tx, id, "pseudonym"))
            .await
            .unwrap();
        assert!(removed <= 1);
        let to_store = stored.clone();
        store
            .commit(move |tx| {
                for e in &to_store {
                    registry::append(tx, "pseudonym", e)?;
                }
                Ok::<_, crate::store::StoreError>(())
            })
            .await
            .unwrap();
        let extra = mirrored(ConsentStatus::Active);
        let mut all = stored.clone();
        all.push(extra.clone());
        let expected = ConsentState::from_events(&all);
        let got = registry::state_with(&store, id, &extra).unwrap();
        assert!(expected.is_some());
        assert_eq!(got, expected, "stored {stored:?}");
    }
    store.close();
}
