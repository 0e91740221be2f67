//! Helpers shared by integration tests: the real S3 servers that `make test` starts.
#![allow(dead_code)]

use litestream::storage::{ReplicaUrl, S3Config, Store};

/// A server the test suite needs. Missing configuration is a failure, never a skip.
pub struct S3Server {
    pub name: &'static str,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with `make test`, which starts moto and Ceph RGW")
    })
}

impl S3Server {
    pub fn from_env(name: &'static str) -> Self {
        let up = name.to_uppercase();
        Self {
            name,
            endpoint: required(&format!("LITESTREAM_TEST_{up}_ENDPOINT")),
            access_key: required(&format!("LITESTREAM_TEST_{up}_ACCESS_KEY")),
            secret_key: required(&format!("LITESTREAM_TEST_{up}_SECRET_KEY")),
            bucket: required(&format!("LITESTREAM_TEST_{up}_BUCKET")),
        }
    }

    pub fn moto() -> Self {
        Self::from_env("moto")
    }

    pub fn ceph() -> Self {
        Self::from_env("ceph")
    }

    /// A replica URL under a fresh prefix (the form Litestream accepts too).
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region=us-east-1&force-path-style=true",
            self.bucket, self.endpoint
        )
    }

    pub fn config(&self, prefix: &str) -> S3Config {
        match ReplicaUrl::parse(&self.url(prefix)).unwrap() {
            ReplicaUrl::S3(mut cfg) => {
                cfg.access_key_id = Some(self.access_key.clone());
                cfg.secret_access_key = Some(self.secret_key.clone());
                cfg.session_token = None;
                cfg
            }
            other => panic!("not S3: {other:?}"),
        }
    }

    pub fn store(&self, prefix: &str) -> Store {
        Store::from_url(ReplicaUrl::S3(self.config(prefix))).unwrap()
    }
}

pub fn unique(name: &str) -> String {
    format!("{name}-{:016x}", rand::random::<u64>())
}
