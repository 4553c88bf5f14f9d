//! Which configured registries an image matches, remembered per thread.
//!
//! Pods repeat their images: every replica of a Deployment, every run of a Job. Parsing a
//! reference and testing it against every host pattern is about a fifth of a typical review's pure
//! path; a remembered answer costs a hash of the image text and one comparison.
//!
//! - Only valid references of at most [`MAX_IMAGE_LEN`] bytes are remembered. An invalid one is
//!   parsed again, for its error; so is a longer one (the grammar bounds the name and the tag, not a
//!   digest of another algorithm than sha256), so that no Pod can make the memo hold megabytes.
//! - The map holds answers for one [`ConfigId`] and is emptied when a review comes with another. A
//!   reload makes a new `Config` with a new id, so an answer computed under an old configuration is
//!   never used under a new one.
//! - One small map per thread, so no worker writes memory another reads. It holds at most
//!   [`CAPACITY`] images and starts over when full: a cluster's working set is usually far smaller.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::HashMap;
use smallvec::SmallVec;

use crate::config::Config;
use crate::reference::{ImageReference, ReferenceError};

/// Images remembered per thread, at most. With [`MAX_IMAGE_LEN`], a full map stays under a
/// megabyte.
pub const CAPACITY: usize = 512;

/// The longest image text remembered: a 255-byte name with a 128-byte tag and a sha512 digest
/// fits.
pub const MAX_IMAGE_LEN: usize = 640;

/// Identifies one configuration to the memo. Every `Config` gets its own, and so does a clone
/// (which may be changed after it is made); two configurations that read the same compare equal
/// whatever their ids.
pub struct ConfigId(u64);

impl ConfigId {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConfigId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for ConfigId {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for ConfigId {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl PartialEq for ConfigId {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ConfigId {}

impl fmt::Debug for ConfigId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfigId")
    }
}

/// What a valid image matches under one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMatches {
    /// (index in `config.registries`, index of its first matching host pattern), in registry
    /// order; empty when no registry serves the image.
    pub registries: SmallVec<[(usize, usize); 2]>,
    /// The image's normalized name ("docker.io/library/nginx", no tag or digest); empty when nothing matches,
    /// as it is then never shown. Shared: each Secret it makes required holds it.
    pub normalized: Arc<str>,
}

/// [`ImageMatches`] computed afresh: the reference parsed and tested against every registry.
pub fn classify(config: &Config, image: &str) -> Result<ImageMatches, ReferenceError> {
    let reference = ImageReference::parse(image)?;
    let registries: SmallVec<[(usize, usize); 2]> = config
        .registries
        .iter()
        .enumerate()
        .filter_map(|(registry, r)| {
            let pattern = r.hosts.iter().position(|p| p.matches(&reference))?;
            Some((registry, pattern))
        })
        .collect();
    let normalized = if registries.is_empty() {
        Arc::default()
    } else {
        Arc::from(reference.normalized_name())
    };
    Ok(ImageMatches {
        registries,
        normalized,
    })
}

/// Calls `f` with what `image` matches under `config`: from this thread's memo when it has the
/// answer, else [`classify`]d and remembered when valid.
pub fn with_matches<R>(
    config: &Config,
    image: &str,
    f: impl FnOnce(Result<&ImageMatches, ReferenceError>) -> R,
) -> R {
    MEMO.with(|memo| {
        // Only a call from inside `f` could find the memo borrowed; it then goes without it.
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return f(classify(config, image).as_ref().map_err(Clone::clone));
        };
        let memo = &mut *memo;
        if memo.config_id != config.id.0 {
            memo.images.clear();
            memo.config_id = config.id.0;
        }
        if let Some(found) = memo.images.get(image) {
            return f(Ok(found));
        }
        match classify(config, image) {
            Ok(matches) if image.len() <= MAX_IMAGE_LEN => {
                if memo.images.len() >= CAPACITY {
                    memo.images.clear();
                }
                let stored = memo.images.entry(image.into()).or_insert(matches);
                f(Ok(stored))
            }
            Ok(matches) => f(Ok(&matches)),
            Err(error) => f(Err(error)),
        }
    })
}

/// Empties this thread's memo (for measuring the path without it).
pub fn forget_on_this_thread() {
    MEMO.with(|memo| {
        if let Ok(mut memo) = memo.try_borrow_mut() {
            memo.images.clear();
        }
    });
}

