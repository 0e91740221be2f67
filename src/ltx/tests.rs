//! Codec tests: real Litestream 0.5.17 files as vectors, round trips, corruption, rules.

use std::io::Cursor as IoCursor;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/litestream-0.5.17")
}

/// Every .ltx under the vector trees, with its (min, max) from the name.
fn vector_files() -> Vec<(PathBuf, Txid, Txid)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Txid, Txid)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Some((min, max)) =
                parse_file_name(p.file_name().unwrap().to_str().unwrap())
            {
                out.push((p, min, max));
            }
        }
    }
    let mut out = Vec::new();
    walk(&testdata().join("file-replica"), &mut out);
    walk(&testdata().join("s3-objects"), &mut out);
    out.sort();
    out
}

type Pages = Vec<(u32, Vec<u8>)>;

fn decode_all(bytes: &[u8]) -> Result<(Header, Pages, Trailer), LtxError> {
    let mut d = Decoder::new(bytes)?;
    let mut pages = Vec::new();
    let mut page = Vec::new();
    while let Some(pgno) = d.next_page(&mut page)? {
        pages.push((pgno, page.clone()));
    }
    Ok((*d.header(), pages, d.trailer().unwrap()))
}

#[test]
fn crc64_is_go_iso() {
    assert_eq!(crc64(b"123456789"), 0xB909_56C7_75A4_1001);
}

#[test]
fn file_names_round_trip_and_reject_uppercase() {
    assert_eq!(file_name(1, 0x1d), "0000000000000001-000000000000001d.ltx");
    assert_eq!(
        parse_file_name("0000000000000001-000000000000001d.ltx"),
        Some((1, 0x1d))
    );
    assert_eq!(
        parse_file_name("0000000000000001-000000000000001D.ltx"),
        None
    );
    assert_eq!(
        parse_file_name("000000000000001-000000000000001d.ltx"),
        None
    );
    assert_eq!(
        parse_file_name("0000000000000001-000000000000001d.ltx.tmp"),
        None
    );
}

