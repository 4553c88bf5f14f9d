//! The end of a patched answer, remembered per thread.
//!
//! Replicas of one Deployment get the same patch and the same warnings. After the review's uid, a
//! patched answer with no other warning than the added Secrets' depends on nothing but whether the
//! Pod's `imagePullSecrets` field is absent and, for each Secret added, its name, the host pattern
//! and the image that required it. That text (the patch in base64 and the escaped warnings) is built
//! once per thread and copied after the uid from then on.
//!
//! - The key is those inputs written out in full, each with its length before it: an entry is only
//!   ever used for the inputs it was built from, under any configuration.
//! - An entry whose key and text together pass [`MAX_ENTRY_BYTES`] is built, used and not kept.
//! - One small map per thread, so no worker writes memory another reads. It holds at most
//!   [`CAPACITY`] entries and starts over when full.

use std::cell::RefCell;
use std::sync::Arc;

use foldhash::HashMap;

/// Entries kept per thread, at most. With [`MAX_ENTRY_BYTES`] and at most ten warnings of 120
/// characters each, a full map stays under a megabyte.
pub const CAPACITY: usize = 128;

/// The largest key and text kept together, in bytes; a typical entry is a few hundred.
pub const MAX_ENTRY_BYTES: usize = 4096;

/// What follows the uid in a patched answer, and the warnings it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub text: Box<[u8]>,
    pub warnings: Arc<[String]>,
}

/// Calls `use_tail` with the tail for the key `write_key` writes: this thread's remembered one, or
/// the one `build` makes (kept unless too large). `write_key` must write every input `build` reads.
pub fn with_tail<R>(
    write_key: impl FnOnce(&mut Vec<u8>),
    build: impl FnOnce() -> Tail,
    use_tail: impl FnOnce(&Tail) -> R,
) -> R {
    MEMO.with(|memo| {
        // A call from inside `build` or `use_tail`, or under `without_memo`, finds the memo
        // borrowed and goes without it.
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return use_tail(&build());
        };
        let Memo { key, tails } = &mut *memo;
        key.clear();
        write_key(key);
        if key.len() > MAX_ENTRY_BYTES {
            // No entry has so long a key, and the buffer is not kept at the size of the longest
            // request's key (images are not bounded in length).
            *key = Vec::new();
            return use_tail(&build());
        }
        if let Some(tail) = tails.get(key.as_slice()) {
            return use_tail(tail);
        }
        let tail = build();
        if key.len() + tail.text.len() > MAX_ENTRY_BYTES {
            return use_tail(&tail);
        }
        if tails.len() >= CAPACITY {
            tails.clear();
        }
        use_tail(tails.entry(key.as_slice().into()).or_insert(tail))
    })
}

/// Appends `text` to a key, its length first, so that no two lists of texts write the same key.
pub fn push_key_part(key: &mut Vec<u8>, text: &str) {
    key.extend_from_slice(&(text.len() as u64).to_le_bytes());
    key.extend_from_slice(text.as_bytes());
}

/// Runs `f` with this thread's memo out of use: every tail asked for inside is built afresh and not
/// kept (for checking remembered answers against fresh ones).
pub fn without_memo<R>(f: impl FnOnce() -> R) -> R {
    MEMO.with(|memo| {
        // Held for the length of `f`: `with_tail` then finds the memo borrowed and goes without it.
        let _held = memo.try_borrow_mut();
        f()
    })
}

/// Empties this thread's memo (for measuring the path without it).
pub fn forget_on_this_thread() {
    MEMO.with(|memo| {
        if let Ok(mut memo) = memo.try_borrow_mut() {
            memo.tails.clear();
        }
    });
}

