//! Arbitrary bytes through every LTX entry point that reads untrusted input: the streaming
//! decoder, the page-index parser and the single-frame decoder. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litestream::ltx::{decode_page_frame, Decoder, PageIndex};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut decoder) = Decoder::new(data) {
        let mut page = Vec::new();
        while let Ok(Some(_)) = decoder.next_page(&mut page) {}
    }
    if let Ok(index) = PageIndex::parse_tail(data, data.len() as u64) {
        for e in index.entries.iter().take(64) {
            if let Some(frame) = data.get(e.offset as usize..(e.offset + e.size) as usize) {
                let _ = decode_page_frame(frame, 4096);
            }
        }
    }
    for page_size in [512, 4096] {
        let _ = decode_page_frame(data, page_size);
    }
});