#[test]
fn every_litestream_vector_decodes_and_verifies() {
    let files = vector_files();
    assert!(
        files.len() >= 30,
        "expected the whole vector set, found {}",
        files.len()
    );
    for (path, min, max) in files {
        let bytes = std::fs::read(&path).unwrap();
        let (h, pages, trailer) =
            decode_all(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!((h.min_txid, h.max_txid), (min, max), "{}", path.display());
        assert_eq!(h.flags, HEADER_FLAG_NO_CHECKSUM);
        assert_eq!(h.page_size, 4096);
        assert_eq!(trailer.post_apply_checksum, 0);
        assert!(pages.iter().all(|(p, _)| *p <= h.commit));
        if h.is_snapshot() {
            let pgnos: Vec<u32> = pages.iter().map(|(p, _)| *p).collect();
            assert_eq!(
                pgnos,
                (1..=h.commit).collect::<Vec<_>>(),
                "{}",
                path.display()
            );
        }
        // Random access agrees with streaming.
        let tail_len = bytes.len().min(ESTIMATED_PAGE_INDEX_SIZE as usize);
        let tail = &bytes[bytes.len() - tail_len..];
        assert_eq!(
            PageIndex::locate(tail, bytes.len() as u64).unwrap(),
            IndexLocation::InTail
        );
        let index = PageIndex::parse_tail(tail, bytes.len() as u64).unwrap();
        assert_eq!(index.entries.len(), pages.len());
        for (entry, (pgno, data)) in index.entries.iter().zip(&pages) {
            let frame = &bytes[entry.offset as usize..(entry.offset + entry.size) as usize];
            let (got_pgno, got) = decode_page_frame(frame, h.page_size).unwrap();
            assert_eq!((got_pgno, &got), (*pgno, data));
        }
    }
}

#[test]
fn annotated_vector_header_fields() {
    let bytes =
        std::fs::read(testdata().join("file-replica/ltx/0/0000000000000002-0000000000000002.ltx"))
            .unwrap();
    let (h, pages, t) = decode_all(&bytes).unwrap();
    assert_eq!(bytes.len(), 247);
    assert_eq!(h.commit, 4);
    assert_eq!(h.timestamp, 0x1a216b15c77);
    assert_eq!((h.wal_offset, h.wal_size), (16512, 4120));
    assert_eq!((h.wal_salt1, h.wal_salt2), (0x0736ca5d, 0x09f62006));
    assert_eq!(pages.iter().map(|p| p.0).collect::<Vec<_>>(), vec![2]);
    assert_eq!(t.file_checksum, 0x8a5a484375e4c3f5);
    // Re-encoding the header gives the same bytes (reserved bytes zero).
    assert_eq!(&h.encode()[..], &bytes[..100]);
}

fn open_vector(rel: &str) -> Decoder<std::fs::File> {
    Decoder::new(std::fs::File::open(testdata().join("file-replica/ltx").join(rel)).unwrap())
        .unwrap()
}

fn restore_to_vec(inputs: &[&str]) -> Vec<u8> {
    let decoders = inputs.iter().map(|r| open_vector(r)).collect();
    let (merged, _) = merge(decoders, Vec::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.db");
    let mut f = std::fs::File::create(&path).unwrap();
    Decoder::new(&merged[..])
        .unwrap()
        .decode_database_to(&mut f)
        .unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn rebuilds_litestream_restores_byte_for_byte() {
    let expected_1d =
        std::fs::read(testdata().join("expected-db/restore-txid-000000000000001d.db")).unwrap();
    let got = restore_to_vec(&["9/0000000000000001-000000000000001d.ltx"]);
    assert_eq!(got.len(), expected_1d.len());
    assert!(got == expected_1d, "restore of 0x1d differs");

    let expected_25 =
        std::fs::read(testdata().join("expected-db/restore-txid-0000000000000025.db")).unwrap();
    let got = restore_to_vec(&[
        "9/0000000000000001-000000000000001d.ltx",
        "1/000000000000001e-0000000000000020.ltx",
        "1/0000000000000021-0000000000000021.ltx",
        "0/0000000000000022-0000000000000022.ltx",
        "1/0000000000000023-0000000000000025.ltx",
    ]);
    assert!(got == expected_25, "restore of 0x25 differs");

    // Database checksums computed independently (testdata README).
    assert_eq!(
        DatabaseChecksum::of_database(&expected_1d, 4096).value(),
        0xea9616dfbfc78ed2
    );
    assert_eq!(
        DatabaseChecksum::of_database(&expected_25, 4096).value(),
        0xaa9721d1b541106e
    );
}

#[test]
fn merge_matches_litestream_compaction() {
    // Litestream compacted 0/23..25 (commit 16 then 5) into 1/23-25, dropping pages 6..16.
    let inputs = [
        "0/0000000000000023-0000000000000023.ltx",
        "0/0000000000000024-0000000000000024.ltx",
        "0/0000000000000025-0000000000000025.ltx",
    ];
    let (merged, summary) =
        merge(inputs.iter().map(|r| open_vector(r)).collect(), Vec::new()).unwrap();
    let ours = decode_all(&merged).unwrap();
    let theirs_bytes =
        std::fs::read(testdata().join("file-replica/ltx/1/0000000000000023-0000000000000025.ltx"))
            .unwrap();
    let theirs = decode_all(&theirs_bytes).unwrap();
    assert_eq!(ours.0, theirs.0, "headers differ");
    assert_eq!(ours.1, theirs.1, "pages differ");
    assert_eq!(summary.pages, 5);
    // The checksum covers uncompressed data: equal whenever compressed sizes are equal.
    let sizes = |b: &[u8]| {
        PageIndex::parse_tail(b, b.len() as u64)
            .unwrap()
            .entries
            .iter()
            .map(|e| e.size)
            .collect::<Vec<_>>()
    };
    if sizes(&merged) == sizes(&theirs_bytes) {
        assert_eq!(ours.2, theirs.2);
    }
}

#[test]
fn contiguity_is_enforced() {
    let gap = [
        "9/0000000000000001-0000000000000004.ltx",
        "1/000000000000001e-0000000000000020.ltx",
    ];
    let err = merge(gap.iter().map(|r| open_vector(r)).collect(), Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            LtxError::NonContiguous {
                prev_max: 4,
                next_min: 0x1e,
                ..
            }
        ),
        "{err}"
    );
    let backwards = [
        "1/000000000000001e-0000000000000020.ltx",
        "9/0000000000000001-000000000000001d.ltx",
    ];
    assert!(matches!(
        merge(
            backwards.iter().map(|r| open_vector(r)).collect(),
            Vec::new()
        ),
        Err(LtxError::NonContiguous { .. })
    ));
    assert!(matches!(
        merge::<&[u8], _>(vec![], Vec::new()),
        Err(LtxError::NoInputs)
    ));
}

/// Compressed bytes are not checksummed (LTX hashes the decompressed page), so a flip there
/// may decode to the very same page: harmless. What must never happen is different data.
#[test]
fn no_single_byte_corruption_yields_wrong_data() {
    let bytes =
        std::fs::read(testdata().join("file-replica/ltx/0/0000000000000002-0000000000000002.ltx"))
            .unwrap();
    let original = decode_all(&bytes).unwrap();
    let mut detected = 0;
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= bit;
            match decode_all(&bad) {
                Err(_) => detected += 1,
                Ok(got) => assert_eq!(
                    got.1, original.1,
                    "flip of bit {bit:#x} at byte {i} changed the data"
                ),
            }
        }
    }
    assert!(
        detected > bytes.len(),
        "only {detected} corruptions detected"
    );
    for len in 0..bytes.len() {
        assert!(
            decode_all(&bytes[..len]).is_err(),
            "truncation to {len} went unnoticed"
        );
    }
}

