//! One conformance suite for every object store backend: file://, moto (SigV4 enforced) and
//! Ceph RGW, all real.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{unique, S3Server};
use litestream::ltx::Header;
use litestream::runtime::block_on;
use litestream::storage::{
    ConditionalSupport, PutCondition, ReplicaUrl, S3Config, StorageError, Store,
};

fn ltx_body(min: u64, max: u64, ts: i64) -> (Header, Bytes) {
    let header = Header::new(512, 1, min, max, ts);
    let mut enc = litestream::ltx::Encoder::new(Vec::new(), header).unwrap();
    if min == 1 {
        enc.encode_page(1, &[min as u8; 512]).unwrap();
    }
    (header, Bytes::from(enc.finish(0).unwrap().0))
}

async fn basic_objects(store: &Store) {
    let etag = store
        .put(
            "obj/a.bin",
            Bytes::from_static(b"0123456789"),
            PutCondition::Always,
            None,
        )
        .await
        .unwrap();
    let meta = store.head("obj/a.bin").await.unwrap();
    assert_eq!(meta.size, 10);
    assert_eq!(meta.etag, etag, "PUT and HEAD disagree on the ETag");
    assert_eq!(
        &store.get("obj/a.bin", None).await.unwrap()[..],
        b"0123456789"
    );
    assert_eq!(
        &store.get("obj/a.bin", Some((3, Some(4)))).await.unwrap()[..],
        b"3456"
    );
    assert_eq!(
        &store.get("obj/a.bin", Some((7, None))).await.unwrap()[..],
        b"789"
    );
    assert_eq!(
        &store.get("obj/a.bin", Some((0, Some(0)))).await.unwrap()[..],
        b""
    );

    let missing = store.get("obj/missing.bin", None).await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(missing.to_string().contains("obj/missing.bin"), "{missing}");
    assert!(store
        .head("obj/missing.bin")
        .await
        .unwrap_err()
        .is_not_found());

    // Unconditional delete is idempotent.
    store.delete("obj/a.bin", None).await.unwrap();
    store.delete("obj/a.bin", None).await.unwrap();
    assert!(store
        .get("obj/a.bin", None)
        .await
        .unwrap_err()
        .is_not_found());
}

async fn ltx_listing(store: &Store) {
    for (level, min, max) in [(0u8, 1, 1), (0, 2, 2), (0, 3, 3), (1, 1, 3), (9, 1, 3)] {
        let (h, body) = ltx_body(min, max, 1_795_677_104_824 + min as i64);
        store
            .put_ltx(level, &h, body, PutCondition::IfNoneMatch)
            .await
            .unwrap();
    }
    // Names that are not LTX files are skipped, as Litestream skips them.
    let junk = store
        .ltx_key(0, 1, 1)
        .replace("0000000000000001-0000000000000001.ltx", "README.txt");
    store
        .put(&junk, Bytes::from_static(b"x"), PutCondition::Always, None)
        .await
        .unwrap();

    let l0 = store.list_ltx(0, 0).await.unwrap();
    assert_eq!(
        l0.iter()
            .map(|f| (f.min_txid, f.max_txid))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2), (3, 3)]
    );
    assert!(l0.iter().all(|f| f.level == 0 && f.size > 100));
    let from2 = store.list_ltx(0, 2).await.unwrap();
    assert_eq!(
        from2.iter().map(|f| f.min_txid).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(store.list_ltx(0, 4).await.unwrap().is_empty());
    assert_eq!(store.list_ltx(9, 0).await.unwrap().len(), 1);
    assert!(store.list_ltx(5, 0).await.unwrap().is_empty());

    let got = store.get_ltx(&l0[1], None).await.unwrap();
    assert_eq!(got, ltx_body(2, 2, 1_795_677_104_826).1);
    // The LTX timestamp is kept as Litestream keeps it (mtime / litestream-timestamp).
    let meta = store.head(&store.ltx_key(0, 2, 2)).await.unwrap();
    assert_eq!(meta.timestamp_ms, Some(1_795_677_104_826));
}

