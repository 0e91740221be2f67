use std::io;

/// Everything that can be wrong with LTX bytes. Never a panic: corrupt input is an error.
#[derive(Debug, thiserror::Error)]
pub enum LtxError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("invalid LTX file: bad magic")]
    BadMagic,
    #[error("invalid LTX header flags {0:#010x}")]
    BadFlags(u32),
    #[error("invalid LTX page size {0}")]
    BadPageSize(u32),
    #[error("invalid LTX transaction range {min:#x}-{max:#x}")]
    BadTxidRange { min: u64, max: u64 },
    #[error("invalid LTX WAL fields: {0}")]
    BadWalFields(&'static str),
    #[error("invalid LTX {which} checksum {value:#018x}")]
    BadChecksumField { which: &'static str, value: u64 },
    #[error("invalid LTX page header: pgno {pgno}, flags {flags:#06x}")]
    BadPageHeader { pgno: u32, flags: u16 },
    #[error("LTX page {pgno} out of order (after page {prev})")]
    PageOutOfOrder { prev: u32, pgno: u32 },
    #[error("LTX page {pgno} is beyond the commit size of {commit} pages")]
    PageBeyondCommit { pgno: u32, commit: u32 },
    #[error("LTX page {0} is the SQLite lock page and must not be stored")]
    LockPage(u32),
    #[error("LTX page data is {got} bytes, expected the page size {expected}")]
    PageDataSize { expected: usize, got: usize },
    #[error("LTX snapshot is missing page {expected} (next page is {got})")]
    SnapshotIncomplete { expected: u32, got: u32 },
    #[error("LTX page {pgno} does not decompress: {reason}")]
    Decompress { pgno: u32, reason: String },
    #[error("LTX file is truncated: {0}")]
    Truncated(&'static str),
    #[error("LTX page index is invalid: {0}")]
    BadIndex(String),
    #[error("LTX file checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    ChecksumMismatch { stored: u64, computed: u64 },
    #[error("LTX snapshot checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    DatabaseChecksumMismatch { stored: u64, computed: u64 },
    #[error("LTX files are not contiguous: {prev_min:#x}-{prev_max:#x} then {next_min:#x}-{next_max:#x}")]
    NonContiguous {
        prev_min: u64,
        prev_max: u64,
        next_min: u64,
        next_max: u64,
    },
    #[error("LTX header holds TXIDs {min:#x}-{max:#x}, not those of the file's name ({named_min:#x}-{named_max:#x})")]
    NameMismatch {
        min: u64,
        max: u64,
        named_min: u64,
        named_max: u64,
    },
    #[error("LTX files have different page sizes ({0} and {1})")]
    PageSizeMismatch(u32, u32),
    #[error("the page size changes from {from} to {to} at TXID {txid:#x}, but that LTX file holds {pages} pages, not every page of the {commit}-page database at the new size")]
    PageSizeChangeNotFull {
        txid: u64,
        from: u32,
        to: u32,
        pages: u32,
        commit: u32,
    },
    #[error("nothing to merge")]
    NoInputs,
    /// An error reading the `index`-th input of a merge.
    #[error("input {index}: {source}")]
    Input { index: usize, source: Box<LtxError> },
    #[error("encoder misuse: {0}")]
    Misuse(&'static str),
}

pub type Result<T> = std::result::Result<T, LtxError>;

/// `read_exact` that reports a short read as a truncated file rather than a bare EOF.
pub(crate) fn read_exact(r: &mut impl io::Read, buf: &mut [u8], what: &'static str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => LtxError::Truncated(what),
        _ => LtxError::Io(e),
    })
}
