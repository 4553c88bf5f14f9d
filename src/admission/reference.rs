//! Container image references and registry host patterns, read the way the kubelet reads them:
//! a Secret must be injected exactly when the kubelet would use its credentials for an image.
//!
//! [`ImageReference::parse`] follows the kubelet's `ParseImageName` (distribution/reference v0.6
//! `ParseNormalizedNamed`, go-digest v1.0); [`HostPattern::matches`] follows its keyring
//! (`pkg/credentialprovider`: `URLsMatchStr(key, Name())` and the Docker Hub fallback).

use std::borrow::Cow;
use std::fmt;

/// The registry that references without a domain resolve to.
const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name; distribution rewrites it to [`DOCKER_HUB`].
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
/// Prefix distribution adds to single-component Docker Hub paths ("nginx" → "library/nginx").
const OFFICIAL_PREFIX: &str = "library/";
/// distribution/reference `RepositoryNameTotalLengthMax`; since v0.6.0 it bounds the path only.
const PATH_MAX: usize = 255;
/// The keyring key of the kubelet's Docker Hub fallback (`defaultRegistryHost`).
const DEFAULT_REGISTRY_KEY: &str = "index.docker.io";

/// A parsed image reference, borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference<'a> {
    /// `host[:port]` as written; "docker.io" when the reference has none or "index.docker.io".
    ///
    /// "my_registry.corp.example.com/app", invalid as a host only for its '_', starts a
    /// domain-less path for distribution, but the kubelet reads it as the host of `Name()`.
    pub domain: &'a str,
    /// `domain` without the port; an IPv6 address without its brackets.
    pub host: &'a str,
    /// Digits only.
    pub port: Option<&'a str>,
    /// Repository path as written, e.g. "nginx" (NOT prefixed with "library/"), "acme/app".
    pub path: &'a str,
    pub tag: Option<&'a str>,
    /// "sha256:…", "sha384:…" or "sha512:…".
    pub digest: Option<&'a str>,
}

impl<'a> ImageReference<'a> {
    /// Parses `name[:tag][@digest]`, accepting exactly what the kubelet could pull, so that an
    /// image it would refuse is reported instead of silently matched.
    pub fn parse(input: &'a str) -> Result<Self, ReferenceError> {
        let owned = || input.to_owned();
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ReferenceError::Whitespace { input: owned() });
        }
        if input.contains("://") {
            return Err(ReferenceError::Scheme { input: owned() });
        }
        // `anchoredIdentifierRegexp`: a bare image ID is not a pullable name.
        if input.len() == 64 && is_lower_hex(input) {
            return Err(ReferenceError::ImageId { input: owned() });
        }

        // '@' occurs nowhere else, and the digest has a ':' of its own: split it off first.
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (input, None),
        };
        if let Some(digest) = digest.filter(|digest| !is_digest(digest)) {
            return Err(ReferenceError::InvalidDigest {
                input: owned(),
                digest: digest.into(),
            });
        }
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (rest, None),
        };
        if let Some(tag) = tag.filter(|tag| !is_tag(tag)) {
            return Err(ReferenceError::InvalidTag {
                input: owned(),
                tag: tag.into(),
            });
        }
        if name.is_empty() {
            return Err(ReferenceError::MissingName { input: owned() });
        }

        // `domain_in_path`: distribution's path holds the domain too (see `domain`).
        let (written_domain, path) = split_docker_domain(name);
        let (domain, host, port, domain_in_path) = match written_domain {
            None | Some(LEGACY_DOCKER_HUB) => (DOCKER_HUB, DOCKER_HUB, None, false),
            Some(domain) => match split_domain(domain) {
                Some((host, port)) => (domain, host, port, false),
                None if is_path_component(domain) => (domain, domain, None, true),
                None => {
                    return Err(ReferenceError::InvalidDomain {
                        input: owned(),
                        domain: domain.into(),
                    });
                }
            },
        };
        // Checked before the component grammar, as `ParseNormalizedNamed` does, so "acme/App"
        // gets the message that tells the user what to change.
        if path.chars().any(char::is_uppercase) {
            return Err(ReferenceError::Uppercase {
                input: owned(),
                path: path.into(),
            });
        }
        if let Some(component) = path.split('/').find(|c| !is_path_component(c)) {
            return Err(ReferenceError::InvalidPathComponent {
                input: owned(),
                component: component.into(),
            });
        }

        let reference = ImageReference {
            domain,
            host,
            port,
            path,
            tag,
            digest,
        };
        // The 255 limit is on distribution's path: "library/nginx", or the whole name.
        let length = if domain_in_path {
            name.len()
        } else {
            reference.normalized_path().len()
        };
        if length > PATH_MAX {
            return Err(ReferenceError::NameTooLong {
                input: owned(),
                length,
            });
        }
        Ok(reference)
    }

    /// The normalized name, e.g. "docker.io/library/nginx": distribution's `Name()`, which the
    /// kubelet looks credentials up for (per repository: no tag or digest).
    pub fn normalized_name(&self) -> String {
        self.to_string()
    }

    /// True when the image is pulled from Docker Hub: domain "docker.io", which covers familiar
    /// names ("nginx", "acme/app") and "index.docker.io/...".
    pub fn is_docker_hub(&self) -> bool {
        self.domain == DOCKER_HUB
    }

    /// The repository path as the kubelet sees it: "library/nginx" for "nginx" on Docker Hub,
    /// else `path`. Allocates only for that "library/" prefix.
    pub fn normalized_path(&self) -> Cow<'a, str> {
        if self.is_docker_hub() && !self.path.contains('/') {
            Cow::Owned(format!("{OFFICIAL_PREFIX}{}", self.path))
        } else {
            Cow::Borrowed(self.path)
        }
    }
}

/// The normalized name, as [`ImageReference::normalized_name`].
impl fmt::Display for ImageReference<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.normalized_path())
    }
}

/// Why an image reference is not one the kubelet could pull. Every message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {input:?}: it contains whitespace or a control character")]
    Whitespace { input: String },
    #[error("invalid image reference {input:?}: drop the URL scheme (\"://\"): write host/path")]
    Scheme { input: String },
    #[error("invalid image reference {input:?}: an image ID (64 hex digits) cannot be pulled")]
    ImageId { input: String },
    #[error("invalid image reference {input:?}: the repository name is missing")]
    MissingName { input: String },
    #[error(
        "invalid image reference {input:?}: registry {domain:?} is not a valid host[:port] (DNS labels of letters, digits and inner '-', an IPv4 address or an IPv6 address in brackets; a port of digits)"
    )]
    InvalidDomain { input: String, domain: String },
    #[error("invalid image reference {input:?}: repository name {path:?} must be lowercase")]
    Uppercase { input: String, path: String },
    #[error(
        "invalid image reference {input:?}: path component {component:?} must be runs of a-z and 0-9 joined by '.', '_', '__' or dashes (a leading, trailing or doubled '/' leaves it empty)"
    )]
    InvalidPathComponent { input: String, component: String },
    /// `length` is distribution's path: "library/" included for official Docker Hub images,
    /// the registry excluded (unless it is part of the path, see [`ImageReference::domain`]).
    #[error(
        "invalid image reference {input:?}: the repository path is {length} characters long; at most 255 are allowed"
    )]
    NameTooLong { input: String, length: usize },
    #[error(
        "invalid image reference {input:?}: tag {tag:?} must be 1 to 128 of A-Z, a-z, 0-9, '_', '.', '-' and must not start with '.' or '-'"
    )]
    InvalidTag { input: String, tag: String },
    #[error(
        "invalid image reference {input:?}: digest {digest:?} is not one the kubelet accepts: sha256, sha384 or sha512, ':', then 64, 96 or 128 lowercase hex characters"
    )]
    InvalidDigest { input: String, digest: String },
}

