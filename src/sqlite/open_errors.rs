//! Why an open failed: SQLite itself can only say "unable to open database file". Kept for
//! the thread that opened (its last failed open, as errno is) and by path (each path's last
//! failure, forgotten once it opens), never in one slot that every thread's opens overwrite.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::Path;

/// Paths whose failures are kept: the oldest is forgotten first.
const KEPT_PATHS: usize = 256;

thread_local! {
    static THIS_THREAD: RefCell<Option<String>> = const { RefCell::new(None) };
}

static BY_PATH: parking_lot::Mutex<VecDeque<(String, String)>> =
    parking_lot::Mutex::new(VecDeque::new());

/// An open of `path` failed with `error`.
pub fn failed(path: &Path, error: &str) {
    THIS_THREAD.with(|t| *t.borrow_mut() = Some(error.to_string()));
    let key = path.display().to_string();
    let mut by_path = BY_PATH.lock();
    by_path.retain(|(p, _)| *p != key);
    if by_path.len() == KEPT_PATHS {
        by_path.pop_front();
    }
    by_path.push_back((key, error.to_string()));
}

/// `path` opened: its earlier failure is over.
pub fn opened(path: &Path) {
    let key = path.display().to_string();
    let mut by_path = BY_PATH.lock();
    if !by_path.is_empty() {
        by_path.retain(|(p, _)| *p != key);
    }
}

/// The calling thread's last failed open.
pub fn this_thread() -> Option<String> {
    THIS_THREAD.with(|t| t.borrow().clone())
}

/// Each path's last failure, oldest first.
pub fn by_path() -> serde_json::Map<String, serde_json::Value> {
    BY_PATH
        .lock()
        .iter()
        .map(|(p, e)| (p.clone(), serde_json::Value::String(e.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_the_threads_own_and_each_paths_until_it_opens() {
        failed(Path::new("/x/a.db"), "bad a");
        let other = std::thread::spawn(|| {
            failed(Path::new("/x/b.db"), "bad b");
            this_thread()
        });
        assert_eq!(other.join().unwrap().as_deref(), Some("bad b"));
        assert_eq!(this_thread().as_deref(), Some("bad a"));
        let all = by_path();
        assert_eq!(all["/x/a.db"], "bad a");
        assert_eq!(all["/x/b.db"], "bad b");
        opened(Path::new("/x/a.db"));
        assert!(!by_path().contains_key("/x/a.db"));
        assert_eq!(
            this_thread().as_deref(),
            Some("bad a"),
            "the thread's last failure stays"
        );
    }
}