/// This thread's remembered images, all for the configuration `config_id`.
struct Memo {
    config_id: u64,
    images: HashMap<Box<str>, ImageMatches>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo {
        config_id: 0,
        images: HashMap::default(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml_str(yaml).expect("valid test config")
    }

    const TWO_REGISTRIES: &str = "registries:\n\
         - {name: gcp, preset: gcp, secretName: gcr-pull}\n\
         - {name: harbor, hosts: ['harbor.example.com:8443', 'eu.gcr.io'], secretName: harbor-pull}\n";

    fn remembered(config: &Config, image: &str) -> Result<ImageMatches, ReferenceError> {
        with_matches(config, image, |found| found.cloned())
    }

    #[test]
    fn a_remembered_answer_is_the_computed_one() {
        let config = config(TWO_REGISTRIES);
        let images = [
            "eu.gcr.io/acme/api:1",
            "gcr.io/acme/api@sha256:4b6e0d4f5f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f",
            "harbor.example.com:8443/team/app:2",
            "harbor.example.com/team/app:2",
            "nginx:1.27",
            "europe-west1-docker.pkg.dev/p/r/i:3",
            "europe-west1-maven.pkg.dev/p/r/i:3",
            "Eu.gcr.io/UPPER/case",
            "",
            "bad image",
        ];
        forget_on_this_thread();
        for round in 0..3 {
            for image in images {
                assert_eq!(
                    remembered(&config, image),
                    classify(&config, image),
                    "round {round}: {image:?}"
                );
            }
        }
        let both = remembered(&config, "eu.gcr.io/acme/api:1").expect("valid");
        assert_eq!(both.registries.as_slice(), &[(0, 1), (1, 1)]);
        assert_eq!(&*both.normalized, "eu.gcr.io/acme/api");
        let none = remembered(&config, "nginx:1.27").expect("valid");
        assert!(none.registries.is_empty() && none.normalized.is_empty());
    }

    #[test]
    fn another_configuration_never_sees_an_old_answer() {
        let gcp = config("registries:\n- {name: gcp, preset: gcp, secretName: gcr-pull}\n");
        let harbor =
            config("registries:\n- {name: h, hosts: ['harbor.example.com'], secretName: h}\n");
        let image = "eu.gcr.io/acme/api:1";
        assert_eq!(remembered(&gcp, image).expect("valid").registries.len(), 1);
        assert!(
            remembered(&harbor, image)
                .expect("valid")
                .registries
                .is_empty()
        );
        // A clone may be changed after it is made: it is another configuration to the memo.
        let mut changed = gcp.clone();
        changed.registries.clear();
        assert!(
            remembered(&changed, image)
                .expect("valid")
                .registries
                .is_empty()
        );
        assert_eq!(remembered(&gcp, image).expect("valid").registries.len(), 1);
    }

    #[test]
    fn more_images_than_fit_are_all_answered_right() {
        let config = config(TWO_REGISTRIES);
        let image = |i: usize| match i % 3 {
            0 => format!("eu.gcr.io/acme/svc-{i}:1.{i}"),
            1 => format!("docker.io/library/app-{i}:{i}"),
            _ => format!("harbor.example.com:8443/t/app@sha256:{i:064x}"),
        };
        for pass in 0..2 {
            for i in 0..CAPACITY * 3 {
                let image = image(i);
                assert_eq!(
                    remembered(&config, &image),
                    classify(&config, &image),
                    "pass {pass}: {image}"
                );
            }
        }
    }

    #[test]
    fn a_call_from_inside_the_callback_is_answered_too() {
        let config = config(TWO_REGISTRIES);
        let inner = with_matches(&config, "eu.gcr.io/a/b", |_| {
            remembered(&config, "harbor.example.com:8443/t/a")
        });
        assert_eq!(inner.expect("valid").registries.as_slice(), &[(1, 0)]);
    }

    #[test]
    fn the_memo_stays_bounded() {
        let config = config(TWO_REGISTRIES);
        for i in 0..CAPACITY * 2 + 7 {
            assert!(remembered(&config, &format!("eu.gcr.io/acme/svc-{i}:1")).is_ok());
            let held = MEMO.with(|memo| memo.borrow().images.len());
            assert!((1..=CAPACITY).contains(&held), "{held} images after {i}");
        }
    }

    #[test]
    fn a_long_valid_image_is_answered_but_not_remembered() {
        let config = config(TWO_REGISTRIES);
        forget_on_this_thread();
        // Valid: distribution bounds no digest but sha256's.
        let long = format!("eu.gcr.io/acme/api@sha512:{}", "a".repeat(100_000));
        assert_eq!(remembered(&config, &long), classify(&config, &long));
        assert_eq!(
            remembered(&config, &long).expect("valid").registries.len(),
            2
        );
        let held = MEMO.with(|memo| memo.borrow().images.len());
        assert_eq!(held, 0, "a {} byte image was kept", long.len());
    }
}