/// A credential key as the kubelet keyring reads it: "gcr.io", "*.gcr.io", "*-docker.pkg.dev",
/// "docker.*.rep.pkg.dev", "registry.example.com:5000", "gcr.io/my-project". Kept in the form
/// `BasicDockerKeyring.Add` gives a dockerconfigjson auths key, which parses to itself again, so
/// the key this webhook writes is the key the kubelet matches with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Canonical text `host[:port][/path]`, IPv6 hosts in brackets.
    text: String,
    /// The host glob; an IPv6 address without brackets, as `net.SplitHostPort` leaves it.
    host: String,
    port: Option<String>,
    /// Path prefix ("/my-project"), "" when there is none.
    path: String,
}

impl HostPattern {
    /// Parses and canonicalizes a key as `BasicDockerKeyring.Add` does (scheme, one leading
    /// "/v1/" or "/v2/" and a bare "/" removed). Refuses keys the kubelet would keep but never
    /// match as written, so a mistake shows at load time, not as a Pod without its Secret.
    pub fn parse(input: &str) -> Result<Self, PatternError> {
        let owned = || input.to_owned();
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PatternError::Whitespace { input: owned() });
        }
        // The kubelet strips only these two, lowercase, prefixes; anything else stays in the key.
        let rest = input
            .strip_prefix("https://")
            .or_else(|| input.strip_prefix("http://"))
            .unwrap_or(input);
        if rest.contains("://") {
            return Err(PatternError::UnsupportedScheme { input: owned() });
        }
        // The kubelet reads keys with Go's url.Parse, where '?' starts a query and '#' a
        // fragment: "gcr.i?" becomes the key "gcr.i", so '?' never works as a wildcard there.
        if let Some(ch) = rest.chars().find(|c| matches!(c, '?' | '#')) {
            return Err(PatternError::QueryOrFragment { input: owned(), ch });
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = pattern_host_port(input, authority)?;
        let path = pattern_path(input, path)?;
        Ok(HostPattern {
            text: format!("{authority}{path}"),
            host: host.to_owned(),
            port: port.map(str::to_owned),
            path: path.to_owned(),
        })
    }

    /// Canonical text (scheme stripped), used as the dockerconfigjson auths key.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the kubelet would offer this key's credentials for `image`: `URLsMatch` on its
    /// normalized name, or the Docker Hub fallback (which the kubelet uses only when no other
    /// key matched; choosing a Secret needs the answer for one key on its own).
    pub fn matches(&self, image: &ImageReference<'_>) -> bool {
        // isDefaultRegistryMatch. The kubelet also takes portless single-word domains
        // ("localhost/app"): that would hand Docker Hub credentials to another registry.
        if self.text == DEFAULT_REGISTRY_KEY && image.is_docker_hub() {
            return true;
        }
        // Go's net.SplitHostPort strips IPv6 brackets only when a port follows; without one
        // the kubelet compares the bracketed text.
        let host = if image.port.is_none() && image.domain.starts_with('[') {
            image.domain
        } else {
            image.host
        };
        // The image URL's path is "/" + the normalized path, and the key's path must be a plain
        // string prefix of it (`strings.HasPrefix`): "/proj" also matches "/project2/app".
        let path_matches = match self.path.strip_prefix('/') {
            Some(prefix) => image.normalized_path().starts_with(prefix),
            None => true,
        };
        self.port.as_deref() == image.port && host_matches(&self.host, host) && path_matches
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a host pattern is not usable as a kubelet credential key. Every message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("invalid host pattern {input:?}: it contains whitespace or a control character")]
    Whitespace { input: String },
    #[error("invalid host pattern {input:?}: only an http:// or https:// scheme may be given")]
    UnsupportedScheme { input: String },
    #[error(
        "invalid host pattern {input:?}: {ch:?} is not allowed; the kubelet reads the key as a URL, where '?' starts a query and '#' a fragment, so it is cut off there (use '*' as the wildcard)"
    )]
    QueryOrFragment { input: String, ch: char },
    #[error(
        "invalid host pattern {input:?}: the host is empty or has an empty label (a leading, trailing or doubled '.')"
    )]
    EmptyLabel { input: String },
    #[error(
        "invalid host pattern {input:?}: {ch:?} is not allowed in a host; use letters, digits, '-', '_', '.' and the only wildcard, '*' (no character classes or escapes)"
    )]
    BadHostCharacter { input: String, ch: char },
    #[error(
        "invalid host pattern {input:?}: a host starting with '[' must be an IPv6 address (hex digits and ':') in brackets followed by :port; without a port the kubelet reads the brackets as a glob character class and never matches"
    )]
    BadIpv6 { input: String },
    #[error("invalid host pattern {input:?}: port {port:?} must be digits (no wildcards)")]
    BadPort { input: String, port: String },
    #[error(
        "invalid host pattern {input:?}: {ch:?} is not allowed in a path; the kubelet compares paths as plain prefixes of lowercase repository names (a-z, 0-9, '.', '_', '-', '/')"
    )]
    BadPathCharacter { input: String, ch: char },
    #[error("invalid host pattern {input:?}: the path has an empty segment (a doubled '/')")]
    EmptyPathSegment { input: String },
    #[error(
        "invalid host pattern {input:?}: more than one leading /v1/ or /v2/; the kubelet strips one each time it reads the key, so it would not stay the same"
    )]
    NestedApiVersion { input: String },
}

/// distribution's `splitDockerDomain`: the first component is a registry only if it looks like
/// one, because Docker Hub user names ("acme/app") share the syntax.
fn split_docker_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.chars().any(char::is_uppercase) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// distribution's `domainAndPort` (domain name or IPv4, or IPv6 in brackets; optional port of
/// digits), split into the host without brackets and the port; `None` if it is not one.
fn split_domain(domain: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = match domain.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (is_ipv6(address).then_some(address)?, port)
        }
        None => {
            let (host, port) = match domain.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (domain, None),
            };
            let valid = host.split('.').all(is_domain_component);
            (valid.then_some(host)?, port)
        }
    };
    port.is_none_or(is_port).then_some((host, port))
}

/// distribution's `ipv6address` between the brackets: `[a-fA-F0-9:]+`.
fn is_ipv6(address: &str) -> bool {
    !address.is_empty() && address.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
}

/// `[a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_domain_component(component: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_alphanumeric();
    component.starts_with(alphanumeric)
        && component.ends_with(alphanumeric)
        && component.chars().all(|c| alphanumeric(c) || c == '-')
}

