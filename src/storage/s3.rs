//! `s3://bucket/path`: any S3-compatible store. `rusty-s3` builds the URLs and parses the XML;
//! `aws-sigv4` signs each request in its `Authorization` header (conditional and metadata
//! headers are signed headers); the shared `reqwest` client sends it over rustls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use rusty_s3::actions::{ListObjectsV2, ObjectIdentifier};
use rusty_s3::{Bucket, S3Action, UrlStyle};

use super::retry::with_retries;
use super::url::S3Config;
use super::{ConditionalSupport, ObjectMeta, PutCondition, Result, StorageError, WrittenBody};
use crate::timefmt;

/// Longest time one request may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// rusty-s3 is used unsigned (URL building only); this is the validity it wants anyway.
const URL_TTL: Duration = Duration::from_secs(60);

pub struct S3Store {
    bucket: Bucket,
    credentials: Option<aws_credential_types::Credentials>,
    region: String,
    prefix: String,
    endpoint: String,
    skip_verify: bool,
    /// Set by the probe on stores (Ceph RGW 16) whose `If-Match` only matches a bare ETag.
    unquoted_etag: AtomicBool,
}

/// One client per process (connection pools are shared by every database).
fn client(skip_verify: bool) -> Result<&'static reqwest::Client> {
    static VERIFIED: OnceLock<std::result::Result<reqwest::Client, String>> = OnceLock::new();
    static UNVERIFIED: OnceLock<std::result::Result<reqwest::Client, String>> = OnceLock::new();
    let cell = if skip_verify { &UNVERIFIED } else { &VERIFIED };
    cell.get_or_init(|| build_client(skip_verify))
        .as_ref()
        .map_err(|detail| StorageError::Transport {
            what: "HTTP client".into(),
            detail: detail.clone(),
        })
}

fn build_client(skip_verify: bool) -> std::result::Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(60))
        .danger_accept_invalid_certs(skip_verify);
    // Extra CAs, as the AWS SDKs honour them (system roots stay trusted).
    for var in ["AWS_CA_BUNDLE", "SSL_CERT_FILE"] {
        if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            let pem = std::fs::read(&path)
                .map_err(|e| format!("{var}={}: {e}", path.to_string_lossy()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{var}={}: {e}", path.to_string_lossy()))?;
            for cert in certs {
                b = b.add_root_certificate(cert);
            }
        }
    }
    b.build().map_err(|e| e.to_string())
}

/// Percent-encodes an object key for `x-amz-copy-source` (slashes kept).
fn percent_encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `<Code>` and `<Message>` of an S3 error body.
fn error_detail(body: &str) -> (String, String) {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        body.find(&open)
            .and_then(|s| {
                let rest = &body[s + open.len()..];
                rest.find(&close).map(|e| rest[..e].to_string())
            })
            .unwrap_or_default()
    };
    (tag("Code"), tag("Message"))
}

