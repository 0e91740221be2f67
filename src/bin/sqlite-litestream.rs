//! `sqlite-litestream`: restore, list, verify and fork replicas from a shell (an init
//! container, a cron job), with the library code the SQL functions use. No SQLite here: the
//! library's SQLite parts are only reached through a loaded extension.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use litestream::error::Error;
use litestream::ltx;
use litestream::restore::{self, RestoreOptions, Target};
use litestream::storage::{LtxFileInfo, Store, SNAPSHOT_LEVEL};
use litestream::timefmt::rfc3339_millis;

const USAGE: &str = "\
usage: sqlite-litestream <command> [options] <replica-url>...

commands:
  restore -o PATH [--txid TXID | --timestamp TIME] [--overwrite] [--json] URL
      the database at its latest state (or at TXID, or as it was just before TIME) to PATH
  ls [--json] URL
      every LTX file of the replica: level, TXID range, timestamp, size
  verify [--json] URL
      reads every file, checks every checksum, names each level's gaps, plans a restore
  fork [--txid TXID | --timestamp TIME] [--json] SOURCE_URL DEST_URL
      a new replica at DEST_URL starting with the source's state (latest, or at the target)

URLs are those of the extension: file:///dir/app.db, s3://bucket/path/app.db?endpoint=...
(credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY). Progress goes to stderr
(LITESTREAM_LOG=warn quiets it), results to stdout.

exit status: 0 done; 1 failed (the store, a file, a damaged replica: the message says which);
2 bad usage; 3 nothing at the target (an empty replica, a TXID or time it does not keep)";

/// Exit statuses (documented in USAGE and the README).
const FAILED: u8 = 1;
const USAGE_ERROR: u8 = 2;
const NOTHING_AT_TARGET: u8 = 3;

fn main() -> ExitCode {
    if std::env::var_os("LITESTREAM_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("LITESTREAM_LOG", "info");
    }
    litestream::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("sqlite-litestream: {msg}\n\n{USAGE}");
            ExitCode::from(USAGE_ERROR)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("sqlite-litestream: {}", e.message());
            ExitCode::from(if e.code() == libsqlite3_sys::SQLITE_EMPTY {
                NOTHING_AT_TARGET
            } else {
                FAILED
            })
        }
    }
}

enum Failure {
    Usage(String),
    Failed(Error),
}

impl<E: Into<Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Failed(e.into())
    }
}

fn usage<T>(msg: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Usage(msg.into()))
}

/// The options and positional arguments of one command.
#[derive(Default)]
struct Args {
    out: Option<String>,
    target: Option<Target>,
    overwrite: bool,
    json: bool,
    urls: Vec<String>,
}

fn parse(command: &str, raw: &[String]) -> Result<Args, Failure> {
    let mut a = Args::default();
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| match it.next() {
            Some(v) => Ok(v.clone()),
            None => usage(format!("{command}: {name} needs a value")),
        };
        let mut set_target = |t: Result<Target, String>| -> Result<(), Failure> {
            if a.target.is_some() {
                return usage(format!("{command}: give one of --txid and --timestamp"));
            }
            a.target = Some(t.map_err(|e| Failure::Usage(format!("{command}: {e}")))?);
            Ok(())
        };
        match arg.as_str() {
            "-o" | "--output" if command == "restore" => a.out = Some(value(arg)?),
            "--txid" if command != "ls" && command != "verify" => {
                let v = value(arg)?;
                set_target(Target::parse_txid("--txid", &v))?
            }
            "--timestamp" if command != "ls" && command != "verify" => {
                let v = value(arg)?;
                set_target(Target::parse_timestamp("--timestamp", &v))?
            }
            "--overwrite" if command == "restore" => a.overwrite = true,
            "--json" => a.json = true,
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return usage(format!("{command}: unknown option {flag}"))
            }
            url => a.urls.push(url.to_string()),
        }
    }
    Ok(a)
}