fn is_port(port: &str) -> bool {
    !port.is_empty() && port.chars().all(|c| c.is_ascii_digit())
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with separator := "." | "_" | "__" | "-"+. Splitting at
/// every `[a-z0-9]` leaves the separators (and empty strings between adjacent characters).
fn is_path_component(component: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    component.starts_with(alphanumeric)
        && component.ends_with(alphanumeric)
        && component.split(alphanumeric).all(|separator| {
            matches!(separator, "." | "_" | "__") || separator.chars().all(|c| c == '-')
        })
}

/// `[\w][\w.-]{0,127}`, where Go's `\w` is ASCII `[0-9A-Za-z_]`.
fn is_tag(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    tag.len() <= 128
        && tag.starts_with(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-')
}

/// go-digest v1.0 `Digest.Validate` with the algorithms it knows (and the kubelet links in):
/// sha256, sha384 and sha512, each with its exact length of lowercase hex.
fn is_digest(digest: &str) -> bool {
    let (encoded, length) = match digest.split_once(':') {
        Some(("sha256", encoded)) => (encoded, 64),
        Some(("sha384", encoded)) => (encoded, 96),
        Some(("sha512", encoded)) => (encoded, 128),
        _ => return false,
    };
    encoded.len() == length && is_lower_hex(encoded)
}

fn is_lower_hex(text: &str) -> bool {
    text.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// A pattern's `host[:port]`, checked so that the host is a glob of labels the kubelet can
/// match: letters, digits, '-', '_' (Go's url.Parse accepts it in hosts) and '*'.
fn pattern_host_port<'a>(
    input: &str,
    authority: &'a str,
) -> Result<(&'a str, Option<&'a str>), PatternError> {
    let owned = || input.to_owned();
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed
            .split_once(']')
            .and_then(|(address, after)| Some((address, Some(after.strip_prefix(':')?))))
            .filter(|(address, _)| is_ipv6(address))
            .ok_or_else(|| PatternError::BadIpv6 { input: owned() })?
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.');
        if let Some(ch) = host.chars().find(|&c| !allowed(c)) {
            return Err(PatternError::BadHostCharacter { input: owned(), ch });
        }
        if host.split('.').any(str::is_empty) {
            return Err(PatternError::EmptyLabel { input: owned() });
        }
        (host, port)
    };
    if let Some(port) = port.filter(|port| !is_port(port)) {
        return Err(PatternError::BadPort {
            input: owned(),
            port: port.into(),
        });
    }
    Ok((host, port))
}

/// A pattern's path as the kubelet's `Add` keeps it: one leading "/v1/" or "/v2/" names the
/// registry API, not a repository, and a path of just "/" means none.
fn pattern_path<'a>(input: &str, path: &'a str) -> Result<&'a str, PatternError> {
    let owned = || input.to_owned();
    let has_api_version = |path: &str| path.starts_with("/v1/") || path.starts_with("/v2/");
    let path = if has_api_version(path) {
        &path[3..]
    } else {
        path
    };
    if path == "/" {
        return Ok("");
    }
    if has_api_version(path) {
        return Err(PatternError::NestedApiVersion { input: owned() });
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
    if let Some(ch) = path.chars().find(|&c| !allowed(c)) {
        return Err(PatternError::BadPathCharacter { input: owned(), ch });
    }
    if path.contains("//") {
        return Err(PatternError::EmptyPathSegment { input: owned() });
    }
    Ok(path)
}

/// `URLsMatch` on hosts: as many '.'-separated labels on both sides, each matching its glob.
fn host_matches(pattern: &str, host: &str) -> bool {
    pattern.split('.').count() == host.split('.').count()
        && pattern
            .split('.')
            .zip(host.split('.'))
            .all(|(glob, label)| glob_label(glob, label))
}

