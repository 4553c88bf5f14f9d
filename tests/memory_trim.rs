//! `memory::trim` hands memory freed in the middle of the heap back to the system: RSS falls.
//! Its own test binary, so no other test allocates while RSS is read.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use pullsecret_injector::memory;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_trim_returns_pages_freed_between_live_blocks() {
    // 64 MiB in 1 KiB blocks, written so the pages are resident; then every block but one in 256
    // is freed. The survivors pin the heap's top, so malloc cannot shrink the heap by itself.
    let mut blocks: Vec<Box<[u8]>> = (0..65_536)
        // Block i holds the byte i / 256: each survivor (i = 256 k) its own k, so that a mix-up
        // between survivors would show.
        .map(|i: usize| vec![(i / 256) as u8; 1024].into_boxed_slice())
        .collect();
    let mut survivors = Vec::new();
    for (i, block) in blocks.drain(..).enumerate() {
        if i % 256 == 0 {
            survivors.push(block);
        }
    }
    drop(blocks);
    let free = memory::free_heap_bytes().expect("glibc reports free bytes");
    assert!(
        free > 32 * 1024 * 1024,
        "free heap bytes after the frees: {free}"
    );
    let before = rss_kib();
    assert!(memory::trim(), "malloc_trim returned nothing");
    let after = rss_kib();
    assert!(
        after + 32 * 1024 < before,
        "RSS {before} KiB before the trim, {after} KiB after: expected at least 32 MiB back"
    );
    // The survivors are intact, each still holding its own byte.
    for (k, block) in survivors.iter().enumerate() {
        assert!(block.iter().all(|&b| b == k as u8), "survivor {k}");
    }
}
