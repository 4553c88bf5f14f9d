//! The answer to a review, written straight into one buffer: a JSON Patch and an AdmissionReview
//! response are a few fixed keys around a few strings, and building the patch as `serde_json::Value`s
//! and serializing both through serde cost more allocations than the rest of the answer.

/// Appends `text` as a JSON string (quoted and escaped as serde_json escapes it).
pub fn string(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail, and a str always serializes.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Appends `items` as a JSON array of strings.
pub fn string_array<S: AsRef<str>>(out: &mut Vec<u8>, items: &[S]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, item.as_ref());
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_arrays_read_back_as_written() {
        let texts = [
            "",
            "plain",
            "quote \" backslash \\ newline \n tab \t",
            "\u{0}\u{1f}\u{7f}",
            "caf\u{e9} \u{1f680}",
        ];
        for text in texts {
            let mut out = Vec::new();
            string(&mut out, text);
            assert_eq!(serde_json::from_slice::<String>(&out).expect("json"), text);
        }
        let mut out = Vec::new();
        string_array(&mut out, &texts);
        assert_eq!(
            serde_json::from_slice::<Vec<String>>(&out).expect("json"),
            texts
        );
        let mut out = Vec::new();
        string_array::<&str>(&mut out, &[]);
        assert_eq!(out, b"[]");
    }
}