/// Go `filepath.Match` for globs whose only metacharacter is `*` (any run of characters; a label
/// has no '/'). Case-sensitive. The text before the first '*' starts the label, the text after
/// the last ends it, and each piece between is taken as early as possible, which leaves the
/// most room for the rest: greedy search never misses a match.
fn glob_label(glob: &str, label: &str) -> bool {
    let pieces: Vec<&str> = glob.split('*').collect();
    let [first, middle @ .., last] = pieces.as_slice() else {
        return glob == label; // no '*'
    };
    let Some(mut rest) = label.strip_prefix(first) else {
        return false;
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 lowercase hex characters: a sha256 encoding or, alone, an image ID.
    macro_rules! hex64 {
        () => {
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        };
    }
    /// 32 lowercase hex characters.
    macro_rules! hex32 {
        () => {
            "fedcba9876543210fedcba9876543210"
        };
    }

    /// A runtime-built input with the `'static` lifetime the tables use.
    fn leak(text: String) -> &'static str {
        Box::leak(text.into_boxed_str())
    }

    fn a(n: usize) -> String {
        "a".repeat(n)
    }

    /// Expected fields `[domain, host, port, path, tag, digest]` ("" for `None`), or the name of
    /// the expected error variant.
    type Want = Result<[&'static str; 6], &'static str>;

    /// A Docker Hub reference: `[docker.io, docker.io, "", path, tag, digest]`.
    fn hub(path: &'static str, tag: &'static str, digest: &'static str) -> Want {
        Ok([DOCKER_HUB, DOCKER_HUB, "", path, tag, digest])
    }

    #[rustfmt::skip]
    fn parse_cases() -> Vec<(&'static str, Want)> {
        let sha256 = concat!("sha256:", hex64!());
        vec![
            // Error variants merged since the old implementation: its Empty, InvalidPort,
            // EmptyPathComponent, EmptyTag and EmptyDigest are now MissingName, InvalidDomain,
            // InvalidPathComponent, InvalidTag and InvalidDigest.

            // distribution/reference reference_test.go TestReferenceParse. It calls `Parse`;
            // the kubelet calls `ParseNormalizedNamed`, so familiar names gain docker.io here.
            ("test_com", hub("test_com", "", "")),
            ("test.com:tag", hub("test.com", "tag", "")),
            ("test.com:5000", hub("test.com", "5000", "")),
            ("test.com/repo:tag", Ok(["test.com", "test.com", "", "repo", "tag", ""])),
            ("test:5000/repo", Ok(["test:5000", "test", "5000", "repo", "", ""])),
            (concat!("test:5000/repo@sha256:", hex64!()), Ok(["test:5000", "test", "5000", "repo", "", sha256])),
            (concat!("test:5000/repo:tag@sha256:", hex64!()), Ok(["test:5000", "test", "5000", "repo", "tag", sha256])),
            ("", Err("MissingName")),
            (":justtag", Err("MissingName")),
            (concat!("@sha256:", hex64!()), Err("MissingName")),
            ("repo@sha256:ffffffffffffffffffffffffffffffffff", Err("InvalidDigest")),
            (concat!("validname@invaliddigest:", hex64!()), Err("InvalidDigest")),
            ("Uppercase:tag", Err("Uppercase")),
            ("test:5000/Uppercase/lowercase:tag", Err("Uppercase")),
            ("lowercase:Uppercase", hub("lowercase", "Uppercase", "")),
            // Normalized, "a" is no domain: the whole 257-character name is a Docker Hub path.
            (leak("a/".repeat(128) + "a:tag"), Err("NameTooLong")),
            (leak("a/".repeat(127) + "a:tag-puts-this-over-max"), hub(leak("a/".repeat(127) + "a"), "tag-puts-this-over-max", "")),
            ("aa/asdf$$^/aa", Err("InvalidPathComponent")),
            ("sub-dom1.foo.com/bar/baz/quux", Ok(["sub-dom1.foo.com", "sub-dom1.foo.com", "", "bar/baz/quux", "", ""])),
            ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", Ok(["sub-dom1.foo.com", "sub-dom1.foo.com", "", "bar/baz/quux", "some-long-tag", ""])),
            ("b.gcr.io/test.example.com/my-app:test.example.com", Ok(["b.gcr.io", "b.gcr.io", "", "test.example.com/my-app", "test.example.com", ""])),
            ("xn--n3h.com/myimage:xn--n3h.com", Ok(["xn--n3h.com", "xn--n3h.com", "", "myimage", "xn--n3h.com", ""])),
            (concat!("xn--7o8h.com/myimage:xn--7o8h.com@sha512:", hex64!(), hex64!()), Ok(["xn--7o8h.com", "xn--7o8h.com", "", "myimage", "xn--7o8h.com", concat!("sha512:", hex64!(), hex64!())])),
            ("foo_bar.com:8080", hub("foo_bar.com", "8080", "")),
            ("foo/foo_bar.com:8080", hub("foo/foo_bar.com", "8080", "")),
            ("192.168.1.1", hub("192.168.1.1", "", "")),
            ("192.168.1.1:tag", hub("192.168.1.1", "tag", "")),
            ("192.168.1.1:5000", hub("192.168.1.1", "5000", "")),
            ("192.168.1.1/repo", Ok(["192.168.1.1", "192.168.1.1", "", "repo", "", ""])),
            ("192.168.1.1:5000/repo:5050", Ok(["192.168.1.1:5000", "192.168.1.1", "5000", "repo", "5050", ""])),
            ("[2001:db8::1]", Err("InvalidTag")),
            ("[2001:db8::1]:5000", Err("InvalidPathComponent")),
            ("[2001:db8::1]:tag", Err("InvalidPathComponent")),
            ("[2001:db8::1]/repo", Ok(["[2001:db8::1]", "2001:db8::1", "", "repo", "", ""])),
            ("[2001:db8:1:2:3:4:5:6]/repo:tag", Ok(["[2001:db8:1:2:3:4:5:6]", "2001:db8:1:2:3:4:5:6", "", "repo", "tag", ""])),
            (concat!("[2001:db8::1]:5000/repo:tag@sha256:", hex64!()), Ok(["[2001:db8::1]:5000", "2001:db8::1", "5000", "repo", "tag", sha256])),
            ("[2001:db8::]:5000/repo", Ok(["[2001:db8::]:5000", "2001:db8::", "5000", "repo", "", ""])),
            ("[::1]:5000/repo", Ok(["[::1]:5000", "::1", "5000", "repo", "", ""])),
            ("[fe80::1%eth0]:5000/repo", Err("InvalidDomain")),
            ("[fe80::1%@invalidzone]:5000/repo", Err("InvalidDigest")),

            // distribution/reference normalize_test.go TestValidateReferenceName,
            // TestValidateRemoteName and TestNormalizedSplitHostname.
            ("docker/docker", hub("docker/docker", "", "")),
            ("index.docker.io/library/debian", hub("library/debian", "", "")),
            ("index.docker.io/debian", hub("debian", "", "")),
            ("127.0.0.1:5000/library/debian", Ok(["127.0.0.1:5000", "127.0.0.1", "5000", "library/debian", "", ""])),
            ("192.168.0.1:80", hub("192.168.0.1", "80", "")),
            ("192.168.0.1:8/debian", Ok(["192.168.0.1:8", "192.168.0.1", "8", "debian", "", ""])),
            ("thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", hub("thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "", "")),
            ("[fc00:1:2:3:4:5:6:7]:5000/library/debian", Ok(["[fc00:1:2:3:4:5:6:7]:5000", "fc00:1:2:3:4:5:6:7", "5000", "library/debian", "", ""])),
            (concat!("docker.io/", hex64!()), hub(hex64!(), "", "")),
            ("Docker/docker", Ok(["Docker", "Docker", "", "docker", "", ""])),
            ("DOCKER/docker", Ok(["DOCKER", "DOCKER", "", "docker", "", ""])),
            ("https://github.com/docker/docker", Err("Scheme")),
            ("docker/Docker", Err("Uppercase")),
            ("-docker", Err("InvalidPathComponent")),
            ("-docker/docker", Err("InvalidPathComponent")),
            ("-docker.io/docker/docker", Err("InvalidDomain")),
            ("docker///docker", Err("InvalidPathComponent")),
            ("docker.io/docker/Docker", Err("Uppercase")),
            ("[fc00::1]", Err("InvalidTag")),
            ("[fc00::1]:5000", Err("InvalidPathComponent")),
            ("fc00::1:5000/debian", Err("InvalidDomain")),
            ("[2001:db8:3:4::192.0.2.33]:5000/debian", Err("InvalidDomain")),
            (hex64!(), Err("ImageId")),
            ("docker---rules/docker", hub("docker---rules/docker", "", "")),
            ("d/docker", hub("d/docker", "", "")),
            ("dock__er/docker", hub("dock__er/docker", "", "")),
            ("docker-/docker", Err("InvalidPathComponent")),
            ("____/____", Err("InvalidPathComponent")),
            ("_docker/_docker", Err("InvalidPathComponent")),
            // A '.' makes the first component a would-be domain.
            ("dock..er/docker", Err("InvalidDomain")),
            ("dock_.er/docker", Err("InvalidDomain")),
            ("docker/", Err("InvalidPathComponent")),
            ("this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker", Err("NameTooLong")),
            ("test_com/foo", hub("test_com/foo", "", "")),
            ("xn--n3h.com:18080/foo", Ok(["xn--n3h.com:18080", "xn--n3h.com", "18080", "foo", "", ""])),

            // distribution/reference regexp_test.go TestDomainRegexp, TestFullNameRegexp and
            // TestReferenceRegexp (domains given a path to make them references).
            ("test.com:http/x", Err("InvalidDomain")),
            ("ab.c-om/x", Ok(["ab.c-om", "ab.c-om", "", "x", "", ""])),
            ("ab-.com/x", Err("InvalidDomain")),
            ("ab.-com/x", Err("InvalidDomain")),
            ("ab.com-/x", Err("InvalidDomain")),
            ("0101.com/x", Ok(["0101.com", "0101.com", "", "x", "", ""])),
            ("192.168.1.1:750050/x", Ok(["192.168.1.1:750050", "192.168.1.1", "750050", "x", "", ""])),
            ("[fd00:1:2::3]75050/x", Err("InvalidDomain")),
            ("[fd00:1:2::3]::75050/x", Err("InvalidDomain")),
            ("[fd00123123123]:75050/x", Ok(["[fd00123123123]:75050", "fd00123123123", "75050", "x", "", ""])),
            ("fd00:1:2::3:75050/x", Err("InvalidDomain")),
            ("foo_bar.com:8080/app", Err("InvalidDomain")),
            ("do__cker:8080/docker", Err("InvalidDomain")),
            ("bad_hostname.com:8080/myapp:tag", Err("InvalidDomain")),
            ("docker./docker", Err("InvalidDomain")),
            (".docker/docker", Err("InvalidDomain")),
            ("do..cker/docker", Err("InvalidDomain")),
            ("example.com/__underscore/myimage", Err("InvalidPathComponent")),
            ("example.com/.dots/myimage", Err("InvalidPathComponent")),
            ("example.com/some_separator__underscore/myimage", Ok(["example.com", "example.com", "", "some_separator__underscore/myimage", "", ""])),
            ("registry.io/foo/project--id.module--name.ver---sion--name", Ok(["registry.io", "registry.io", "", "foo/project--id.module--name.ver---sion--name", "", ""])),
            ("Asdf.com/foo/bar", Ok(["Asdf.com", "Asdf.com", "", "foo/bar", "", ""])),
            ("Foo/FarB", Err("Uppercase")),
            ("registry.com:8080/myapp@sha256:badbadbadbad", Err("InvalidDigest")),
            ("registry.com:8080/myapp:invalid~tag", Err("InvalidTag")),
            (concat!("localhost:8080@sha256:", hex64!()), hub("localhost", "8080", sha256)),
            (concat!("localhost:http/name@sha256:", hex64!()), Err("InvalidDomain")),
            (concat!("localhost@sha256:", hex64!()), hub("localhost", "", sha256)),
            ("registry.com:8080/myapp@2bad", Err("InvalidDigest")),

            // Underscore in the first component. regexp_test.go: "foo_bar.com" is a valid path
            // component, and with a port no name at all; reference_test.go TestDomainAndPath:
            // "test_com/foo" has domain "". So `ParseNormalizedNamed` returns a domain-less
            // name whose `Name()` is the input's name, and the kubelet's url.Parse of it yields
            // the host "my_registry.corp.example.com" (Go accepts '_' in hosts). The old
            // implementation refused all of these as InvalidDomain.
            ("my_registry.corp.example.com/app", Ok(["my_registry.corp.example.com", "my_registry.corp.example.com", "", "app", "", ""])),
            ("europe_west1-docker.pkg.dev/p/r/i:1.0", Ok(["europe_west1-docker.pkg.dev", "europe_west1-docker.pkg.dev", "", "p/r/i", "1.0", ""])),
            ("my_registry.corp.example.com:5000/app", Err("InvalidDomain")),
            ("My_Registry.example.com/app", Err("InvalidDomain")),
            ("my_registry.example.com/App", Err("Uppercase")),
            ("gcr_io.com/x", Ok(["gcr_io.com", "gcr_io.com", "", "x", "", ""])),
            // Its path is the whole name: at most 255 characters with the "domain".
            (leak(format!("my_reg.io/{}", a(245))), Ok(["my_reg.io", "my_reg.io", "", leak(a(245)), "", ""])),
            (leak(format!("my_reg.io/{}", a(246))), Err("NameTooLong")),

            // Length: distribution/reference v0.6.0 reference.go `Parse`,
            // `if len(repo.path) > RepositoryNameTotalLengthMax` (the path only; the old
            // implementation counted the normalized name, domain included).
            (leak(format!("gcr.io/{}", a(255))), Ok(["gcr.io", "gcr.io", "", leak(a(255)), "", ""])),
            (leak(format!("gcr.io/{}", a(256))), Err("NameTooLong")),
            (leak(format!("registry.example.com:5000/{}", a(255))), Ok(["registry.example.com:5000", "registry.example.com", "5000", leak(a(255)), "", ""])),
            (leak(a(247)), hub(leak(a(247)), "", "")),
            (leak(a(248)), Err("NameTooLong")),
            (leak(format!("docker.io/library/{}", a(247))), hub(leak(format!("library/{}", a(247))), "", "")),
            (leak(format!("acme/{}", a(250))), hub(leak(format!("acme/{}", a(250))), "", "")),
            (leak(format!("acme/{}", a(251))), Err("NameTooLong")),
            // Old implementation: NameTooLong from 238 characters on (18 for "docker.io/library/").
            (leak(a(238)), hub(leak(a(238)), "", "")),
            (leak(a(300)), Err("NameTooLong")),

            // Digests: go-digest v1.0.0 algorithm.go `anchoredEncodedRegexps` (sha256 64,
            // sha384 96, sha512 128 characters of [a-f0-9]) and digest.go `Validate` (any other
            // algorithm is ErrDigestUnsupported). The old implementation accepted any other
            // algorithm, or sha384/sha512 of another length, with 32 or more hex characters.
            (concat!("nginx@sha384:", hex64!(), hex32!()), hub("nginx", "", concat!("sha384:", hex64!(), hex32!()))),
            (concat!("nginx@sha512:", hex64!(), hex64!()), hub("nginx", "", concat!("sha512:", hex64!(), hex64!()))),
            (concat!("nginx@sha512:", hex64!()), Err("InvalidDigest")),
            (concat!("nginx@sha384:", hex64!()), Err("InvalidDigest")),
            (concat!("nginx@md5:", hex32!()), Err("InvalidDigest")),
            (concat!("nginx@blake3:", hex64!()), Err("InvalidDigest")),
            ("nginx@sha256+b64u:0123456789ABCDEF0123456789abcdef", Err("InvalidDigest")),
            ("nginx@", Err("InvalidDigest")),
            ("nginx@sha256", Err("InvalidDigest")),
            ("nginx@sha256:short", Err("InvalidDigest")),
            (concat!("nginx@SHA256:", hex64!()), Err("InvalidDigest")),
            ("nginx@sha256:0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF", Err("InvalidDigest")),
            ("nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde", Err("InvalidDigest")),
            (concat!("nginx@sha256:", hex64!(), "@x"), Err("InvalidDigest")),

            // Tags: regexp.go `tag = [\w][\w.-]{0,127}`.
            ("nginx:_tag", hub("nginx", "_tag", "")),
            ("nginx:V1.0-RC_2", hub("nginx", "V1.0-RC_2", "")),
            (concat!("nginx:", hex64!(), hex64!()), hub("nginx", concat!(hex64!(), hex64!()), "")),
            (concat!("nginx:", hex64!(), hex64!(), "0"), Err("InvalidTag")),
            // Old implementation: EmptyTag (merged into InvalidTag).
            ("nginx:", Err("InvalidTag")),
            ("nginx:.tag", Err("InvalidTag")),
            ("nginx:-tag", Err("InvalidTag")),
            ("nginx:t+g", Err("InvalidTag")),
            ("nginx:tä", Err("InvalidTag")),
            (concat!(hex64!(), ":latest"), hub(hex64!(), "latest", "")),

            // Carried over from the old implementation's tests.
            ("nginx", hub("nginx", "", "")),
            ("docker.io/library/nginx:latest", hub("library/nginx", "latest", "")),
            ("index.docker.io/acme/app", hub("acme/app", "", "")),
            ("docker.io:5000/nginx", Ok(["docker.io:5000", "docker.io", "5000", "nginx", "", ""])),
            ("foo_bar/baz__qux/a-b--c/d.e", hub("foo_bar/baz__qux/a-b--c/d.e", "", "")),
            ("localhost/app", Ok(["localhost", "localhost", "", "app", "", ""])),
            ("localhost:5000/x", Ok(["localhost:5000", "localhost", "5000", "x", "", ""])),
            ("localhost", hub("localhost", "", "")),
            ("localhost:5000", hub("localhost", "5000", "")),
            ("gcr.io/p/app", Ok(["gcr.io", "gcr.io", "", "p/app", "", ""])),
            ("europe-west1-docker.pkg.dev/p/r/img:2.4.1", Ok(["europe-west1-docker.pkg.dev", "europe-west1-docker.pkg.dev", "", "p/r/img", "2.4.1", ""])),
            ("docker.europe-west1.rep.pkg.dev/p/r/img", Ok(["docker.europe-west1.rep.pkg.dev", "docker.europe-west1.rep.pkg.dev", "", "p/r/img", "", ""])),
            ("[::1]:5000/app", Ok(["[::1]:5000", "::1", "5000", "app", "", ""])),
            ("[fe80::1]/app", Ok(["[fe80::1]", "fe80::1", "", "app", "", ""])),
            ("Registry.Example.com/app", Ok(["Registry.Example.com", "Registry.Example.com", "", "app", "", ""])),
            (concat!("eu.gcr.io/acme-prod/api@sha256:", hex64!()), Ok(["eu.gcr.io", "eu.gcr.io", "", "acme-prod/api", "", sha256])),
            (concat!("localhost:5000/app:v2@sha256:", hex64!()), Ok(["localhost:5000", "localhost", "5000", "app", "v2", sha256])),
            (" nginx", Err("Whitespace")),
            ("nginx:tag with space", Err("Whitespace")),
            ("nginx\t", Err("Whitespace")),
            ("nginx\u{a0}", Err("Whitespace")),
            ("https://gcr.io/x", Err("Scheme")),
            ("[::1/app", Err("InvalidDomain")),
            ("[::g]:5000/app", Err("InvalidDomain")),
            ("gcr..io/x", Err("InvalidDomain")),
            ("gcr.io./x", Err("InvalidDomain")),
            ("localhost:/app", Err("InvalidDomain")),
            ("localhost:50a/app", Err("InvalidDomain")),
            ("registry:5000:5001/app", Err("InvalidDomain")),
            ("nginx:1.0/x", Err("InvalidDomain")),
            ("Nginx", Err("Uppercase")),
            ("gcr.io/Acme/app", Err("Uppercase")),
            ("a/b/", Err("InvalidPathComponent")),
            ("gcr.io/", Err("InvalidPathComponent")),
            ("/nginx", Err("InvalidPathComponent")),
            ("a/b-", Err("InvalidPathComponent")),
            ("a/b___c", Err("InvalidPathComponent")),
            ("a/b._c", Err("InvalidPathComponent")),
            ("a/é", Err("InvalidPathComponent")),
            ("a:b:c", Err("InvalidPathComponent")),
            ("a//b", Err("InvalidPathComponent")),
            ("a/-b", Err("InvalidPathComponent")),
            ("a/b..c", Err("InvalidPathComponent")),
            ("a/b!c", Err("InvalidPathComponent")),
            ("-bad.io/x", Err("InvalidDomain")),
            ("bad-.io/x", Err("InvalidDomain")),
            ("[::1]5000/app", Err("InvalidDomain")),
            ("nginx ", Err("Whitespace")),
            ("a/b/c/d/e", hub("a/b/c/d/e", "", "")),
            ("registry.example.com:5000/team/app:v1", Ok(["registry.example.com:5000", "registry.example.com", "5000", "team/app", "v1", ""])),
            (concat!("gcr.io/p/app:1.0@sha256:", hex64!()), Ok(["gcr.io", "gcr.io", "", "p/app", "1.0", sha256])),
            ("192.168.0.1:5000/app", Ok(["192.168.0.1:5000", "192.168.0.1", "5000", "app", "", ""])),
            (leak(a(237)), hub(leak(a(237)), "", "")),
        ]
    }

    fn reference_variant(error: &ReferenceError) -> &'static str {
        match error {
            ReferenceError::Whitespace { .. } => "Whitespace",
            ReferenceError::Scheme { .. } => "Scheme",
            ReferenceError::ImageId { .. } => "ImageId",
            ReferenceError::MissingName { .. } => "MissingName",
            ReferenceError::InvalidDomain { .. } => "InvalidDomain",
            ReferenceError::Uppercase { .. } => "Uppercase",
            ReferenceError::InvalidPathComponent { .. } => "InvalidPathComponent",
            ReferenceError::NameTooLong { .. } => "NameTooLong",
            ReferenceError::InvalidTag { .. } => "InvalidTag",
            ReferenceError::InvalidDigest { .. } => "InvalidDigest",
        }
    }

    #[test]
    fn parse_table() {
        for (input, want) in parse_cases() {
            match (ImageReference::parse(input), want) {
                (Ok(got), Ok(want)) => {
                    let text = |v: Option<&'static str>| v.unwrap_or_default();
                    let fields = [
                        got.domain,
                        got.host,
                        text(got.port),
                        got.path,
                        text(got.tag),
                        text(got.digest),
                    ];
                    assert_eq!(fields, want, "input {input:?}");
                }
                (Err(got), Err(want)) => {
                    assert_eq!(reference_variant(&got), want, "input {input:?}: {got}");
                    let quoted = format!("{input:?}");
                    assert!(
                        got.to_string().contains(&quoted),
                        "input {input:?}: message {got}"
                    );
                }
                (got, want) => panic!("input {input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[rustfmt::skip]
    const DISPLAY_CASES: &[(&str, &str, &str)] = &[
        // (input, Display, normalized_path). distribution/reference normalize_test.go
        // TestParseRepositoryInfo and TestNormalizedSplitHostname.
        ("fooo/bar", "docker.io/fooo/bar", "fooo/bar"),
        ("index.docker.io/fooo/bar", "docker.io/fooo/bar", "fooo/bar"),
        ("ubuntu", "docker.io/library/ubuntu", "library/ubuntu"),
        ("library/ubuntu", "docker.io/library/ubuntu", "library/ubuntu"),
        ("docker.io/foo", "docker.io/library/foo", "library/foo"),
        ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base", "library/ubuntu-12.04-base"),
        ("library/foo/bar", "docker.io/library/foo/bar", "library/foo/bar"),
        ("store/foo/bar", "docker.io/store/foo/bar", "store/foo/bar"),
        ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase", "private/moonbase"),
        ("example.com:8000/privatebasee", "example.com:8000/privatebasee", "privatebasee"),
        ("Foo/bar", "Foo/bar", "bar"),
        ("FOO/bar", "FOO/bar", "bar"),
        ("test_com/foo", "docker.io/test_com/foo", "test_com/foo"),
        // The underscore case: distribution's `Name()` is the name as written.
        ("my_registry.corp.example.com/app:1", "my_registry.corp.example.com/app", "app"),
        // Carried over from the old implementation's tests.
        ("nginx:1.27", "docker.io/library/nginx", "library/nginx"),
        ("index.docker.io/nginx", "docker.io/library/nginx", "library/nginx"),
        ("docker.io:5000/nginx", "docker.io:5000/nginx", "nginx"),
        ("localhost/app", "localhost/app", "app"),
        (concat!("gcr.io/p/app:1@sha256:", hex64!()), "gcr.io/p/app", "p/app"),
        ("[::1]:5000/app", "[::1]:5000/app", "app"),
    ];

    #[test]
    fn display_and_normalized_path_table() {
        for (input, display, normalized) in DISPLAY_CASES {
            let Ok(reference) = ImageReference::parse(input) else {
                panic!("input {input:?} does not parse");
            };
            assert_eq!(reference.to_string(), *display, "input {input:?}");
            assert_eq!(reference.normalized_name(), *display, "input {input:?}");
            assert_eq!(reference.normalized_path(), *normalized, "input {input:?}");
            let hub = display.starts_with("docker.io/");
            assert_eq!(reference.is_docker_hub(), hub, "input {input:?}");
        }
    }

    #[rustfmt::skip]
    const PATTERN_CASES: &[(&str, Result<&str, &str>)] = &[
        // (input, as_str or expected error variant). Error variants merged since the old
        // implementation: its Empty and EmptyHost are now EmptyLabel, CharacterClass is
        // BadHostCharacter, Ipv6WithoutPort is BadIpv6, UppercasePath is BadPathCharacter.
        //
        // kubernetes keyring_test.go
        // TestDockerKeyringForGlob and TestIssue3797 (keys as written in a dockerconfigjson).
        ("https://hello.kubernetes.io", Ok("hello.kubernetes.io")),
        ("https://*.docker.io/path", Ok("*.docker.io/path")),
        ("https://prefix.*.io:8888", Ok("prefix.*.io:8888")),
        ("https://*.docker.io/v1/", Ok("*.docker.io")),
        ("https://*.docker.io/v2/", Ok("*.docker.io")),
        ("*.docker.io:1111", Ok("*.docker.io:1111")),
        ("https://quay.io/v1/", Ok("quay.io")),
        // The kubelet keeps this key, but no image path has a ':', so it could never match.
        ("https://*.docker.io/path:1111", Err("BadPathCharacter")),
        // Carried over from the old implementation's tests.
        ("gcr.io", Ok("gcr.io")),
        ("*.gcr.io", Ok("*.gcr.io")),
        ("*-docker.pkg.dev", Ok("*-docker.pkg.dev")),
        ("docker.*.rep.pkg.dev", Ok("docker.*.rep.pkg.dev")),
        ("registry.example.com:5000", Ok("registry.example.com:5000")),
        ("gcr.io/my-project", Ok("gcr.io/my-project")),
        ("gcr.io/proj/", Ok("gcr.io/proj/")),
        ("https://gcr.io", Ok("gcr.io")),
        ("http://gcr.io/", Ok("gcr.io")),
        ("https://gcr.io/my-project", Ok("gcr.io/my-project")),
        ("index.docker.io/v1/", Ok("index.docker.io")),
        ("https://index.docker.io/v1/", Ok("index.docker.io")),
        ("gcr.io/v2/my-project", Ok("gcr.io/my-project")),
        ("gcr.io/v1", Ok("gcr.io/v1")),
        ("[::1]:5000", Ok("[::1]:5000")),
        ("https://[fe80::1]:443/team", Ok("[fe80::1]:443/team")),
        ("GCR.io", Ok("GCR.io")),
        ("*", Ok("*")),
        // Old implementation: BadHostCharacter. Go's url.Parse accepts '_' in a host and
        // references like my_registry.corp.example.com/app now parse, so such keys match.
        ("gcr_io.com", Ok("gcr_io.com")),
        ("my_registry.corp.example.com", Ok("my_registry.corp.example.com")),
        ("", Err("EmptyLabel")),
        (" gcr.io", Err("Whitespace")),
        ("gcr.io\n", Err("Whitespace")),
        ("ftp://gcr.io", Err("UnsupportedScheme")),
        ("HTTPS://gcr.io", Err("UnsupportedScheme")),
        ("gcr.i?", Err("QueryOrFragment")),
        ("gcr.io/proj?x=1", Err("QueryOrFragment")),
        ("gcr.io#x", Err("QueryOrFragment")),
        ("https://", Err("EmptyLabel")),
        ("/my-project", Err("EmptyLabel")),
        (":5000", Err("EmptyLabel")),
        ("gcr..io", Err("EmptyLabel")),
        (".gcr.io", Err("EmptyLabel")),
        ("gcr.io.", Err("EmptyLabel")),
        ("user@gcr.io", Err("BadHostCharacter")),
        ("gcr.io%2f", Err("BadHostCharacter")),
        ("gcr.i[o]", Err("BadHostCharacter")),
        ("gcr.i\\o", Err("BadHostCharacter")),
        ("[a-z]*.gcr.io", Err("BadIpv6")),
        ("[::1", Err("BadIpv6")),
        ("[::g]:5000", Err("BadIpv6")),
        ("[::1]x", Err("BadIpv6")),
        ("[::1]", Err("BadIpv6")),
        ("gcr.io:", Err("BadPort")),
        ("gcr.io:50a", Err("BadPort")),
        ("gcr.io:*", Err("BadPort")),
        ("gcr.io:5000:5001", Err("BadPort")),
        ("[::1]:", Err("BadPort")),
        ("gcr.io/proj/*", Err("BadPathCharacter")),
        ("gcr.io/p%20x", Err("BadPathCharacter")),
        ("gcr.io/My-Project", Err("BadPathCharacter")),
        ("gcr.io//proj", Err("EmptyPathSegment")),
        ("gcr.io/v1//proj", Err("EmptyPathSegment")),
        ("gcr.io/v1/v2/proj", Err("NestedApiVersion")),
    ];

    fn pattern_variant(error: &PatternError) -> &'static str {
        match error {
            PatternError::Whitespace { .. } => "Whitespace",
            PatternError::UnsupportedScheme { .. } => "UnsupportedScheme",
            PatternError::QueryOrFragment { .. } => "QueryOrFragment",
            PatternError::EmptyLabel { .. } => "EmptyLabel",
            PatternError::BadHostCharacter { .. } => "BadHostCharacter",
            PatternError::BadIpv6 { .. } => "BadIpv6",
            PatternError::BadPort { .. } => "BadPort",
            PatternError::BadPathCharacter { .. } => "BadPathCharacter",
            PatternError::EmptyPathSegment { .. } => "EmptyPathSegment",
            PatternError::NestedApiVersion { .. } => "NestedApiVersion",
        }
    }

    #[test]
    fn pattern_table() {
        for (input, want) in PATTERN_CASES {
            match (HostPattern::parse(input), want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got.as_str(), *want, "pattern {input:?}");
                    assert_eq!(got.to_string(), *want, "pattern {input:?}");
                    // The canonical text is written as an auths key and read back by the kubelet.
                    assert_eq!(
                        HostPattern::parse(got.as_str()),
                        Ok(got),
                        "pattern {input:?}"
                    );
                }
                (Err(got), Err(want)) => {
                    assert_eq!(pattern_variant(&got), *want, "pattern {input:?}: {got}");
                    let quoted = format!("{input:?}");
                    assert!(
                        got.to_string().contains(&quoted),
                        "pattern {input:?}: message {got}"
                    );
                }
                (got, want) => panic!("pattern {input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[rustfmt::skip]
    const MATCH_CASES: &[(&str, &str, bool)] = &[
        // (pattern, image, matches). kubernetes keyring_test.go TestURLsMatch (targets given a
        // repository path to make them images).
        ("*.kubernetes.io", "prefix.kubernetes.io/x", true),
        ("prefix.*.io", "prefix.kubernetes.io/x", true),
        ("prefix.kubernetes.*", "prefix.kubernetes.io/x", true),
        ("*-good.kubernetes.io", "prefix-good.kubernetes.io/x", true),
        ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", true),
        ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", true),
        ("*.kubernetes.io:1111/blah", "prefix.kubernetes.io:1111/blah", true),
        ("prefix.*.io:1111/foo", "prefix.kubernetes.io:1111/foo/bar", true),
        ("*.kubernetes.io", "kubernetes.io/x", false),
        ("*.*.kubernetes.io", "prefix.kubernetes.io/x", false),
        ("*.*.kubernetes.io", "kubernetes.io/x", false),
        ("kubernetes.io", "kubernetes.com/x", false),
        ("k*.io", "quay.io/x", false),
        ("*.kubernetes.io:1234/blah", "prefix.kubernetes.io:1111/blah", false),
        ("prefix.*.io/foo", "prefix.kubernetes.io:1111/foo/bar", false),
        // keyring_test.go TestDockerKeyringLookup: the path is a plain string prefix.
        ("bar.example.com", "bar.example.com/pong", true),
        ("bar.example.com/pong", "bar.example.com/pong", true),
        ("bar.example.com/pong", "bar.example.com/ping", false),
        ("bar.example.com/pong", "bar.example.com/pongz", true),
        ("bar.example.com/pong", "bar.example.com/pong/pang", true),
        ("bar.example.com", "example.com/x", false),
        ("bar.example.com", "foo.example.com/x", false),
        // keyring_test.go TestIssue3797, TestKeyringMiss.
        ("https://quay.io/v1/", "quay.io/foo", true),
        ("https://quay.io/v1/", "quay.io/foo/bar", true),
        ("https://hello.kubernetes.io", "world.mesos.org/foo/bar", false),
        ("https://*.docker.com", "prefix.docker.io/foo/bar", false),
        ("https://suffix.*.io", "prefix.docker.io/foo/bar", false),
        ("https://prefix.docker.c*", "prefix.docker.io/foo/bar", false),
        // keyring_test.go TestKeyringHitWithUnqualifiedDockerHub, ...LibraryDockerHub,
        // ...QualifiedDockerHub, TestKeyringMissWithDockerHubCredentials and
        // TestIsDefaultRegistryMatch: the "index.docker.io" fallback.
        ("https://index.docker.io/v1/", "google/docker-registry", true),
        ("https://index.docker.io/v1/", "jenkins", true),
        ("https://index.docker.io/v1/", "index.docker.io/google/docker-registry", true),
        ("https://index.docker.io/v1/", "docker.io/foo/bar", true),
        ("https://index.docker.io/v1/", "world.mesos.org/foo/bar", false),
        ("index.docker.io", "registry.tld/foo/bar", false),
        ("index.docker.io", "registry:5000/foo/bar", false),
        ("index.docker.io", "myhostdocker.io/foo/bar", false),
        // Deliberately narrower than isDefaultRegistryMatch, which also takes "localhost/app".
        ("index.docker.io", "localhost/app", false),
        ("index.docker.io", "nginx", true),
        ("index.docker.io", "acme/app", true),
        ("index.docker.io", "docker.io/library/nginx", true),
        ("index.docker.io", "index.docker.io/acme/app", true),
        ("index.docker.io/v1/", "nginx", true),
        ("index.docker.io", "gcr.io/x", false),
        ("index.docker.io/acme", "acme/app", false),
        ("index.docker.io", "docker.io:5000/nginx", false),
        // GCR and Artifact Registry.
        ("gcr.io", "gcr.io/p/app:1", true),
        ("gcr.io", "eu.gcr.io/x", false),
        ("*.gcr.io", "eu.gcr.io/x:1", true),
        ("*.gcr.io", "gcr.io/x", false),
        ("*.gcr.io", "evilgcr.io/x", false),
        ("*.gcr.io", "a.b.gcr.io/x", false),
        ("*.gcr.io", "eu.gcr.io.evil.com/x", false),
        ("gcr.io/my-project", "gcr.io/my-project/app", true),
        ("gcr.io/my-project", "eu.gcr.io/my-project/app", false),
        ("*.gcr.io/my-project", "eu.gcr.io/my-project/app", true),
        ("gcr.io/proj", "gcr.io/project2/x", true),
        ("gcr.io/proj/", "gcr.io/project2/x", false),
        ("gcr.io/proj/", "gcr.io/proj/x", true),
        ("gcr.io/v2/my-project", "gcr.io/my-project/app", true),
        ("gcr.io/p/app/", "gcr.io/p/app", false),
        ("*-docker.pkg.dev", "europe-west1-docker.pkg.dev/p/r/i", true),
        ("*-docker.pkg.dev", "us-docker.pkg.dev/p/r/i", true),
        ("*-docker.pkg.dev", "europe-west1-maven.pkg.dev/p/r/i", false),
        ("*-docker.pkg.dev", "docker.pkg.dev/p/r/i", false),
        ("docker.*.rep.pkg.dev", "docker.europe-west1.rep.pkg.dev/p/r/i", true),
        ("docker.*.rep.pkg.dev", "docker.europe-west1.pkg.dev/p/r/i", false),
        ("docker.*.rep.pkg.dev", "maven.europe-west1.rep.pkg.dev/p/r/i", false),
        ("gcr*.io", "gcr.io/x", true),
        ("https://gcr.io", "gcr.io/x", true),
        ("http://gcr.io/", "gcr.io/x", true),
        ("gcr.io/my-project", "gcr.io/other/app", false),
        ("gcr.io/p/app", "gcr.io/p/app:1", true),
        ("gcr.i*", "gcr.io/x", true),
        // Underscore hosts. The kubelet looks up Name() "europe_west1-docker.pkg.dev/p/r/i",
        // whose url.Parse host is "europe_west1-docker.pkg.dev": three labels, like the
        // pattern's, and filepath.Match("*-docker", "europe_west1-docker") is true because '*'
        // matches any run of non-'/' characters, '_' included. So it matches.
        ("*-docker.pkg.dev", "europe_west1-docker.pkg.dev/p/r/i", true),
        ("*.corp.example.com", "my_registry.corp.example.com/app", true),
        ("my_registry.corp.example.com", "my_registry.corp.example.com/app", true),
        ("my_registry.corp.example.com/ap", "my_registry.corp.example.com/app:1", true),
        ("my_registry.corp.example.com/library", "my_registry.corp.example.com/app", false),
        ("index.docker.io", "my_registry.corp.example.com/app", false),
        ("docker.io", "test_com/foo", true),
        // Ports must be equal, or absent on both sides.
        ("registry.example.com:5000", "registry.example.com:5000/team/app:v1", true),
        ("registry.example.com:5000", "registry.example.com:5001/team/app", false),
        ("registry.example.com:5000", "registry.example.com/team/app", false),
        ("registry.example.com", "registry.example.com:5000/team/app", false),
        ("localhost:5000", "localhost:5000/x", true),
        ("localhost", "localhost:5000/x", false),
        ("localhost", "localhost/x", true),
        ("registry.example.com", "registry.example.com/team/app", true),
        ("gcr.io:443", "gcr.io/x", false),
        // Case-sensitive, like Go's filepath.Match.
        ("GCR.io", "gcr.io/x", false),
        ("gcr.io", "GCR.io/x", false),
        ("GCR.io", "GCR.io/x", true),
        // Docker Hub by the rules: the image's name is "docker.io/library/nginx".
        ("docker.io", "nginx", true),
        ("docker.io", "index.docker.io/acme/app", true),
        ("docker.io", "acme/app", true),
        ("docker.io/library", "nginx", true),
        ("docker.io/library/nginx", "nginx:1.27", true),
        ("docker.io/acme", "acme/app", true),
        ("docker.io/acme", "nginx", false),
        ("*.io", "nginx", true),
        ("*", "nginx", false),
        ("*", "localhost/app", true),
        // IP addresses: an IPv6 host is one label; without a port the kubelet keeps its brackets.
        ("[::1]:5000", "[::1]:5000/app", true),
        ("[::1]:5000", "[::2]:5000/app", false),
        ("[::1]:5000", "[::1]:5001/app", false),
        ("*:5000", "[::1]:5000/app", true),
        ("*1", "[::1]/app", false),
        ("*", "[::1]/app", true),
        ("192.168.0.*:5000", "192.168.0.1:5000/app", true),
        ("192.168.*:5000", "192.168.0.1:5000/app", false),
    ];

    #[test]
    fn match_table() {
        for (pattern, image, want) in MATCH_CASES {
            let parsed = HostPattern::parse(pattern);
            let Ok(parsed) = parsed else {
                panic!("pattern {pattern:?} does not parse: {parsed:?}");
            };
            let reference = ImageReference::parse(image);
            let Ok(reference) = reference else {
                panic!("image {image:?} does not parse: {reference:?}");
            };
            assert_eq!(
                parsed.matches(&reference),
                *want,
                "pattern {pattern:?}, image {image:?}"
            );
        }
    }

    #[test]
    fn glob_label_table() {
        #[rustfmt::skip]
        const CASES: &[(&str, &str, bool)] = &[
            // (glob, label, matches). Go path/filepath match_test.go, the '*'-only cases
            // without '/' (a host label has none).
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            // "a*b*c*d*e*/f" against "axbxcxdxe/f" and "axbxcxdxexxx/f", without the "/f".
            ("a*b*c*d*e*", "axbxcxdxe", true),
            ("a*b*c*d*e*", "axbxcxdxexxx", true),
            // Carried over from the old implementation's tests.
            ("*", "", true),
            ("a*c", "abbbc", true),
            ("a*c", "abcd", false),
            ("*-docker", "europe-west1-docker", true),
            ("*-docker", "europe_west1-docker", true),
            ("*-docker", "docker", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXcYb", false),
            ("**", "x", true),
            ("abc", "abd", false),
            ("abc", "ab", false),
            ("a*a", "a", false),
        ];
        for (glob, label, want) in CASES {
            assert_eq!(
                glob_label(glob, label),
                *want,
                "glob {glob:?}, label {label:?}"
            );
        }
    }
}
