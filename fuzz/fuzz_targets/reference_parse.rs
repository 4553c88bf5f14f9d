//! str → `ImageReference::parse` and `HostPattern::parse`. Properties:
//! - no panic on any input (both parsers slice strings by byte offsets);
//! - a parsed image's Display (the normalized repository name) parses again, to the same Display,
//!   and keeps domain/host/port/path's normalized form;
//! - a parsed pattern's canonical text parses again to an equal pattern (the kubelet reads the key
//!   this webhook writes: it must stay the same key);
//! - `HostPattern::matches` never panics, for the pattern against the image parsed from the same
//!   bytes and against a few fixed images, and a fixed set of patterns against the parsed image.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pullsecret_injector::admission::{HostPattern, ImageReference};

const FIXED_PATTERNS: &[&str] = &[
    "gcr.io",
    "*.gcr.io",
    "*-docker.pkg.dev",
    "docker.*.rep.pkg.dev",
    "index.docker.io",
    "registry.example.com:5000/team",
    "[::1]:5000",
    "*:443",
    "*",
];

const FIXED_IMAGES: &[&str] = &[
    "nginx",
    "eu.gcr.io/acme/api:1",
    "europe-west1-docker.pkg.dev/acme/apps/api@sha256:4b6e0d4f5f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f",
    "localhost:5000/app",
    "[::1]:5000/app",
    "registry.example.com:5000/team/app",
];

fn fixed_patterns() -> &'static [HostPattern] {
    static CELL: OnceLock<Vec<HostPattern>> = OnceLock::new();
    CELL.get_or_init(|| {
        FIXED_PATTERNS
            .iter()
            .filter_map(|p| HostPattern::parse(p).ok())
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    let image = ImageReference::parse(input);
    if let Ok(image) = &image {
        let display = image.to_string();
        let again = ImageReference::parse(&display)
            .unwrap_or_else(|e| panic!("Display {display:?} of {input:?} does not re-parse: {e}"));
        assert_eq!(again.to_string(), display, "Display is a fixed point for {input:?}");
        assert_eq!(again.domain, image.domain, "{input:?}");
        assert_eq!(again.port, image.port, "{input:?}");
        assert_eq!(again.normalized_path(), image.normalized_path(), "{input:?}");
        assert_eq!(again.tag, None);
        assert_eq!(again.digest, None);
        for pattern in fixed_patterns() {
            // Matching depends on the repository, not on tag or digest.
            assert_eq!(
                pattern.matches(image),
                pattern.matches(&again),
                "{pattern} vs {input:?} / {display:?}"
            );
        }
    }

    if let Ok(pattern) = HostPattern::parse(input) {
        let canonical = pattern.as_str().to_owned();
        let again = HostPattern::parse(&canonical)
            .unwrap_or_else(|e| panic!("canonical {canonical:?} of {input:?} does not re-parse: {e}"));
        assert_eq!(again, pattern, "canonical form is stable for {input:?}");
        assert_eq!(pattern.to_string(), canonical);
        if let Ok(image) = &image {
            let _ = pattern.matches(image);
        }
        for fixed in FIXED_IMAGES {
            if let Ok(image) = ImageReference::parse(fixed) {
                let _ = pattern.matches(&image);
            }
        }
    }
});
