//! What to read ahead: the children of a B-tree interior page just read (a lookup or scan
//! goes there next), and the pages after a run of sequential reads.

/// Child page numbers of a B-tree interior page (table 0x05 or index 0x02), else empty.
pub fn btree_children(pgno: u32, page: &[u8]) -> Vec<u32> {
    let h = if pgno == 1 { 100 } else { 0 };
    let Some(&kind) = page.get(h) else {
        return Vec::new();
    };
    if kind != 0x05 && kind != 0x02 {
        return Vec::new();
    }
    let be16 = |at: usize| {
        page.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    };
    let be32 = |at: usize| {
        page.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(cells) = be16(h + 3) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(cells + 1);
    for i in 0..cells {
        if let Some(child) = be16(h + 12 + 2 * i).and_then(be32) {
            out.push(child);
        }
    }
    if let Some(right) = be32(h + 8) {
        out.push(right);
    }
    out.retain(|&p| p != 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_of_an_interior_table_page() {
        let mut page = vec![0u8; 512];
        page[0] = 0x05;
        page[3..5].copy_from_slice(&2u16.to_be_bytes());
        page[8..12].copy_from_slice(&9u32.to_be_bytes());
        page[12..14].copy_from_slice(&400u16.to_be_bytes());
        page[14..16].copy_from_slice(&300u16.to_be_bytes());
        page[400..404].copy_from_slice(&7u32.to_be_bytes());
        page[300..304].copy_from_slice(&8u32.to_be_bytes());
        assert_eq!(btree_children(2, &page), vec![7, 8, 9]);
        page[0] = 0x0d; // a leaf
        assert!(btree_children(2, &page).is_empty());
        assert!(btree_children(2, &[0x05, 0, 0, 0xff, 0xff]).is_empty());
    }
}
