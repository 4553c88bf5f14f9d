//! The answer to a review, written straight into one buffer: a JSON Patch and an AdmissionReview
//! response are a few fixed keys around a few strings, and building the patch as `serde_json::Value`s
//! and serializing both through serde cost more allocations than the rest of the answer.

/// Appends `text` as a JSON string, quoted and escaped byte for byte as serde_json writes it:
/// `\"`, `\\`, the short escapes for backspace, form feed, newline, carriage return and tab, and
/// `\u00xx` for the other control characters. Runs between them are copied as they are.
pub fn string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut at = 0;
    loop {
        let stop = crate::json_reader::plain_run_end(bytes, at);
        out.extend_from_slice(&bytes[at..stop]);
        let Some(&b) = bytes.get(stop) else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            control => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(control >> 4)]);
                out.push(HEX[usize::from(control & 0xf)]);
            }
        }
        at = stop + 1;
    }
    out.push(b'"');
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
            "pullsecret-injector: added imagePullSecret \"gcr-pull\" (host pattern \"gcr.io\")",
            "seventeen bytes..\u{1f}",
        ];
        let every_ascii: String = (0..=0x7f_u8).map(char::from).collect();
        let texts: Vec<&str> = texts.into_iter().chain([every_ascii.as_str()]).collect();
        for &text in &texts {
            let mut out = Vec::new();
            string(&mut out, text);
            assert_eq!(serde_json::from_slice::<String>(&out).expect("json"), text);
            assert_eq!(out, serde_json::to_vec(text).expect("json"), "{text:?}");
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