#[test]
fn header_rules_are_typed_errors() {
    let good = Header::new(4096, 3, 2, 2, 1);
    assert!(good.validate().is_ok());
    type IsExpected = fn(&LtxError) -> bool;
    let cases: Vec<(Header, IsExpected)> = vec![
        (Header { flags: 1, ..good }, |e| {
            matches!(e, LtxError::BadFlags(1))
        }),
        (
            Header {
                page_size: 1000,
                ..good
            },
            |e| matches!(e, LtxError::BadPageSize(1000)),
        ),
        (
            Header {
                page_size: 256,
                ..good
            },
            |e| matches!(e, LtxError::BadPageSize(256)),
        ),
        (
            Header {
                page_size: 131072,
                ..good
            },
            |e| matches!(e, LtxError::BadPageSize(_)),
        ),
        (
            Header {
                min_txid: 0,
                ..good
            },
            |e| matches!(e, LtxError::BadTxidRange { .. }),
        ),
        (
            Header {
                min_txid: 3,
                max_txid: 2,
                ..good
            },
            |e| matches!(e, LtxError::BadTxidRange { .. }),
        ),
        (
            Header {
                wal_offset: -1,
                ..good
            },
            |e| matches!(e, LtxError::BadWalFields(_)),
        ),
        (
            Header {
                wal_size: -1,
                wal_offset: 32,
                ..good
            },
            |e| matches!(e, LtxError::BadWalFields(_)),
        ),
        (
            Header {
                wal_salt1: 5,
                ..good
            },
            |e| matches!(e, LtxError::BadWalFields(_)),
        ),
        (
            Header {
                wal_size: 10,
                ..good
            },
            |e| matches!(e, LtxError::BadWalFields(_)),
        ),
        (
            Header {
                pre_apply_checksum: 7,
                ..good
            },
            |e| matches!(e, LtxError::BadChecksumField { .. }),
        ),
        (Header { flags: 0, ..good }, |e| {
            matches!(e, LtxError::BadChecksumField { .. })
        }),
        (
            Header {
                flags: 0,
                pre_apply_checksum: 5,
                ..good
            },
            |e| matches!(e, LtxError::BadChecksumField { .. }),
        ),
    ];
    for (h, is_expected) in cases {
        let err = h.validate().unwrap_err();
        assert!(is_expected(&err), "{h:?}: {err}");
        let mut bytes = h.encode();
        assert!(Header::decode(&bytes).is_err());
        bytes[0] = b'X';
        assert!(matches!(Header::decode(&bytes), Err(LtxError::BadMagic)));
    }
    // Tracked checksums: a snapshot has pre-apply 0, an incremental a flagged one.
    assert!(Header {
        flags: 0,
        min_txid: 1,
        ..good
    }
    .validate()
    .is_ok());
    assert!(Header {
        flags: 0,
        pre_apply_checksum: CHECKSUM_FLAG | 5,
        ..good
    }
    .validate()
    .is_ok());
}

