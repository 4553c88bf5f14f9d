//! Shared by the benches and the load client.

/// Removes the whitespace outside strings: fixtures are pretty-printed, the API server sends compact
/// JSON (Go's `json.Marshal`). Key order is kept, unlike a round trip through `serde_json::Value`.
pub fn compact(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !b.is_ascii_whitespace() {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    out
}
