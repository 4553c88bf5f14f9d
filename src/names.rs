//! Kubernetes object-name rules, as the API server's validation states them: one place for the
//! config's names and the review envelope's.

/// A DNS-1123 label (a namespace name): at most 63 of `[a-z0-9-]`, starting and ending
/// alphanumeric.
pub(crate) fn is_dns1123_label(text: &str) -> bool {
    text.len() <= 63 && is_label_shaped(text)
}

/// A DNS-1123 subdomain (a Pod or Secret name): at most 253 characters of label-shaped parts joined
/// by dots. The API server sets no length on the parts.
pub(crate) fn is_dns1123_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_label_shaped)
}

fn is_label_shaped(part: &str) -> bool {
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = part.as_bytes();
    bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_the_dns1123_label_rule() {
        let cases: &[(&str, bool)] = &[
            ("team-a", true),
            ("a", true),
            ("0", true),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
            ("kube%2Dsystem", false),
            ("team-a/secrets?fieldSelector=x", false),
            ("a/b", false),
            ("a?b", false),
            ("Team-A", false),
            ("-a", false),
            ("a-", false),
            ("a.b", false),
            ("a_b", false),
            ("", false),
            ("ünicode", false),
        ];
        for (namespace, valid) in cases {
            assert_eq!(is_dns1123_label(namespace), *valid, "{namespace:?}");
        }
    }

    #[test]
    fn pod_names_follow_the_dns1123_subdomain_rule() {
        let cases: &[(&str, bool)] = &[
            ("web-0", true),
            ("web.example", true),
            // No per-label limit in the API server's subdomain rule, only the total.
            (&"a".repeat(253), true),
            (&"a".repeat(254), false),
            (&format!("{}.{}", "a".repeat(63), "b".repeat(63)), true),
            ("web..0", false),
            ("Web", false),
            ("web/0", false),
            (".web", false),
        ];
        for (name, valid) in cases {
            assert_eq!(is_dns1123_subdomain(name), *valid, "{name:?}");
        }
    }
}