#[test]
fn encoder_rules_are_typed_errors() {
    let page = vec![7u8; 4096];
    let mut e = Encoder::new(Vec::new(), Header::new(4096, 10, 2, 2, 0)).unwrap();
    assert!(matches!(
        e.encode_page(11, &page),
        Err(LtxError::PageBeyondCommit { .. })
    ));
    assert!(matches!(
        e.encode_page(0, &page),
        Err(LtxError::BadPageHeader { .. })
    ));
    assert!(matches!(
        e.encode_page(3, &page[..100]),
        Err(LtxError::PageDataSize { .. })
    ));
    e.encode_page(5, &page).unwrap();
    assert!(matches!(
        e.encode_page(5, &page),
        Err(LtxError::PageOutOfOrder { .. })
    ));
    assert!(matches!(
        e.encode_page(4, &page),
        Err(LtxError::PageOutOfOrder { .. })
    ));

    let big = Header::new(4096, lock_pgno(4096) + 5, 2, 2, 0);
    let mut e = Encoder::new(Vec::new(), big).unwrap();
    assert!(matches!(
        e.encode_page(lock_pgno(4096), &page),
        Err(LtxError::LockPage(262145))
    ));

    let mut snap = Encoder::new(Vec::new(), Header::new(4096, 3, 1, 1, 0)).unwrap();
    snap.encode_page(1, &page).unwrap();
    assert!(matches!(
        snap.encode_page(3, &page),
        Err(LtxError::SnapshotIncomplete {
            expected: 2,
            got: 3
        })
    ));
    snap.encode_page(2, &page).unwrap();
    assert!(matches!(
        snap.finish(0),
        Err(LtxError::SnapshotIncomplete { .. })
    ));
}