struct Memo {
    /// The key being looked up, kept to write the next one without an allocation.
    key: Vec<u8>,
    tails: HashMap<Box<[u8]>, Tail>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo {
        key: Vec::new(),
        tails: HashMap::default(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(text: &str, warnings: &[&str]) -> Tail {
        Tail {
            text: text.as_bytes().into(),
            warnings: warnings.iter().map(|w| w.to_string()).collect(),
        }
    }

    fn key_of(parts: &[&str]) -> Vec<u8> {
        let mut key = Vec::new();
        for part in parts {
            push_key_part(&mut key, part);
        }
        key
    }

    /// The tail for `parts`, and whether `build` ran.
    fn looked_up(parts: &[&str], made: &str) -> (Tail, bool) {
        let mut built = false;
        let tail = with_tail(
            |key| key.extend_from_slice(&key_of(parts)),
            || {
                built = true;
                tail(made, &[made])
            },
            Tail::clone,
        );
        (tail, built)
    }

    #[test]
    fn a_tail_is_built_once_and_then_remembered() {
        forget_on_this_thread();
        assert_eq!(
            looked_up(&["a", "b"], "first"),
            (tail("first", &["first"]), true)
        );
        assert_eq!(
            looked_up(&["a", "b"], "second"),
            (tail("first", &["first"]), false)
        );
    }

    #[test]
    fn keys_made_of_the_same_bytes_in_other_parts_differ() {
        forget_on_this_thread();
        let lists: [&[&str]; 5] = [&["ab", "c"], &["a", "bc"], &["abc"], &["abc", ""], &[]];
        for (i, parts) in lists.iter().enumerate() {
            let (found, built) = looked_up(parts, &i.to_string());
            assert!(built, "{parts:?} found the entry of another key");
            assert_eq!(found, tail(&i.to_string(), &[&i.to_string()]));
        }
    }

    #[test]
    fn a_large_entry_is_used_but_not_kept() {
        forget_on_this_thread();
        let long = "x".repeat(MAX_ENTRY_BYTES);
        assert!(looked_up(&["big"], &long).1);
        assert!(looked_up(&["big"], &long).1, "a large entry was kept");
        let held = MEMO.with(|memo| memo.borrow().tails.len());
        assert_eq!(held, 0);
    }

    #[test]
    fn a_long_key_is_answered_and_its_buffer_not_kept() {
        forget_on_this_thread();
        let long = "k".repeat(100_000);
        assert_eq!(looked_up(&[&long], "t"), (tail("t", &["t"]), true));
        assert!(
            looked_up(&[&long], "t").1,
            "an entry with a long key was kept"
        );
        let (held, buffer) = MEMO.with(|memo| {
            let memo = memo.borrow();
            (memo.tails.len(), memo.key.capacity())
        });
        assert_eq!(held, 0);
        assert!(
            buffer <= MAX_ENTRY_BYTES,
            "a key buffer of {buffer} bytes was kept"
        );
    }

    #[test]
    fn the_memo_stays_bounded_and_right() {
        forget_on_this_thread();
        for pass in 0..2 {
            for i in 0..CAPACITY * 2 + 5 {
                let name = i.to_string();
                let (found, _) = looked_up(&[&name], &name);
                assert_eq!(found, tail(&name, &[&name]), "pass {pass}: entry {i}");
                let held = MEMO.with(|memo| memo.borrow().tails.len());
                assert!((1..=CAPACITY).contains(&held), "{held} entries after {i}");
            }
        }
    }

    #[test]
    fn without_the_memo_every_tail_is_built_and_none_kept() {
        forget_on_this_thread();
        assert!(looked_up(&["kept"], "kept").1);
        without_memo(|| {
            assert_eq!(
                looked_up(&["kept"], "fresh"),
                (tail("fresh", &["fresh"]), true)
            );
            assert!(looked_up(&["new"], "new").1);
            assert!(looked_up(&["new"], "new").1);
        });
        assert_eq!(looked_up(&["kept"], "x"), (tail("kept", &["kept"]), false));
        assert!(
            looked_up(&["new"], "new").1,
            "a tail made without the memo was kept"
        );
    }

    #[test]
    fn a_lookup_from_inside_build_is_answered_too() {
        forget_on_this_thread();
        let inner = with_tail(
            |key| push_key_part(key, "outer"),
            || looked_up(&["inner"], "inner").0,
            Tail::clone,
        );
        assert_eq!(inner, tail("inner", &["inner"]));
    }
}
