//! Our restore on replicas written by the real Litestream 0.5.17 (the shared test vectors):
//! byte-for-byte what `litestream restore` produced.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{unique, S3Server};
use litestream::restore::{restore_blocking, RestoreOptions, Target};
use litestream::runtime::block_on;
use litestream::storage::PutCondition;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/litestream-0.5.17")
}

/// A copy of the vector file replica (restores must not depend on the original's mtimes).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn restores_litestream_file_replica_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    copy_dir(&testdata().join("file-replica"), &replica);
    let url = format!("file://{}", replica.display());
    for (target, expected) in [
        (Target::Txid(0x1d), "restore-txid-000000000000001d.db"),
        (Target::Txid(0x25), "restore-txid-0000000000000025.db"),
        (Target::Latest, "restore-txid-0000000000000025.db"),
    ] {
        let out = dir.path().join(format!("{target:?}.db"));
        let summary = restore_blocking(&url, &out, target, RestoreOptions::default()).unwrap();
        let want = std::fs::read(testdata().join("expected-db").join(expected)).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == want,
            "{target:?} differs from Litestream's restore"
        );
        assert_eq!(summary.page_size, 4096);
    }
    // Refuses to overwrite unless asked.
    let out = dir.path().join("Latest.db");
    let err = restore_blocking(&url, &out, Target::Latest, RestoreOptions::default()).unwrap_err();
    assert!(err.message().contains("already exists"), "{err}");
    restore_blocking(
        &url,
        &out,
        Target::Latest,
        RestoreOptions { overwrite: true },
    )
    .unwrap();
    // A TXID beyond the replica is a clear error, and leaves nothing behind.
    let out = dir.path().join("future.db");
    let err =
        restore_blocking(&url, &out, Target::Txid(0x99), RestoreOptions::default()).unwrap_err();
    assert!(err.message().contains("0x0000000000000099"), "{err}");
    // Nothing for that TXID in the replica: SQLITE_EMPTY (16), as a host sees it.
    assert_eq!(err.code(), 16, "{err}");
    assert!(!out.exists());
}

#[test]
fn restores_litestream_s3_replica() {
    // The objects Litestream 0.5.17 wrote to S3 (directory replication of a.db and sub/b.db),
    // uploaded as they were to moto.
    let server = S3Server::moto();
    let prefix = unique("vectors");
    let root = server.store(&prefix);
    let objects = testdata().join("s3-objects/bkt");
    let mut keys = Vec::new();
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push((
                    p.strip_prefix(base).unwrap().to_string_lossy().into_owned(),
                    p,
                ));
            }
        }
    }
    walk(&objects, &objects, &mut keys);
    block_on(async {
        for (key, path) in &keys {
            let body = Bytes::from(std::fs::read(path).unwrap());
            root.put(key, body, PutCondition::Always, None)
                .await
                .unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    for db in ["multi/a.db", "multi/sub/b.db"] {
        let url = server.url(&format!("{prefix}/{db}"));
        let ours = dir.path().join(format!("ours-{}", db.replace('/', "_")));
        let creds = [
            ("AWS_ACCESS_KEY_ID", &server.access_key),
            ("AWS_SECRET_ACCESS_KEY", &server.secret_key),
        ];
        let store = server.store(&format!("{prefix}/{db}"));
        block_on(litestream::restore::restore(
            std::sync::Arc::new(store),
            &ours,
            Target::Latest,
            RestoreOptions::default(),
        ))
        .unwrap();
        let theirs = dir.path().join(format!("theirs-{}", db.replace('/', "_")));
        let status = std::process::Command::new(
            std::env::var("LITESTREAM_TEST_BIN").expect("LITESTREAM_TEST_BIN: run `make test`"),
        )
        .args(["restore", "-o"])
        .arg(&theirs)
        .arg(&url)
        .env_remove("AWS_CA_BUNDLE")
        .envs(creds.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .unwrap();
        assert!(status.success());
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "{db}: our restore differs from Litestream's"
        );
    }
}