async fn pagination(store: &Arc<Store>) {
    let n = 1050u64;
    let mut keys = Vec::new();
    for chunk in (1..=n).collect::<Vec<_>>().chunks(50) {
        let futs = chunk.iter().map(|&txid| {
            let store = store.clone();
            async move {
                let (h, body) = ltx_body(txid + 1, txid + 1, txid as i64);
                store
                    .put_ltx(3, &h, body, PutCondition::Always)
                    .await
                    .unwrap();
                store.ltx_key(3, txid + 1, txid + 1)
            }
        });
        keys.extend(join_all(futs).await);
    }
    let all = store.list_ltx(3, 0).await.unwrap();
    assert_eq!(all.len() as u64, n, "listing past 1000 keys");
    assert!(all.windows(2).all(|w| w[0].min_txid < w[1].min_txid));
    assert_eq!(store.list_ltx(3, 1001).await.unwrap().len(), 51);
    store.delete_many(&keys).await.unwrap();
    assert!(store.list_ltx(3, 0).await.unwrap().is_empty());
}

/// Runs futures concurrently on the runtime and collects their results in order.
async fn join_all<T: Send + 'static>(
    futs: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}

/// `replace_is_atomic`: whether concurrent `If-Match` writers on one version are serialized.
/// Neither moto 5.2.5 nor Ceph RGW 16 does: both were seen letting two racers win. Their
/// `If-None-Match` creation is atomic, so that is what safety may rely on.
async fn conditional_writes(
    store: &Arc<Store>,
    expect: &ConditionalSupport,
    replace_is_atomic: bool,
) {
    let probe = store.probe_conditional_writes().await.unwrap();
    assert_eq!(&probe, expect, "probe result");
    assert!(probe.is_sufficient());

    let key = "lease/lock.json";
    let e1 = store
        .put(
            key,
            Bytes::from_static(b"{\"g\":1}"),
            PutCondition::IfNoneMatch,
            None,
        )
        .await
        .unwrap();
    let again = store
        .put(
            key,
            Bytes::from_static(b"{\"g\":9}"),
            PutCondition::IfNoneMatch,
            None,
        )
        .await
        .unwrap_err();
    assert!(again.is_precondition_failed(), "{again}");
    assert!(again.to_string().contains("lease/lock.json"), "{again}");
    assert_eq!(&store.get(key, None).await.unwrap()[..], b"{\"g\":1}");

    let e2 = store
        .put(
            key,
            Bytes::from_static(b"{\"g\":2}"),
            PutCondition::IfMatch(e1.clone()),
            None,
        )
        .await
        .unwrap();
    let stale = store
        .put(
            key,
            Bytes::from_static(b"{\"g\":3}"),
            PutCondition::IfMatch(e1.clone()),
            None,
        )
        .await
        .unwrap_err();
    assert!(stale.is_precondition_failed(), "{stale}");
    assert_eq!(&store.get(key, None).await.unwrap()[..], b"{\"g\":2}");

    if probe.conditional_delete {
        let err = store.delete(key, Some(&e1)).await.unwrap_err();
        assert!(err.is_precondition_failed(), "{err}");
        store.delete(key, Some(&e2)).await.unwrap();
        assert!(store.head(key).await.unwrap_err().is_not_found());
    } else {
        store.delete(key, None).await.unwrap();
    }

    // Racing creators: exactly one wins.
    let race_key = "race/one.json";
    let creators = race(store, race_key, 12, |_| PutCondition::IfNoneMatch).await;
    assert_eq!(creators, 1, "racing If-None-Match creators");

    // Racing replacers on one version: never more than one wins (where replacement is atomic).
    let etag = store.head(race_key).await.unwrap().etag;
    let winners = race(store, race_key, 8, move |_| {
        PutCondition::IfMatch(etag.clone())
    })
    .await;
    if replace_is_atomic {
        assert!(winners <= 1, "racing If-Match replacers: {winners} won");
    }
}

/// `n` writers PUT `key` at once, each with its condition; every loser must see a
/// precondition failure. Returns how many won.
async fn race(
    store: &Arc<Store>,
    key: &'static str,
    n: u8,
    condition: impl Fn(u8) -> PutCondition,
) -> usize {
    let futs = (0..n).map(|i| {
        let store = store.clone();
        let condition = condition(i);
        async move {
            store
                .put(key, Bytes::from(vec![i; 8]), condition, None)
                .await
        }
    });
    let results = join_all(futs).await;
    for r in &results {
        if let Err(e) = r {
            assert!(e.is_precondition_failed(), "loser saw {e}");
        }
    }
    results.iter().filter(|r| r.is_ok()).count()
}

fn run_suite(store: Store, expect: ConditionalSupport, replace_is_atomic: bool) {
    let store = Arc::new(store);
    block_on(async {
        basic_objects(&store).await;
        ltx_listing(&store).await;
        pagination(&store).await;
        conditional_writes(&store, &expect, replace_is_atomic).await;
    });
}