impl S3Store {
    pub fn new(cfg: S3Config) -> Result<Self> {
        let invalid = |reason: String| StorageError::InvalidUrl {
            url: format!("s3://{}/{}", cfg.bucket, cfg.prefix),
            reason,
        };
        let endpoint = ::url::Url::parse(&cfg.endpoint).map_err(|e| invalid(e.to_string()))?;
        let style = if cfg.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, cfg.bucket.clone(), cfg.region.clone())
            .map_err(|e| invalid(e.to_string()))?;
        let credentials = match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(k), Some(s)) => Some(aws_credential_types::Credentials::new(
                k,
                s,
                cfg.session_token.clone(),
                None,
                "litestream",
            )),
            _ => None,
        };
        Ok(Self {
            bucket,
            credentials,
            region: cfg.region,
            prefix: cfg.prefix,
            endpoint: cfg.endpoint,
            skip_verify: cfg.skip_verify,
            unquoted_etag: AtomicBool::new(false),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "s3://{}/{} at {}",
            self.bucket.name(),
            self.prefix,
            self.endpoint
        )
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn what(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket.name(), self.full_key(key))
    }

    /// Sends a request (rebuilt and re-signed for each attempt) and maps failures to typed
    /// errors; transient ones are retried with backoff.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> Result<RequestBuilder>,
    ) -> Result<Response> {
        with_retries(|| self.send_once(what, &build)).await
    }

    async fn send_once(
        &self,
        what: &str,
        build: impl Fn() -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let resp = build()?.send().await.map_err(|e| StorageError::Transport {
            what: what.to_string(),
            detail: match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_for(what, resp).await)
    }

    async fn error_for(&self, what: &str, resp: Response) -> StorageError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let (code, message) = error_detail(&body);
        let detail = if code.is_empty() {
            status.to_string()
        } else {
            format!("{code}: {message}")
        };
        match status {
            StatusCode::NOT_FOUND if code == "NoSuchBucket" => StorageError::NoSuchBucket {
                bucket: self.bucket.name().to_string(),
                endpoint: self.endpoint.clone(),
            },
            StatusCode::NOT_FOUND => StorageError::NotFound(what.to_string()),
            // 409 ConditionalRequestConflict: a concurrent conditional write won.
            StatusCode::PRECONDITION_FAILED => StorageError::PreconditionFailed(what.to_string()),
            StatusCode::CONFLICT if code == "ConditionalRequestConflict" => {
                StorageError::PreconditionFailed(what.to_string())
            }
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => StorageError::AccessDenied {
                what: what.to_string(),
                detail,
            },
            _ => StorageError::Http {
                what: what.to_string(),
                status: status.as_u16(),
                detail,
            },
        }
    }

    /// A request with `headers`, signed (SigV4, in the Authorization header) when we have
    /// credentials; anonymous otherwise.
    fn request(
        &self,
        method: Method,
        url: ::url::Url,
        headers: &[(&str, &str)],
    ) -> Result<RequestBuilder> {
        use aws_sigv4::http_request::{
            sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode,
        };
        // A whole-request deadline: a write stuck in a full send queue (a store that stopped
        // reading, e.g. out of space) fails and is retried instead of hanging forever.
        let mut req = client(self.skip_verify)?
            .request(method.clone(), url.as_str())
            .timeout(REQUEST_TIMEOUT);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let Some(creds) = &self.credentials else {
            return Ok(req);
        };
        let signing_error = |e: &dyn std::fmt::Display| StorageError::Protocol {
            what: url.to_string(),
            detail: format!("cannot sign the request: {e}"),
        };
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity = creds.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(std::time::SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| signing_error(&e))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            url.as_str(),
            headers.iter().copied(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| signing_error(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| signing_error(&e))?
            .into_parts();
        for (name, value) in instructions.headers() {
            req = req.header(name, value);
        }
        Ok(req)
    }

    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<(String, ObjectMeta)>> {
        let full_prefix = self.full_key(prefix);
        let start_after = start_after.map(|s| self.full_key(s));
        let what = self.what(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // A listing cut short by the network is transient: the page is asked for again.
            let body = with_retries(|| async {
                let resp = self
                    .send_once(&what, || {
                        let mut action = ListObjectsV2::new(&self.bucket, None);
                        action.with_prefix(full_prefix.as_str());
                        action.with_max_keys(1000);
                        if let Some(s) = &start_after {
                            action.with_start_after(s.as_str());
                        }
                        if let Some(t) = &token {
                            action.with_continuation_token(t.as_str());
                        }
                        self.request(Method::GET, action.sign(URL_TTL), &[])
                    })
                    .await?;
                resp.text().await.map_err(|e| StorageError::Transport {
                    what: what.clone(),
                    detail: format!("reading the listing: {e}"),
                })
            })
            .await?;
            let parsed =
                ListObjectsV2::parse_response(&body).map_err(|e| StorageError::Protocol {
                    what: what.clone(),
                    detail: format!("unreadable listing: {e}"),
                })?;
            for c in parsed.contents {
                let Some(key) = c.key.strip_prefix(&self.prefix) else {
                    continue;
                };
                let modified_ms = c
                    .last_modified
                    .as_deref()
                    .and_then(timefmt::parse_rfc3339_millis)
                    .unwrap_or(0);
                out.push((
                    key.to_string(),
                    ObjectMeta {
                        size: c.size.unwrap_or(0),
                        etag: c.etag.unwrap_or_default(),
                        modified_ms,
                        timestamp_ms: None,
                    },
                ));
            }
            match parsed.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    pub async fn get(&self, key: &str, range: Option<(u64, Option<u64>)>) -> Result<Bytes> {
        let what = self.what(key);
        let full = self.full_key(key);
        let range_header = range.map(|(off, len)| match len {
            Some(0) => None,
            Some(len) => Some(format!("bytes={off}-{}", off + len - 1)),
            None => Some(format!("bytes={off}-")),
        });
        if let Some(None) = range_header {
            return Ok(Bytes::new());
        }
        let range_header = range_header.flatten();
        with_retries(|| async {
            let resp = self
                .send_once(&what, || {
                    let action = self.bucket.get_object(None, &full);
                    let range: Vec<(&str, &str)> =
                        range_header.iter().map(|r| ("range", r.as_str())).collect();
                    self.request(Method::GET, action.sign(URL_TTL), &range)
                })
                .await?;
            let expected = resp.content_length();
            // A body cut short by the network is transient: the whole GET is retried.
            let body = resp.bytes().await.map_err(|e| StorageError::Transport {
                what: what.clone(),
                detail: format!("reading body: {e}"),
            })?;
            if expected.is_some_and(|n| n != body.len() as u64) {
                return Err(StorageError::Transport {
                    what: what.clone(),
                    detail: format!(
                        "short read: {} of {} bytes",
                        body.len(),
                        expected.unwrap_or(0)
                    ),
                });
            }
            Ok(body)
        })
        .await
    }

    /// Streams the object from `offset` to its end into `out` as it arrives (a few KiB in
    /// memory whatever the size); a connection lost midway resumes where it stopped.
    /// Returns the bytes written.
    pub async fn get_into(&self, key: &str, offset: u64, out: &mut std::fs::File) -> Result<u64> {
        use std::io::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let what = self.what(key);
        let full = self.full_key(key);
        let out: &std::fs::File = out;
        // Where the next attempt resumes: what earlier attempts wrote is kept.
        let at = std::sync::atomic::AtomicU64::new(offset);
        let streamed = with_retries(|| async {
            let range = format!("bytes={}-", at.load(Relaxed));
            let mut resp = self
                .send_once(&what, || {
                    let action = self.bucket.get_object(None, &full);
                    self.request(Method::GET, action.sign(URL_TTL), &[("range", &range)])
                })
                .await?;
            while let Some(chunk) = resp.chunk().await.map_err(|e| StorageError::Transport {
                what: what.clone(),
                detail: format!("reading body: {e}"),
            })? {
                (&*out)
                    .write_all(&chunk)
                    .map_err(|source| StorageError::Io {
                        what: format!("download of {what}"),
                        source,
                    })?;
                at.fetch_add(chunk.len() as u64, Relaxed);
            }
            Ok(())
        })
        .await;
        match streamed {
            // 416: the object ends exactly where we are (nothing left to read).
            Ok(()) | Err(StorageError::Http { status: 416, .. }) => Ok(at.load(Relaxed) - offset),
            Err(e) => Err(e),
        }
    }

    pub async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let what = self.what(key);
        let full = self.full_key(key);
        let resp = self
            .send(&what, || {
                let action = self.bucket.head_object(None, &full);
                self.request(Method::HEAD, action.sign(URL_TTL), &[])
            })
            .await?;
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        Ok(ObjectMeta {
            size: header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            etag: header("etag").unwrap_or_default().to_string(),
            modified_ms: header("last-modified")
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64),
            timestamp_ms: header("x-amz-meta-litestream-timestamp")
                .and_then(timefmt::parse_rfc3339_millis),
        })
    }

    /// The ETag as this store wants it in `If-Match`.
    fn if_match_value(&self, etag: &str) -> String {
        if self.unquoted_etag.load(Ordering::Relaxed) {
            etag.trim_matches('"').to_string()
        } else {
            etag.to_string()
        }
    }

    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let length = body.len() as u64;
        self.put_body(
            key,
            length,
            || Ok(body.clone().into()),
            condition,
            timestamp_ms,
        )
        .await
    }

    /// Uploads the file at `src`, streamed from disk (memory stays small whatever its size).
    pub async fn put_file(
        &self,
        key: &str,
        src: &std::path::Path,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let io = |source| StorageError::Io {
            what: src.display().to_string(),
            source,
        };
        let length = std::fs::metadata(src).map_err(io)?.len();
        let body = || {
            let f = std::fs::File::open(src).map_err(io)?;
            Ok(reqwest::Body::from(tokio::fs::File::from_std(f)))
        };
        self.put_body(key, length, body, condition, timestamp_ms)
            .await
    }

    /// Uploads what `body` writes, as it writes it (memory stays small whatever its size).
    pub async fn put_written(
        &self,
        key: &str,
        body: WrittenBody,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let length = body.length;
        let make = || Ok(reqwest::Body::wrap_stream(written_stream(body.clone())));
        self.put_body(key, length, make, condition, timestamp_ms)
            .await
    }

    /// One PUT; `body` makes the body afresh for each attempt.
    async fn put_body(
        &self,
        key: &str,
        length: u64,
        body: impl Fn() -> Result<reqwest::Body>,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let what = self.what(key);
        let full = self.full_key(key);
        let timestamp = timestamp_ms.map(timefmt::rfc3339_millis);
        let condition_header = match &condition {
            PutCondition::Always => None,
            PutCondition::IfNoneMatch => Some(("if-none-match", "*".to_string())),
            PutCondition::IfMatch(etag) => Some(("if-match", self.if_match_value(etag))),
        };
        // A large body gets longer than the whole-request deadline: as if sent at 1 MiB/s.
        let deadline = REQUEST_TIMEOUT + Duration::from_secs(length >> 20);
        let length = length.to_string();
        let resp = self
            .send(&what, || {
                let action = self.bucket.put_object(None, &full);
                let mut headers = vec![
                    ("content-type", "application/octet-stream"),
                    ("content-length", length.as_str()),
                ];
                if let Some((name, value)) = &condition_header {
                    headers.push((name, value.as_str()));
                }
                if let Some(ts) = &timestamp {
                    headers.push(("x-amz-meta-litestream-timestamp", ts.as_str()));
                }
                Ok(self
                    .request(Method::PUT, action.sign(URL_TTL), &headers)?
                    .timeout(deadline)
                    .body(body()?))
            })
            .await?;
        Ok(resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }

    /// Whether `other` is the same service reached with the same credentials, so objects
    /// can be copied between them server-side.
    pub fn same_service(&self, other: &S3Store) -> bool {
        let key = |s: &S3Store| {
            s.credentials
                .as_ref()
                .map(|c| c.access_key_id().to_string())
        };
        self.endpoint == other.endpoint && self.region == other.region && key(self) == key(other)
    }

    /// CopyObject: `src_key` of `src` (same service) to `key` here, inside the store (no
    /// bytes through this machine). Metadata (the LTX timestamp) is copied with it.
    pub async fn copy_from(&self, src: &S3Store, src_key: &str, key: &str) -> Result<()> {
        let what = self.what(key);
        let full = self.full_key(key);
        let source = format!(
            "/{}/{}",
            src.bucket.name(),
            percent_encode_path(&src.full_key(src_key))
        );
        let resp = self
            .send(&what, || {
                let action = self.bucket.put_object(None, &full);
                let headers = [
                    ("x-amz-copy-source", source.as_str()),
                    ("content-length", "0"),
                ];
                self.request(Method::PUT, action.sign(URL_TTL), &headers)
            })
            .await?;
        // A copy can fail after the 200 status line: the error is then in the body (a body
        // we cannot read leaves the outcome unknown: an error, not a success).
        let body = resp.text().await.map_err(|e| StorageError::Transport {
            what: what.clone(),
            detail: format!("reading the copy's answer: {e}"),
        })?;
        if body.contains("<Error>") {
            let (code, message) = error_detail(&body);
            return Err(StorageError::Http {
                what,
                status: 200,
                detail: format!("copy from {}: {code}: {message}", src.what(src_key)),
            });
        }
        Ok(())
    }

    pub async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<()> {
        let what = self.what(key);
        let full = self.full_key(key);
        let if_match = if_match.map(|e| self.if_match_value(e));
        let result = self
            .send(&what, || {
                let action = self.bucket.delete_object(None, &full);
                let headers: Vec<(&str, &str)> =
                    if_match.iter().map(|e| ("if-match", e.as_str())).collect();
                self.request(Method::DELETE, action.sign(URL_TTL), &headers)
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() && if_match.is_none() => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn delete_many(&self, keys: &[String]) -> Result<()> {
        for chunk in keys.chunks(1000) {
            let ids: Vec<ObjectIdentifier> = chunk
                .iter()
                .map(|k| ObjectIdentifier::new(self.full_key(k)))
                .collect();
            let what = self.what(chunk.first().map_or("", String::as_str));
            let resp = self
                .send(&what, || {
                    let mut action = self.bucket.delete_objects(None, ids.iter());
                    action.set_quiet(true);
                    let url = action.sign(URL_TTL);
                    let (body, md5) = action.body_with_md5();
                    let headers = [
                        ("content-md5", md5.as_str()),
                        ("content-type", "application/xml"),
                    ];
                    Ok(self.request(Method::POST, url, &headers)?.body(body))
                })
                .await?;
            // Quiet mode lists only the keys not deleted: an unread answer is not a success.
            let body = resp.text().await.map_err(|e| StorageError::Transport {
                what: what.clone(),
                detail: format!("reading the delete's answer: {e}"),
            })?;
            if body.contains("<Error>") {
                let (code, message) = error_detail(&body);
                return Err(StorageError::Protocol {
                    what,
                    detail: format!("batch delete failed: {code}: {message}"),
                });
            }
        }
        Ok(())
    }

    /// Exercises conditional writes on a scratch object under the replica prefix.
    pub async fn probe_conditional_writes(&self) -> Result<ConditionalSupport> {
        let key = format!(".litestream-probe-{:016x}", rand::random::<u64>());
        let result = self.probe(&key).await;
        let _ = self.delete(&key, None).await;
        result
    }

    async fn probe(&self, key: &str) -> Result<ConditionalSupport> {
        let mut support = ConditionalSupport {
            create: false,
            replace: false,
            unquoted_etag: false,
            conditional_delete: false,
        };
        let etag = self
            .put(
                key,
                Bytes::from_static(b"1"),
                PutCondition::IfNoneMatch,
                None,
            )
            .await?;
        match self
            .put(
                key,
                Bytes::from_static(b"2"),
                PutCondition::IfNoneMatch,
                None,
            )
            .await
        {
            Err(e) if e.is_precondition_failed() => support.create = true,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let etag = if support.create {
            etag
        } else {
            self.head(key).await?.etag
        };
        let wrong = PutCondition::IfMatch("\"00000000000000000000000000000000\"".into());
        let refuses_wrong = match self.put(key, Bytes::from_static(b"3"), wrong, None).await {
            Err(e) if e.is_precondition_failed() => true,
            Err(e) => return Err(e),
            Ok(_) => false,
        };
        let etag = if refuses_wrong {
            etag
        } else {
            self.head(key).await?.etag
        };
        if refuses_wrong {
            let right = PutCondition::IfMatch(etag.clone());
            match self
                .put(key, Bytes::from_static(b"4"), right.clone(), None)
                .await
            {
                Ok(_) => support.replace = true,
                Err(e) if e.is_precondition_failed() => {
                    // Ceph RGW 16 only matches the ETag without its quotes.
                    self.unquoted_etag.store(true, Ordering::Relaxed);
                    match self.put(key, Bytes::from_static(b"4"), right, None).await {
                        Ok(_) => {
                            support.replace = true;
                            support.unquoted_etag = true;
                        }
                        Err(e) if e.is_precondition_failed() => {
                            self.unquoted_etag.store(false, Ordering::Relaxed);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let wrong_delete = self
            .delete(key, Some("\"00000000000000000000000000000000\""))
            .await;
        support.conditional_delete = match wrong_delete {
            Err(e) if e.is_precondition_failed() => true,
            Err(e) => return Err(e),
            Ok(()) => false,
        };
        Ok(support)
    }
}

/// Bytes a written body sends at a time.
const WRITTEN_CHUNK: usize = 1 << 20;

/// The bytes `body` writes, as a stream: the writer runs on a blocking thread and waits
/// while the request is slower than it. A writer error, or a length other than announced,
/// ends the stream with an error, so the request fails and no object is made.
fn written_stream(
    body: WrittenBody,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(WRITTEN_CHUNK),
            sent: 0,
            length: body.length,
        };
        let written = (body.write)(&mut out).and_then(|()| {
            body.check_length(out.sent + out.buf.len() as u64)?;
            out.send_buffer()
        });
        if let Err(e) = written {
            // The request may be gone already (then nobody listens).
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// A blocking writer feeding [`written_stream`].
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: u64,
    /// The announced length: HTTP/1 would quietly cut a longer body at it (a truncated
    /// object, stored as if whole), so a longer one fails before it is sent.
    length: u64,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(WRITTEN_CHUNK),
        ));
        self.sent += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the upload ended before its body was written"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(WRITTEN_CHUNK - self.buf.len());
        if self.sent + (self.buf.len() + n) as u64 > self.length {
            return Err(std::io::Error::other(format!(
                "the body runs past the {} bytes announced",
                self.length
            )));
        }
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == WRITTEN_CHUNK {
            self.send_buffer()?;
        }
        Ok(n)
    }

    /// The last partial chunk is sent only once the length is checked (a flush sends none).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn body(length: u64, actual: usize) -> WrittenBody {
        WrittenBody {
            length,
            write: std::sync::Arc::new(move |out| out.write_all(&vec![7u8; actual])),
        }
    }

    async fn collect(body: WrittenBody) -> (usize, Option<std::io::Error>) {
        let mut stream = Box::pin(written_stream(body));
        let mut got = 0;
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => got += chunk.len(),
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn a_written_body_streams_in_chunks_and_ends_with_its_last_bytes() {
        let n = 2 * WRITTEN_CHUNK + 5;
        let (got, err) = collect(body(n as u64, n)).await;
        assert_eq!(got, n);
        assert!(err.is_none());
    }

    #[tokio::test]
    async fn a_written_body_of_another_length_ends_in_an_error_before_its_tail() {
        let chunk = WRITTEN_CHUNK as u64;
        for (announced, actual) in [
            (100u64, 99usize),
            (100, 101),
            (chunk, 10),
            (5 * chunk + 10, 6 * WRITTEN_CHUNK + 20),
        ] {
            let (got, err) = collect(body(announced, actual)).await;
            let err = err.expect("a length mismatch must fail the stream");
            assert!(err.to_string().contains("announced"), "{err}");
            assert!((got as u64) < announced, "{got} of {announced} sent");
        }
    }
}