/// Builds an LTX file by hand whose pages are legacy LZ4 frames (flag 0), as ltx 0.5.0/0.5.1
/// wrote them, with a correct checksum and index.
fn legacy_file(header: Header, pages: &[(u32, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut out = header.encode().to_vec();
    let mut crc = Crc64::default();
    crc.update(&out);
    let mut index = PageIndex::default();
    for (pgno, data) in pages {
        let mut info = lz4_flex::frame::FrameInfo::new();
        info.block_size = lz4_flex::frame::BlockSize::Max64KB;
        info.content_checksum = true;
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).unwrap();
        let frame = enc.finish().unwrap();
        let mut head = pgno.to_be_bytes().to_vec();
        head.extend_from_slice(&0u16.to_be_bytes());
        crc.update(&head);
        crc.update(data);
        index.entries.push(PageIndexEntry {
            pgno: *pgno,
            offset: out.len() as u64,
            size: (6 + frame.len()) as u64,
        });
        out.extend_from_slice(&head);
        out.extend_from_slice(&frame);
    }
    let idx = index.encode();
    crc.update(&[0u8; 6]);
    crc.update(&idx);
    crc.update(&0u64.to_be_bytes());
    out.extend_from_slice(&[0u8; 6]);
    out.extend_from_slice(&idx);
    out.extend_from_slice(
        &Trailer {
            post_apply_checksum: 0,
            file_checksum: crc.finish_flagged(),
        }
        .encode(),
    );
    out
}

#[test]
fn legacy_lz4_frame_pages_decode() {
    let pages: Vec<(u32, Vec<u8>)> = (1..=3u32)
        .map(|p| (p, (0..4096u32).map(|i| (i * p % 251) as u8).collect()))
        .collect();
    let bytes = legacy_file(Header::new(4096, 3, 1, 1, 1_795_677_046_025), &pages);
    let (_, got, _) = decode_all(&bytes).unwrap();
    assert_eq!(got, pages);
    let index = PageIndex::parse_tail(&bytes, bytes.len() as u64).unwrap();
    for (e, (pgno, data)) in index.entries.iter().zip(&pages) {
        let frame = &bytes[e.offset as usize..(e.offset + e.size) as usize];
        assert_eq!(
            decode_page_frame(frame, 4096).unwrap(),
            (*pgno, data.clone())
        );
    }
    // A legacy file merges with a modern one.
    let modern = encode(Header::new(4096, 3, 2, 2, 5), &[(2, vec![9u8; 4096])]);
    let (merged, _) = merge(
        vec![
            Decoder::new(&bytes[..]).unwrap(),
            Decoder::new(&modern[..]).unwrap(),
        ],
        Vec::new(),
    )
    .unwrap();
    let (_, merged_pages, _) = decode_all(&merged).unwrap();
    assert_eq!(merged_pages[1], (2, vec![9u8; 4096]));
    assert_eq!(merged_pages[0], pages[0]);
}

#[test]
fn index_in_a_large_file_needs_a_second_fetch() {
    // 5000 pages of 512 bytes: the index is larger than a small tail.
    let pages: Vec<(u32, Vec<u8>)> = (1..=5000u32)
        .map(|p| (p, vec![(p % 200) as u8; 512]))
        .collect();
    let bytes = encode(Header::new(512, 5000, 1, 1, 0), &pages);
    let tail = &bytes[bytes.len() - 4096..];
    let start = match PageIndex::locate(tail, bytes.len() as u64).unwrap() {
        IndexLocation::FetchFrom(s) => s,
        other => panic!("{other:?}"),
    };
    assert!(PageIndex::parse_tail(tail, bytes.len() as u64).is_err());
    let index = PageIndex::parse_tail(&bytes[start as usize..], bytes.len() as u64).unwrap();
    assert_eq!(index.entries.len(), 5000);
    assert_eq!(index.get(4321).map(|e| e.pgno), Some(4321));
}

fn encode(header: Header, pages: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new(), header).unwrap();
    for (pgno, data) in pages {
        e.encode_page(*pgno, data).unwrap();
    }
    e.finish(0).unwrap().0
}

/// A random incremental: distinct ascending pgnos <= commit, never the lock page.
fn arb_pages(page_size: u32, commit: u32) -> impl Strategy<Value = Vec<(u32, Vec<u8>)>> {
    let lock = lock_pgno(page_size);
    proptest::collection::btree_map(1..=commit, any::<u8>(), 0..12).prop_map(move |m| {
        m.into_iter()
            .filter(|(p, _)| *p != lock)
            .map(|(p, seed)| {
                let data = (0..page_size)
                    .map(|i| if i % 7 == 0 { seed } else { (i as u8) ^ seed })
                    .collect();
                (p, data)
            })
            .collect()
    })
}