#[test]
fn file_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("file://{}", dir.path().display())).unwrap();
    run_suite(
        store,
        ConditionalSupport {
            create: true,
            replace: true,
            unquoted_etag: false,
            conditional_delete: true,
        },
        true,
    );
    // Litestream's file layout.
    assert!(dir
        .path()
        .join("ltx/0/0000000000000001-0000000000000001.ltx")
        .is_file());
    assert!(dir
        .path()
        .join("ltx/9/0000000000000001-0000000000000003.ltx")
        .is_file());
}

#[test]
fn moto_conformance() {
    let server = S3Server::moto();
    let prefix = unique("conformance");
    run_suite(
        server.store(&prefix),
        ConditionalSupport {
            create: true,
            replace: true,
            unquoted_etag: false,
            conditional_delete: true,
        },
        false,
    );
}

#[test]
fn ceph_rgw_conformance() {
    let server = S3Server::ceph();
    let prefix = unique("conformance");
    run_suite(
        server.store(&prefix),
        // RGW 16: If-Match only matches the bare ETag; no conditional DELETE.
        ConditionalSupport {
            create: true,
            replace: true,
            unquoted_etag: true,
            conditional_delete: false,
        },
        false,
    );
}

#[test]
fn s3_key_layout_is_litestreams() {
    let server = S3Server::moto();
    let prefix = unique("layout");
    let store = server.store(&format!("{prefix}/app.db"));
    assert_eq!(
        store.ltx_key(0, 1, 1),
        "0000/0000000000000001-0000000000000001.ltx"
    );
    assert_eq!(
        store.ltx_key(9, 1, 0x1d),
        "0009/0000000000000001-000000000000001d.ltx"
    );
    block_on(async {
        let (h, body) = ltx_body(1, 1, 5);
        store
            .put_ltx(0, &h, body, PutCondition::IfNoneMatch)
            .await
            .unwrap();
        // Seen from the bucket root, the key is <path>/0000/<name>.
        let root = server.store("");
        let meta = root
            .head(&format!(
                "{prefix}/app.db/0000/0000000000000001-0000000000000001.ltx"
            ))
            .await
            .unwrap();
        assert!(meta.size > 0);
    });
}

fn with_cfg(server: &S3Server, prefix: &str, edit: impl FnOnce(&mut S3Config)) -> Store {
    let mut cfg = server.config(prefix);
    edit(&mut cfg);
    Store::from_url(ReplicaUrl::S3(cfg)).unwrap()
}

fn bad_credentials_and_bucket(server: S3Server) {
    let secret = "not-the-right-secret-0123456789";
    let store = with_cfg(&server, "creds", |c| {
        c.secret_access_key = Some(secret.into())
    });
    let err = block_on(store.get("some/key.ltx", None)).unwrap_err();
    assert!(
        matches!(err, StorageError::AccessDenied { .. }),
        "{}: {err}",
        server.name
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&server.bucket) && msg.contains("creds/some/key.ltx"),
        "{msg}"
    );
    assert!(!msg.contains(secret), "the message leaks the secret: {msg}");

    let unknown = with_cfg(&server, "creds", |c| {
        c.access_key_id = Some("AKIAUNKNOWNKEY000000".into())
    });
    assert!(matches!(
        block_on(unknown.put("k", Bytes::from_static(b"x"), PutCondition::Always, None)),
        Err(StorageError::AccessDenied { .. })
    ));

    let missing = with_cfg(&server, "p", |c| {
        c.bucket = "no-such-bucket-litestream".into()
    });
    let err = block_on(missing.list_ltx(0, 0)).unwrap_err();
    assert!(
        matches!(err, StorageError::NoSuchBucket { .. }),
        "{}: {err}",
        server.name
    );
    assert!(
        err.to_string().contains("no-such-bucket-litestream"),
        "{err}"
    );
}

#[test]
fn moto_rejects_bad_credentials_and_missing_bucket_clearly() {
    bad_credentials_and_bucket(S3Server::moto());
}

#[test]
fn ceph_rejects_bad_credentials_and_missing_bucket_clearly() {
    bad_credentials_and_bucket(S3Server::ceph());
}

#[test]
fn unreachable_endpoint_is_a_clear_transport_error() {
    // A closed loopback port: connection refused, retried, then reported.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let store = Store::open(&format!("s3://bkt/p?endpoint=http://127.0.0.1:{port}")).unwrap();
    let err = block_on(store.get("k", None)).unwrap_err();
    assert!(matches!(err, StorageError::Transport { .. }), "{err}");
    assert!(err.to_string().contains("s3://bkt/p/k"), "{err}");
}