fn run(args: &[String]) -> Result<(), Failure> {
    let Some((command, rest)) = args.split_first() else {
        return usage("a command is required");
    };
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return Ok(());
    }
    if matches!(command.as_str(), "-V" | "--version" | "version") {
        println!("sqlite-litestream {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let a = parse(command, rest)?;
    let wants = |n: usize, what: &str| {
        if a.urls.len() == n {
            Ok(())
        } else {
            usage(format!(
                "{command}: {what} (got {} arguments)",
                a.urls.len()
            ))
        }
    };
    match command.as_str() {
        "restore" => {
            wants(1, "one replica URL")?;
            let Some(out) = &a.out else {
                return usage("restore: -o PATH (where the database goes) is required");
            };
            let opts = RestoreOptions {
                overwrite: a.overwrite,
            };
            let target = a.target.unwrap_or(Target::Latest);
            let s = restore::restore_blocking(&a.urls[0], Path::new(out), target, opts)?;
            report(&s, a.json, || {
                format!(
                    "restored TXID {} ({}) to {}: {} pages of {} bytes from {} files in {:.2} s",
                    s.txid, s.timestamp, s.output, s.pages, s.page_size, s.files, s.seconds
                )
            });
            Ok(())
        }
        "fork" => {
            wants(2, "a source URL and a destination URL")?;
            let target = a.target.unwrap_or(Target::Latest);
            let s = litestream::pitr::fork::fork_blocking(&a.urls[0], &a.urls[1], target)?;
            report(&s, a.json, || {
                format!(
                    "forked {} at TXID {} ({}) to {}",
                    s.source, s.txid, s.timestamp, s.dest
                )
            });
            Ok(())
        }
        "ls" => {
            wants(1, "one replica URL")?;
            let store = Arc::new(Store::open(&a.urls[0])?);
            let files = litestream::runtime::block_on(restore::list_all(&store, true))?;
            print_files(&files, a.json);
            Ok(())
        }
        "verify" => {
            wants(1, "one replica URL")?;
            let store = Arc::new(Store::open(&a.urls[0])?);
            litestream::runtime::block_on(verify(&store, a.json))
        }
        other => usage(format!("unknown command {other:?}")),
    }
}

/// A command's summary on stdout: its JSON, or one line for people.
fn report(summary: &impl serde::Serialize, json: bool, line: impl FnOnce() -> String) {
    if json {
        let doc = serde_json::to_string(summary).expect("a summary serializes");
        println!("{doc}");
    } else {
        println!("{}", line());
    }
}

fn file_json(f: &LtxFileInfo) -> serde_json::Value {
    serde_json::json!({
        "level": f.level,
        "min_txid": ltx::format_txid(f.min_txid),
        "max_txid": ltx::format_txid(f.max_txid),
        "timestamp": rfc3339_millis(f.created_at_ms),
        "size": f.size,
    })
}

fn print_files(files: &[LtxFileInfo], json: bool) {
    if json {
        let all: Vec<_> = files.iter().map(file_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return;
    }
    println!(
        "{:<5} {:<16} {:<16} {:<24} {:>12}",
        "level", "min_txid", "max_txid", "timestamp", "size"
    );
    for f in files {
        println!(
            "{:<5} {:<16} {:<16} {:<24} {:>12}",
            f.level,
            ltx::format_txid(f.min_txid),
            ltx::format_txid(f.max_txid),
            rfc3339_millis(f.created_at_ms),
            f.size
        );
    }
}

/// Every file read whole (a large one through a scratch file, not into memory) and decoded
/// (header, page checksums, file checksum, the TXIDs its name gives); the gaps of each level
/// named; a restore of the latest state planned. Every problem is named; any fails the
/// command, after all are listed.
async fn verify(store: &Store, json: bool) -> Result<(), Failure> {
    let files = restore::list_all(store, false).await?;
    let mut problems: Vec<String> = Vec::new();
    for f in &files {
        let name = format!(
            "level {} file {}",
            f.level,
            ltx::file_name(f.min_txid, f.max_txid)
        );
        match litestream::replica::verify::fetch_for_check(store, f).await {
            Ok(fetched) => {
                if let Err(e) = litestream::replica::verify::check_fetched(fetched, f) {
                    problems.push(format!("{name}: {e}"));
                }
            }
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    // Gaps inside a level are normal (retention, and Litestream's compaction windows, leave
    // them): named, a problem only when the restore plan cannot cross them.
    let mut gaps: Vec<String> = Vec::new();
    for pair in files.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.level == b.level && a.level != SNAPSHOT_LEVEL && b.min_txid > a.max_txid + 1 {
            gaps.push(format!(
                "level {}: a gap between {} and {} (TXIDs {} to {} are in no file of the level)",
                a.level,
                ltx::file_name(a.min_txid, a.max_txid),
                ltx::file_name(b.min_txid, b.max_txid),
                ltx::format_txid(a.max_txid + 1),
                ltx::format_txid(b.min_txid.saturating_sub(1)),
            ));
        }
    }
    let (latest, plan_files, plan_error) =
        match restore::plan(&files, Target::Latest, &store.describe()) {
            Ok(p) => (p.last().map(|f| f.max_txid), p.len(), None),
            Err(e) => {
                problems.push(format!("no restore plan: {e}"));
                (None, 0, Some(e))
            }
        };
    if json {
        let doc = serde_json::json!({
            "replica": store.describe(),
            "files": files.len(),
            "bytes": files.iter().map(|f| f.size).sum::<u64>(),
            "latest_txid": latest.map(ltx::format_txid),
            "restore_files": plan_files,
            "gaps": gaps,
            "problems": problems,
        });
        println!("{doc}");
    } else {
        for g in &gaps {
            println!("gap: {g}");
        }
        for p in &problems {
            println!("problem: {p}");
        }
        match latest {
            Some(txid) if problems.is_empty() => println!(
                "ok: {} files checked; the latest state, TXID {}, restores from {plan_files} of them",
                files.len(),
                ltx::format_txid(txid)
            ),
            _ => println!("{} problems in {} files", problems.len(), files.len()),
        }
    }
    match (problems.first(), plan_error) {
        (None, _) => Ok(()),
        // An empty replica: nothing to verify, nothing to restore.
        (Some(_), Some(e)) if files.is_empty() => Err(e.into()),
        (Some(first), _) => Err(Failure::Failed(Error::other(format!(
            "the replica {} has {} problems; the first: {first}",
            store.describe(),
            problems.len()
        )))),
    }
}
