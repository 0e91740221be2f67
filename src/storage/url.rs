//! Replica URLs: `file:///abs/dir` and `s3://bucket/path?endpoint=..&region=..`.

use std::path::PathBuf;

use super::{Result, StorageError};

/// Settings of an S3 destination, from the URL and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix with a trailing `/` (empty for the bucket root).
    pub prefix: String,
    pub endpoint: String,
    pub region: String,
    pub path_style: bool,
    pub skip_verify: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaUrl {
    File { root: PathBuf },
    S3(S3Config),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_bool(url: &str, key: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(
            url,
            format!("{key} must be true or false, not {value:?}"),
        )),
    }
}

fn invalid(url: &str, reason: impl Into<String>) -> StorageError {
    StorageError::InvalidUrl {
        url: redact(url),
        reason: reason.into(),
    }
}

/// A URL for messages: any userinfo and query values that look secret are dropped.
pub fn redact(url: &str) -> String {
    match ::url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let secret = k.contains("secret") || k.contains("token") || k.contains("key");
                    (
                        k.into_owned(),
                        if secret {
                            "REDACTED".into()
                        } else {
                            v.into_owned()
                        },
                    )
                })
                .collect();
            if pairs.is_empty() {
                u.set_query(None);
            } else {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "<unparseable URL>".into(),
    }
}

impl ReplicaUrl {
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.starts_with('/') {
            return Ok(Self::File {
                root: PathBuf::from(raw),
            });
        }
        let url = ::url::Url::parse(raw).map_err(|e| invalid(raw, e.to_string()))?;
        match url.scheme() {
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(invalid(
                        raw,
                        "file URLs take an absolute path: file:///abs/dir",
                    ));
                }
                if url.query().is_some() {
                    return Err(invalid(raw, "file URLs take no parameters"));
                }
                let root = url
                    .to_file_path()
                    .map_err(|_| invalid(raw, "not an absolute local path"))?;
                Ok(Self::File { root })
            }
            "s3" => Self::parse_s3(raw, &url).map(Self::S3),
            other => Err(invalid(
                raw,
                format!("unsupported scheme {other:?} (use file:///abs/dir or s3://bucket/path)"),
            )),
        }
    }

    fn parse_s3(raw: &str, url: &::url::Url) -> Result<S3Config> {
        let bucket = url
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| invalid(raw, "missing bucket name (s3://bucket/path)"))?
            .to_string();
        let path = url.path().trim_matches('/');
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut endpoint = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"));
        let mut region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
        let mut path_style = None;
        let mut skip_verify = false;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "endpoint" => endpoint = Some(value.into_owned()),
                "region" => region = Some(value.into_owned()),
                "force-path-style" => path_style = Some(parse_bool(raw, &key, &value)?),
                "skip-verify" => skip_verify = parse_bool(raw, &key, &value)?,
                other => {
                    return Err(invalid(
                        raw,
                        format!("unknown parameter {other:?} (known: endpoint, region, force-path-style, skip-verify)"),
                    ))
                }
            }
        }
        let region = region.unwrap_or_else(|| "us-east-1".into());
        // A custom endpoint (MinIO, Ceph, R2...) is usually path-style; AWS is virtual-host.
        let path_style = path_style.unwrap_or(endpoint.is_some());
        let endpoint = match endpoint {
            Some(e) if e.contains("://") => e,
            Some(e) => format!("https://{e}"),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        ::url::Url::parse(&endpoint).map_err(|e| invalid(raw, format!("bad endpoint: {e}")))?;
        Ok(S3Config {
            bucket,
            prefix,
            endpoint,
            region,
            path_style,
            skip_verify,
            access_key_id: env("LITESTREAM_ACCESS_KEY_ID").or_else(|| env("AWS_ACCESS_KEY_ID")),
            secret_access_key: env("LITESTREAM_SECRET_ACCESS_KEY")
                .or_else(|| env("AWS_SECRET_ACCESS_KEY")),
            session_token: env("AWS_SESSION_TOKEN"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls() {
        assert_eq!(
            ReplicaUrl::parse("file:///var/lib/replica").unwrap(),
            ReplicaUrl::File {
                root: "/var/lib/replica".into()
            }
        );
        assert_eq!(
            ReplicaUrl::parse("/abs/dir").unwrap(),
            ReplicaUrl::File {
                root: "/abs/dir".into()
            }
        );
        assert!(ReplicaUrl::parse("file://host/dir").is_err());
        assert!(ReplicaUrl::parse("file:///dir?x=1").is_err());
    }

    #[test]
    fn s3_urls() {
        let u = ReplicaUrl::parse(
            "s3://bkt/multi/a.db?endpoint=http://127.0.0.1:9000&region=eu-west-1&force-path-style=true",
        )
        .unwrap();
        let ReplicaUrl::S3(c) = u else { panic!() };
        assert_eq!(c.bucket, "bkt");
        assert_eq!(c.prefix, "multi/a.db/");
        assert_eq!(c.endpoint, "http://127.0.0.1:9000");
        assert_eq!(c.region, "eu-west-1");
        assert!(c.path_style);
        let ReplicaUrl::S3(root) = ReplicaUrl::parse("s3://bkt?region=x").unwrap() else {
            panic!()
        };
        assert_eq!(root.prefix, "");
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, needle) in [
            ("s3://bkt/p?colour=red", "unknown parameter \"colour\""),
            ("s3:///path", "missing bucket"),
            ("gs://bkt/p", "unsupported scheme"),
            ("s3://bkt/p?force-path-style=maybe", "true or false"),
            ("not a url", "relative URL"),
        ] {
            let err = ReplicaUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn redaction_drops_secrets() {
        let r = redact("s3://user:pw@bkt/p?secret-access-key=abc&region=x");
        assert!(!r.contains("abc") && !r.contains("pw"), "{r}");
        assert!(r.contains("region=x"));
    }
}
