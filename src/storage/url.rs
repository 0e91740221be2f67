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

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("secret") || k.contains("token") || k.contains("key") || k.contains("password")
}

/// A URL for messages, as given (so a message quotes what was typed, parseable or not) less
/// any userinfo (`user:password@`) and the values of query parameters that look secret.
pub fn redact(url: &str) -> String {
    redact_text(url)
}

fn redact_text(raw: &str) -> String {
    let (head, query) = match raw.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (raw, None),
    };
    let mut out = match head.find("://") {
        Some(i) => {
            let rest = &head[i + 3..];
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            match authority.rfind('@') {
                Some(at) => format!("{}{}", &head[..i + 3], &rest[at + 1..]),
                None => head.to_string(),
            }
        }
        None => head.to_string(),
    };
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| {
                let key = pair.split_once('=').map_or(pair, |(k, _)| k);
                // Judged on the decoded key (`secret%2Dkey` is a secret too).
                let decoded: String = ::url::form_urlencoded::parse(key.as_bytes())
                    .map(|(k, _)| k.into_owned())
                    .collect();
                if is_secret(&decoded) {
                    format!("{key}=REDACTED")
                } else {
                    pair.to_string()
                }
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// The directory of a `file:` URL or bare path: absolute, not `/`, no `..` (a replica
/// spread over the root of the file system is never what was meant).
fn file_root(raw: &str, root: PathBuf) -> Result<PathBuf> {
    use std::path::Component;
    if !root.is_absolute() {
        return Err(invalid(
            raw,
            "a file replica must be an absolute directory: file:///abs/dir",
        ));
    }
    if root.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(invalid(
            raw,
            "a file replica directory must not contain \"..\"",
        ));
    }
    if root.parent().is_none() {
        return Err(invalid(
            raw,
            "a file replica must be a directory other than / (file:///abs/dir)",
        ));
    }
    Ok(root)
}

impl ReplicaUrl {
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.starts_with('/') {
            return file_root(raw, PathBuf::from(raw)).map(|root| Self::File { root });
        }
        let url = ::url::Url::parse(raw).map_err(|e| invalid(raw, e.to_string()))?;
        match url.scheme() {
            "file" => {
                // The URL parser makes `file:`, `file:relative` and `file:rel/dir` into
                // `file:///...`: only an absolute path is taken (`file:///abs`, `file:/abs`).
                let after_scheme = &raw[raw.find(':').map_or(0, |i| i + 1)..];
                if !after_scheme.starts_with('/') {
                    return Err(invalid(
                        raw,
                        "a file replica must be an absolute directory: file:///abs/dir",
                    ));
                }
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
                // `file://dir` (a host) is refused above; `file:///` and `file:////` remain.
                if after_scheme.trim_start_matches('/').is_empty() {
                    return Err(invalid(
                        raw,
                        "a file replica must be a directory other than / (file:///abs/dir)",
                    ));
                }
                file_root(raw, root).map(|root| Self::File { root })
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
        // Decoded, as Litestream's URL parsing does (`s3://b/a%3Fb` is the prefix `a?b/`).
        let decoded = percent_encoding::percent_decode_str(url.path()).decode_utf8_lossy();
        let path = decoded.trim_matches('/');
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
    fn escaped_paths_are_decoded_as_litestream_does() {
        let prefix = |u: &str| match ReplicaUrl::parse(u).unwrap() {
            ReplicaUrl::S3(c) => c.prefix,
            other => panic!("{other:?}"),
        };
        assert_eq!(prefix("s3://b/dir/a%3Fb%23c%25d.db"), "dir/a?b#c%d.db/");
        assert_eq!(prefix("s3://b/a%20b"), "a b/");
        // A malformed escape is kept as written.
        assert_eq!(prefix("s3://b/100%zz"), "100%zz/");
        assert_eq!(
            ReplicaUrl::parse("file:///r/a%3Fb%23c").unwrap(),
            ReplicaUrl::File {
                root: "/r/a?b#c".into()
            }
        );
    }

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
    fn file_urls_must_name_an_absolute_directory_other_than_root() {
        // The URL parser turns each of these into `/` or `/relative`.
        for (url, needle) in [
            ("file:", "absolute directory"),
            ("file:relative", "absolute directory"),
            ("file:rel/dir", "absolute directory"),
            ("file:/", "other than /"),
            ("file:///", "other than /"),
            ("file:////", "other than /"),
            ("/", "other than /"),
            ("/a/../..", "\"..\""),
            ("file:///a/..", "other than /"),
        ] {
            let err = ReplicaUrl::parse(url).expect_err(url).to_string();
            assert!(
                err.contains(needle) && err.contains(&format!("{url:?}")),
                "{url}: {err}"
            );
        }
        for ok in ["file:///r", "file:/r", "/r"] {
            assert_eq!(
                ReplicaUrl::parse(ok).unwrap(),
                ReplicaUrl::File { root: "/r".into() }
            );
        }
    }

    #[test]
    fn unparseable_urls_are_quoted_without_secrets() {
        let err = ReplicaUrl::parse("s3://AKIA:hunter2@bkt:x/p?secret-access-key=abc&region=x y")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("unparseable"), "{err}");
        assert!(!err.contains("hunter2") && !err.contains("abc"), "{err}");
        assert!(
            err.contains("s3://bkt:x/p?secret-access-key=REDACTED&region=x y"),
            "{err}"
        );
        let err = ReplicaUrl::parse("not a url").unwrap_err().to_string();
        assert!(err.contains("\"not a url\""), "{err}");
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
        assert_eq!(
            redact("s3://bkt/p?%73ecret=abc&x=1"),
            "s3://bkt/p?%73ecret=REDACTED&x=1"
        );
        // Nothing to hide: the input as given.
        assert_eq!(redact("file:relative"), "file:relative");
    }
}
