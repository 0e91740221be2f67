//! Files we encode are restored by the real Litestream 0.5.17 binary, byte for byte.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use common::{unique, S3Server};
use litestream::ltx::{merge, Decoder, Encoder, Header};
use litestream::runtime::block_on;
use litestream::storage::{PutCondition, Store};

fn litestream_bin() -> PathBuf {
    PathBuf::from(std::env::var("LITESTREAM_TEST_BIN").unwrap_or_else(|_| {
        panic!("LITESTREAM_TEST_BIN is not set: run `make test` (it installs litestream 0.5.17)")
    }))
}

fn sqlite(db: &Path, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 shell");
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three states of a real database: created, grown and changed, then shrunk by VACUUM.
fn database_states(dir: &Path, page_size: u32) -> Vec<Vec<u8>> {
    let db = dir.join(format!("src-{page_size}.db"));
    let mut states = Vec::new();
    sqlite(
        &db,
        &format!(
            "PRAGMA page_size={page_size}; PRAGMA journal_mode=delete;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<300)
         INSERT INTO t(v) SELECT hex(randomblob(40)) FROM n;"
        ),
    );
    states.push(std::fs::read(&db).unwrap());
    sqlite(
        &db,
        "UPDATE t SET v = v || 'x' WHERE id % 7 = 0;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<600)
         INSERT INTO t(v) SELECT hex(randomblob(60)) FROM n;",
    );
    states.push(std::fs::read(&db).unwrap());
    sqlite(&db, "DELETE FROM t WHERE id > 50; VACUUM;");
    states.push(std::fs::read(&db).unwrap());
    assert!(
        states[2].len() < states[1].len(),
        "VACUUM should shrink the file"
    );
    states
}

/// An LTX file taking `prev` to `next`: every page that differs or is new.
fn ltx_between(prev: Option<&[u8]>, next: &[u8], page_size: u32, txid: u64) -> Vec<u8> {
    let ps = page_size as usize;
    let commit = (next.len() / ps) as u32;
    let mut enc = Encoder::new(
        Vec::new(),
        Header::new(
            page_size,
            commit,
            txid,
            txid,
            1_795_000_000_000 + txid as i64,
        ),
    )
    .unwrap();
    for (i, page) in next.chunks(ps).enumerate() {
        let old = prev.and_then(|p| p.get(i * ps..(i + 1) * ps));
        if old != Some(page) {
            enc.encode_page(i as u32 + 1, page).unwrap();
        }
    }
    enc.finish(0).unwrap().0
}

/// L0 files 1..=3, plus an L1 compaction of 2..=3, as a replica would hold them.
fn replica_files(states: &[Vec<u8>], page_size: u32) -> Vec<(u8, Header, Vec<u8>)> {
    let mut files = Vec::new();
    for (i, state) in states.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| states[p].as_slice());
        let body = ltx_between(prev, state, page_size, i as u64 + 1);
        let header = *Decoder::new(&body[..]).unwrap().header();
        files.push((0, header, body));
    }
    let (merged, summary) = merge(
        vec![
            Decoder::new(&files[1].2[..]).unwrap(),
            Decoder::new(&files[2].2[..]).unwrap(),
        ],
        Vec::new(),
    )
    .unwrap();
    files.push((1, summary.header, merged));
    files
}

fn restore(url: &str, out: &Path, txid: Option<u64>, env: &[(&str, &str)]) -> Vec<u8> {
    let mut cmd = Command::new(litestream_bin());
    cmd.arg("restore").arg("-o").arg(out);
    if let Some(t) = txid {
        cmd.arg("-txid").arg(format!("{t:016x}"));
    }
    cmd.arg(url).env_remove("AWS_CA_BUNDLE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let result = cmd.output().expect("run litestream");
    assert!(
        result.status.success(),
        "litestream restore {url} failed:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    let bytes = std::fs::read(out).unwrap();
    std::fs::remove_file(out).unwrap();
    bytes
}

fn check_restores(url: &str, states: &[Vec<u8>], dir: &Path, env: &[(&str, &str)]) {
    let out = dir.join("restored.db");
    assert!(
        restore(url, &out, None, env) == states[2],
        "latest restore differs from the source ({url})"
    );
    assert!(
        restore(url, &out, Some(2), env) == states[1],
        "restore to TXID 2 differs ({url})"
    );
    assert!(
        restore(url, &out, Some(1), env) == states[0],
        "restore to TXID 1 differs ({url})"
    );
}

#[test]
fn litestream_restores_our_file_replicas() {
    for page_size in [512u32, 4096, 65536] {
        let dir = tempfile::tempdir().unwrap();
        let states = database_states(dir.path(), page_size);
        let replica = dir.path().join("replica");
        let store = Store::open(&format!("file://{}", replica.display())).unwrap();
        block_on(async {
            for (level, header, body) in replica_files(&states, page_size) {
                store
                    .put_ltx(level, &header, Bytes::from(body), PutCondition::IfNoneMatch)
                    .await
                    .unwrap();
            }
        });
        check_restores(
            &format!("file://{}", replica.display()),
            &states,
            dir.path(),
            &[],
        );
    }
}

#[test]
fn litestream_restores_our_s3_replicas() {
    let server = S3Server::moto();
    let dir = tempfile::tempdir().unwrap();
    let states = database_states(dir.path(), 4096);
    let prefix = unique("compat") + "/app.db";
    let store = server.store(&prefix);
    block_on(async {
        for (level, header, body) in replica_files(&states, 4096) {
            store
                .put_ltx(level, &header, Bytes::from(body), PutCondition::IfNoneMatch)
                .await
                .unwrap();
        }
    });
    let env = [
        ("AWS_ACCESS_KEY_ID", server.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", server.secret_key.as_str()),
    ];
    check_restores(&server.url(&prefix), &states, dir.path(), &env);
}