fn arb_page_size() -> impl Strategy<Value = u32> {
    (9u32..=16).prop_map(|s| 1 << s)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_round_trip((page_size, commit, pages) in arb_page_size().prop_flat_map(|ps| (Just(ps), 1u32..40)).prop_flat_map(|(ps, c)| (Just(ps), Just(c), arb_pages(ps, c)))) {
        let header = Header::new(page_size, commit, 3, 4, 99);
        let bytes = encode(header, &pages);
        let (h, got, t) = decode_all(&bytes).unwrap();
        prop_assert_eq!(h, header);
        prop_assert_eq!(got, pages);
        prop_assert_eq!(t.post_apply_checksum, 0);
    }

    #[test]
    fn merging_equals_applying_in_order(
        page_size in prop_oneof![Just(512u32), Just(4096u32), Just(65536u32)],
        commits in proptest::collection::vec(1u32..30, 1..6),
        seed in any::<u64>(),
    ) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut db: Vec<Vec<u8>> = Vec::new();
        let mut files = Vec::new();
        for (i, &commit) in commits.iter().enumerate() {
            let txid = i as u64 + 1;
            let pages: Vec<(u32, Vec<u8>)> = if txid == 1 {
                (1..=commit).map(|p| (p, vec![rng.gen(); page_size as usize])).collect()
            } else {
                let mut pgnos: Vec<u32> = (1..=commit).filter(|_| rng.gen_bool(0.4)).collect();
                // Growth must carry every new page, as a real writer would.
                pgnos.extend((db.len() as u32 + 1)..=commit);
                pgnos.sort(); pgnos.dedup();
                pgnos.into_iter().map(|p| (p, vec![rng.gen(); page_size as usize])).collect()
            };
            for (p, d) in &pages {
                if db.len() < *p as usize { db.resize(*p as usize, Vec::new()); }
                db[*p as usize - 1] = d.clone();
            }
            db.truncate(commit as usize);
            files.push(encode(Header::new(page_size, commit, txid, txid, txid as i64), &pages));
        }
        let decoders = files.iter().map(|f| Decoder::new(&f[..]).unwrap()).collect();
        let (merged, summary) = merge(decoders, Vec::new()).unwrap();
        prop_assert_eq!(summary.header.min_txid, 1);
        prop_assert_eq!(summary.header.max_txid, commits.len() as u64);
        let (h, pages, _) = decode_all(&merged).unwrap();
        prop_assert_eq!(h.commit, *commits.last().unwrap());
        let got: Vec<Vec<u8>> = pages.into_iter().map(|(_, d)| d).collect();
        prop_assert_eq!(got, db);
    }

    #[test]
    fn decoder_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let _ = decode_all(&bytes);
        let pages = vec![(1, vec![1; 512]), (3, (0..512).map(|i| i as u8).collect())];
        let mut bad = encode(Header::new(512, 3, 2, 2, 1), &pages);
        for (at, x) in flips {
            let n = bad.len();
            bad[at % n] ^= x | 1;
        }
        if let Ok((_, got, _)) = decode_all(&bad) {
            prop_assert_eq!(got, pages);
        }
        let _ = PageIndex::parse_tail(&bad, bad.len() as u64);
    }
}

#[test]
fn io_cursor_decoder_reads_exactly_one_file() {
    // A decoder stops at the trailer: two files back to back decode one after the other.
    let a = encode(Header::new(512, 1, 1, 1, 0), &[(1, vec![1; 512])]);
    let b = encode(Header::new(512, 2, 2, 2, 0), &[(2, vec![2; 512])]);
    let joined = [a.clone(), b.clone()].concat();
    let mut cur = IoCursor::new(&joined[..]);
    Decoder::new(&mut cur).unwrap().finish().unwrap();
    assert_eq!(cur.position() as usize, a.len());
    Decoder::new(&mut cur).unwrap().finish().unwrap();
}

/// `PRAGMA page_size=N; VACUUM` ships a file holding every page at the new size: merging and
/// applying start over from it (what came before is superseded), in both directions; a file
/// at a new page size that does not hold every page is a typed error, never a mixed database.
#[test]
fn page_size_change_starts_over_from_the_full_file() {
    let page = |ps: u32, fill: u8| vec![fill; ps as usize];
    for (old, new) in [(4096u32, 8192u32), (8192, 1024)] {
        let files = [
            encode(
                Header::new(old, 3, 1, 1, 10),
                &[(1, page(old, 1)), (2, page(old, 2)), (3, page(old, 3))],
            ),
            encode(Header::new(old, 3, 2, 2, 20), &[(2, page(old, 4))]),
            encode(
                Header::new(new, 2, 3, 3, 30),
                &[(1, page(new, 5)), (2, page(new, 6))],
            ),
            encode(Header::new(new, 2, 4, 4, 40), &[(2, page(new, 7))]),
        ];
        let decoders = || {
            files
                .iter()
                .map(|f| Decoder::new(&f[..]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(rebase_point(decoders().iter().map(|d| d.header())), 2);
        // Compaction of the whole range: TXIDs 1-4, every page at the new size.
        let (merged, _) = merge(decoders(), Vec::new()).unwrap();
        let (h, pages, _) = decode_all(&merged).unwrap();
        assert_eq!(
            (h.page_size, h.min_txid, h.max_txid, h.commit),
            (new, 1, 4, 2)
        );
        assert_eq!(pages, vec![(1, page(new, 5)), (2, page(new, 7))]);
        // A compaction of 2-4 keeps its range too.
        let (merged, _) = merge(decoders().split_off(1), Vec::new()).unwrap();
        let (h, _, _) = decode_all(&merged).unwrap();
        assert_eq!((h.page_size, h.min_txid, h.max_txid), (new, 2, 4));
        // Applying: the database at the new size.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut out = std::fs::File::create(&path).unwrap();
        let s = apply_to_database(decoders(), &mut out).unwrap();
        assert_eq!((s.header.page_size, s.header.max_txid), (new, 4));
        let mut want = page(new, 5);
        want.extend(page(new, 7));
        assert_eq!(std::fs::read(&path).unwrap(), want);
        // Before the change: the old size, untouched by what follows.
        let mut out = std::fs::File::create(&path).unwrap();
        let s = apply_to_database(decoders().into_iter().take(2).collect(), &mut out).unwrap();
        assert_eq!(s.header.page_size, old);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * u64::from(old));
        // A file at the new size that lacks a page cannot stand for the database.
        let partial = [
            files[0].clone(),
            files[1].clone(),
            encode(Header::new(new, 2, 3, 3, 30), &[(2, page(new, 6))]),
        ];
        let d: Vec<_> = partial[1..]
            .iter()
            .map(|f| Decoder::new(&f[..]).unwrap())
            .collect();
        let err = merge(d, Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                LtxError::PageSizeChangeNotFull {
                    txid: 3,
                    pages: 1,
                    commit: 2,
                    ..
                }
            ),
            "{err}"
        );
        let d: Vec<_> = partial
            .iter()
            .map(|f| Decoder::new(&f[..]).unwrap())
            .collect();
        let mut out = std::fs::File::create(&path).unwrap();
        assert!(matches!(
            apply_to_database(d, &mut out),
            Err(LtxError::PageSizeChangeNotFull { .. })
        ));
    }
}

/// A replica written before page-size changes were shipped whole: the file at the change
/// holds a few pages; told the page counts, merge and apply start from a later full file.
#[test]
fn partial_page_size_change_heals_from_a_later_full_file() {
    let page = |ps: u32, fill: u8| vec![fill; ps as usize];
    let files = [
        encode(
            Header::new(4096, 2, 1, 1, 10),
            &[(1, page(4096, 1)), (2, page(4096, 2))],
        ),
        encode(Header::new(8192, 2, 2, 2, 20), &[(2, page(8192, 3))]),
        encode(
            Header::new(8192, 2, 3, 3, 30),
            &[(1, page(8192, 4)), (2, page(8192, 5))],
        ),
        encode(Header::new(8192, 2, 4, 4, 40), &[(2, page(8192, 6))]),
    ];
    let decoders = || {
        files
            .iter()
            .map(|f| Decoder::new(&f[..]).unwrap())
            .collect::<Vec<_>>()
    };
    let counts = [0, 1, 2, 1];
    let (merged, _) = merge_stamped_known(decoders(), Vec::new(), None, Some(&counts)).unwrap();
    let (h, pages, _) = decode_all(&merged).unwrap();
    assert_eq!((h.page_size, h.min_txid, h.max_txid), (8192, 1, 4));
    assert_eq!(pages, vec![(1, page(8192, 4)), (2, page(8192, 6))]);
    let dir = tempfile::tempdir().unwrap();
    let mut out = std::fs::File::create(dir.path().join("db")).unwrap();
    apply_to_database_known(decoders(), &mut out, Some(&counts)).unwrap();
    // Up to the damaged file only: nothing holds every page at the new size.
    let err = apply_to_database_known(
        decoders().into_iter().take(2).collect(),
        &mut out,
        Some(&counts[..2]),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            LtxError::PageSizeChangeNotFull {
                txid: 2,
                from: 4096,
                to: 8192,
                pages: 1,
                commit: 2
            }
        ),
        "{err}"
    );
}
