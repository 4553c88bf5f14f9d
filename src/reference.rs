//! Container image references and registry host patterns, read the way the kubelet reads them.
//!
//! The webhook must inject a pull Secret exactly when the kubelet would use that Secret's
//! credentials for an image; any disagreement means either a useless Secret or a failed pull.
//! So [`ImageReference::parse`] follows distribution/reference (what `docker pull` and the
//! kubelet accept) and [`HostPattern::matches`] follows the kubelet credential keyring
//! (`pkg/credentialprovider`: `BasicDockerKeyring.Add`, `URLsMatch`, `isDefaultRegistryMatch`).
//!
//! Both hot paths (`ImageReference::parse`, `HostPattern::matches`) borrow and never allocate:
//! the webhook runs them for every container of every admitted Pod. Errors own their text
//! because they outlive the request that produced them.

use std::borrow::Cow;
use std::fmt;

/// The registry that references without a domain resolve to.
const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name; distribution rewrites it to [`DOCKER_HUB`].
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
/// Prefix distribution adds to single-component Docker Hub paths ("nginx" → "library/nginx").
const OFFICIAL_PREFIX: &str = "library/";
/// distribution/reference `NameTotalLengthMax`, counted on the normalized name.
const NAME_MAX: usize = 255;
/// The tag grammar allows one leading character plus 127 more.
const TAG_MAX: usize = 128;
/// The keyring key the kubelet falls back to for Docker Hub images (`defaultRegistryHost`).
const DEFAULT_REGISTRY_KEY: &str = "index.docker.io";

/// A parsed image reference, borrowing from the input (no allocation on the hot path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference<'a> {
    /// `host[:port]` as written; "docker.io" when the reference has no domain;
    /// "index.docker.io" normalizes to "docker.io".
    pub domain: &'a str,
    /// `domain` without the port; IPv6 without brackets.
    pub host: &'a str,
    /// Digits only.
    pub port: Option<&'a str>,
    /// Remote name as written, e.g. "nginx" (NOT prefixed with "library/"), "acme/app".
    pub path: &'a str,
    pub tag: Option<&'a str>,
    /// "sha256:..."
    pub digest: Option<&'a str>,
}

impl<'a> ImageReference<'a> {
    /// Parses `name[:tag][@digest]` with the rules of distribution/reference
    /// `ParseNormalizedNamed`, so that anything the kubelet could pull parses here and anything
    /// it would reject is reported instead of silently matched.
    pub fn parse(input: &'a str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let owned = || input.to_owned();
        let scan = Scan::of(input.as_bytes());
        // Outside ASCII, whitespace and control characters need the Unicode tables.
        if scan.space_or_control || (scan.non_ascii && has_space_or_control_char(input)) {
            return Err(ReferenceError::Whitespace { input: owned() });
        }
        if scan.scheme {
            return Err(ReferenceError::Scheme { input: owned() });
        }
        if is_image_id(input) {
            return Err(ReferenceError::ImageId { input: owned() });
        }

        // The digest goes first: it contains ':' itself, and '@' cannot occur anywhere else.
        // Every position below is of an ASCII byte, so every slice is on a char boundary.
        let (rest, digest) = match scan.at {
            Some(at) => (&input[..at], Some(&input[at + 1..])),
            None => (input, None),
        };
        if let Some(digest) = digest {
            if digest.is_empty() {
                return Err(ReferenceError::EmptyDigest { input: owned() });
            }
            if !scan.sha256 {
                check_digest(digest).map_err(|reason| ReferenceError::InvalidDigest {
                    input: owned(),
                    digest: digest.to_owned(),
                    reason,
                })?;
            }
        }

        // A ':' is a tag separator only after the last '/'; before it, it introduces a port.
        let (name, tag) = match scan.last_colon {
            Some(i) if scan.last_slash.is_none_or(|slash| slash < i) => {
                (&rest[..i], Some(&rest[i + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            if tag.is_empty() {
                return Err(ReferenceError::EmptyTag { input: owned() });
            }
            if !is_tag(tag) {
                return Err(ReferenceError::InvalidTag {
                    input: owned(),
                    tag: tag.to_owned(),
                });
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::MissingName { input: owned() });
        }

        // The first '/' of `rest` is the first of `name`: a tag starts after the last '/'.
        let (written_domain, path) = split_docker_domain(name, scan.first_slash);
        let (domain, host, port) = match written_domain {
            None | Some(LEGACY_DOCKER_HUB) => (DOCKER_HUB, DOCKER_HUB, None),
            Some(domain) => {
                let (host, port) = split_host_port(domain).map_err(|problem| match problem {
                    DomainProblem::Host => ReferenceError::InvalidDomain {
                        input: owned(),
                        domain: domain.to_owned(),
                    },
                    DomainProblem::Port(port) => ReferenceError::InvalidPort {
                        input: owned(),
                        port: port.to_owned(),
                    },
                })?;
                (domain, host, port)
            }
        };

        // An uppercase letter fails the component grammar too, so a valid path has none; on
        // failure it is looked for first, like distribution, so "acme/App" gets the message
        // that tells the user what to change.
        if let Err(problem) = check_path(path) {
            if path.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(ReferenceError::Uppercase {
                    input: owned(),
                    path: path.to_owned(),
                });
            }
            return Err(match problem {
                PathProblem::Empty => ReferenceError::EmptyPathComponent { input: owned() },
                PathProblem::Invalid(component) => ReferenceError::InvalidPathComponent {
                    input: owned(),
                    component: component.to_owned(),
                },
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
        // distribution measures the normalized name ("docker.io/library/nginx"), not the input.
        let length = reference.normalized_len();
        if length > NAME_MAX {
            return Err(ReferenceError::NameTooLong {
                input: owned(),
                length,
            });
        }
        Ok(reference)
    }

    /// The [`Display`](fmt::Display) form ("docker.io/library/nginx"), built without the
    /// formatting machinery: the webhook records it for every image that needs a Secret.
    pub fn normalized_name(&self) -> String {
        let mut name = String::with_capacity(self.normalized_len());
        name.push_str(self.domain);
        name.push('/');
        name.push_str(self.official_prefix());
        name.push_str(self.path);
        name
    }

    /// True when the image is pulled from Docker Hub: domain "docker.io", which covers familiar
    /// names ("nginx", "acme/app") and "index.docker.io/...". The kubelet offers the
    /// "index.docker.io" credentials to exactly these images.
    pub fn is_docker_hub(&self) -> bool {
        self.domain == DOCKER_HUB
    }

    /// Normalized repository path as the kubelet sees it: "library/nginx" for "nginx" on
    /// docker.io, else `path`. Allocates only for that "library/" prefix.
    pub fn normalized_path(&self) -> Cow<'a, str> {
        if self.is_official() {
            Cow::Owned(format!("{OFFICIAL_PREFIX}{}", self.path))
        } else {
            Cow::Borrowed(self.path)
        }
    }

    /// A single-component Docker Hub path, which distribution puts under "library/".
    fn is_official(&self) -> bool {
        self.is_docker_hub() && !self.path.bytes().any(|b| b == b'/')
    }

    fn official_prefix(&self) -> &'static str {
        if self.is_official() {
            OFFICIAL_PREFIX
        } else {
            ""
        }
    }

    /// Length of the `Display` form, computed without building it.
    fn normalized_len(&self) -> usize {
        self.domain.len() + 1 + self.official_prefix().len() + self.path.len()
    }
}

/// The familiar normalized repository name, e.g. "docker.io/library/nginx"; no tag or digest,
/// because credentials are chosen per repository.
impl fmt::Display for ImageReference<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.domain, self.official_prefix(), self.path)
    }
}

/// Why an image reference is not one the kubelet could pull. Every message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference \"\": it is empty")]
    Empty,
    #[error("invalid image reference {input:?}: it contains whitespace or a control character")]
    Whitespace { input: String },
    #[error(
        "invalid image reference {input:?}: it must not contain a URL scheme (\"://\"); write host/path, e.g. gcr.io/project/image"
    )]
    Scheme { input: String },
    #[error(
        "invalid image reference {input:?}: cannot specify 64-byte hexadecimal strings (an image ID is not a pullable name)"
    )]
    ImageId { input: String },
    #[error("invalid image reference {input:?}: the repository name is missing")]
    MissingName { input: String },
    #[error(
        "invalid image reference {input:?}: registry domain {domain:?} is not a valid host[:port] (DNS labels of letters, digits and inner '-', an IPv4 address, or an IPv6 address in brackets)"
    )]
    InvalidDomain { input: String, domain: String },
    #[error("invalid image reference {input:?}: registry port {port:?} must be one or more digits")]
    InvalidPort { input: String, port: String },
    #[error("invalid image reference {input:?}: repository name {path:?} must be lowercase")]
    Uppercase { input: String, path: String },
    #[error(
        "invalid image reference {input:?}: the repository path has an empty component (a leading, trailing or doubled '/')"
    )]
    EmptyPathComponent { input: String },
    #[error(
        "invalid image reference {input:?}: path component {component:?} must be runs of a-z and 0-9 joined by '.', '_', '__' or dashes"
    )]
    InvalidPathComponent { input: String, component: String },
    #[error(
        "invalid image reference {input:?}: the normalized repository name is {length} characters long; at most 255 are allowed"
    )]
    NameTooLong { input: String, length: usize },
    #[error("invalid image reference {input:?}: the tag after ':' is empty")]
    EmptyTag { input: String },
    #[error(
        "invalid image reference {input:?}: tag {tag:?} must be 1 to 128 of A-Z, a-z, 0-9, '_', '.', '-' and must not start with '.' or '-'"
    )]
    InvalidTag { input: String, tag: String },
    #[error("invalid image reference {input:?}: the digest after '@' is empty")]
    EmptyDigest { input: String },
    #[error("invalid image reference {input:?}: digest {digest:?} is invalid: {reason}")]
    InvalidDigest {
        input: String,
        digest: String,
        reason: &'static str,
    },
}

/// A credential key / host pattern as the kubelet keyring understands it: "gcr.io", "*.gcr.io",
/// "*-docker.pkg.dev", "docker.*.rep.pkg.dev", "registry.example.com:5000", "gcr.io/my-project".
///
/// Stored in the canonical form the kubelet derives from a dockerconfigjson auths key (scheme
/// removed, one leading "/v1/" or "/v2/" removed, a bare "/" dropped). Parsing that form again
/// gives the same pattern, so the key this webhook writes is the key the kubelet matches with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Canonical text: `host[:port][/path]`, IPv6 hosts in brackets.
    text: String,
    /// Byte range of the host glob in `text` (inside the brackets for IPv6).
    host: (usize, usize),
    /// Byte range of the port digits in `text`.
    port: Option<(usize, usize)>,
    /// `text[path_start..]` is the path prefix ("/my-project"), empty when there is none.
    path_start: usize,
}

impl HostPattern {
    /// Parses a pattern and canonicalizes it as the kubelet's `BasicDockerKeyring.Add` does.
    ///
    /// Rejects what the kubelet would accept but could never match as written (empty labels,
    /// character classes, `?`, wildcards or uppercase in the path), so a configuration mistake
    /// surfaces at load time instead of as a Pod that silently gets no Secret.
    pub fn parse(input: &str) -> Result<Self, PatternError> {
        if input.is_empty() {
            return Err(PatternError::Empty);
        }
        let owned = || input.to_owned();
        if has_space_or_control(input) {
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
        if authority.is_empty() {
            return Err(PatternError::EmptyHost { input: owned() });
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (address, after) = bracketed
                .split_once(']')
                .filter(|(address, _)| {
                    !address.is_empty()
                        && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
                })
                .ok_or_else(|| PatternError::BadIpv6 { input: owned() })?;
            match after.strip_prefix(':') {
                Some(port) => (address, Some(port)),
                None if after.is_empty() => {
                    return Err(PatternError::Ipv6WithoutPort { input: owned() });
                }
                None => return Err(PatternError::BadIpv6 { input: owned() }),
            }
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            if let Some(ch) = host.chars().find(|c| matches!(c, '[' | ']' | '\\')) {
                return Err(PatternError::CharacterClass { input: owned(), ch });
            }
            if let Some(ch) = host
                .chars()
                .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '*' | '.')))
            {
                return Err(PatternError::BadHostCharacter { input: owned(), ch });
            }
            if host.is_empty() {
                return Err(PatternError::EmptyHost { input: owned() });
            }
            if host.split('.').any(str::is_empty) {
                return Err(PatternError::EmptyLabel { input: owned() });
            }
            (host, port)
        };
        if let Some(port) = port
            && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(PatternError::BadPort {
                input: owned(),
                port: port.to_owned(),
            });
        }

        let path = canonical_path(path);
        if !path.is_empty() {
            if has_api_version_prefix(path) {
                return Err(PatternError::NestedApiVersion { input: owned() });
            }
            if path.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(PatternError::UppercasePath { input: owned() });
            }
            if let Some(ch) = path
                .chars()
                .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)))
            {
                return Err(PatternError::BadPathCharacter { input: owned(), ch });
            }
            if path.contains("//") {
                return Err(PatternError::EmptyPathSegment { input: owned() });
            }
        }

        // `host` and `port` are subslices of `authority`, which starts the canonical text.
        let offset = |part: &str| part.as_ptr() as usize - authority.as_ptr() as usize;
        let host_start = offset(host);
        let port = port.map(|port| (offset(port), offset(port) + port.len()));
        let mut text = String::with_capacity(authority.len() + path.len());
        text.push_str(authority);
        text.push_str(path);
        Ok(HostPattern {
            host: (host_start, host_start + host.len()),
            port,
            path_start: authority.len(),
            text,
        })
    }

    /// Canonical text (scheme stripped), used as the dockerconfigjson auths key.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the kubelet would offer credentials stored under this key for `image`
    /// (`URLsMatch` against the image's normalized name, plus the Docker Hub fallback).
    ///
    /// The kubelet applies the fallback only when no other key of the same keyring matched;
    /// this answers for one pattern on its own, which is what choosing a Secret needs.
    pub fn matches(&self, image: &ImageReference<'_>) -> bool {
        // isDefaultRegistryMatch: the "index.docker.io" key serves Docker Hub images. The
        // kubelet also applies it to any portless single-word domain ("localhost/app",
        // "Foo/bar"); that would hand Docker Hub credentials to another registry, so only
        // real Docker Hub images are matched here.
        if self.text == DEFAULT_REGISTRY_KEY && image.is_docker_hub() {
            return true;
        }
        if self.port() != image.port {
            return false;
        }
        // Go's net.SplitHostPort strips IPv6 brackets only when a port follows; without one
        // the kubelet compares the bracketed text.
        let target_host = if image.port.is_none() && image.domain.starts_with('[') {
            image.domain
        } else {
            image.host
        };
        // A cheap necessary condition first, which most other registries' images fail: '*'
        // never spans a '.', so the target ends with what follows the last '*' of the pattern
        // (all of it when there is none).
        let host = self.host();
        let literal = host
            .bytes()
            .rposition(|b| b == b'*')
            .map_or(host, |star| &host[star + 1..]);
        target_host.ends_with(literal)
            && host_matches(host, target_host)
            && path_prefix_matches(self.path(), image)
    }

    fn host(&self) -> &str {
        &self.text[self.host.0..self.host.1]
    }

    fn port(&self) -> Option<&str> {
        self.port.map(|(start, end)| &self.text[start..end])
    }

    fn path(&self) -> &str {
        &self.text[self.path_start..]
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
    #[error("invalid host pattern \"\": it is empty")]
    Empty,
    #[error("invalid host pattern {input:?}: it contains whitespace or a control character")]
    Whitespace { input: String },
    #[error("invalid host pattern {input:?}: only an http:// or https:// scheme may be given")]
    UnsupportedScheme { input: String },
    #[error(
        "invalid host pattern {input:?}: {ch:?} is not allowed; the kubelet reads the key as a URL, where '?' starts a query and '#' a fragment, so it is cut off there (use '*' as the wildcard)"
    )]
    QueryOrFragment { input: String, ch: char },
    #[error("invalid host pattern {input:?}: the host is empty")]
    EmptyHost { input: String },
    #[error(
        "invalid host pattern {input:?}: the host has an empty label (a leading, trailing or doubled '.')"
    )]
    EmptyLabel { input: String },
    #[error(
        "invalid host pattern {input:?}: {ch:?} is not allowed in a host; use letters, digits, '-', '.' and the wildcard '*'"
    )]
    BadHostCharacter { input: String, ch: char },
    #[error(
        "invalid host pattern {input:?}: {ch:?} is not supported; character classes and escapes are not, only the wildcard '*' is"
    )]
    CharacterClass { input: String, ch: char },
    #[error(
        "invalid host pattern {input:?}: a host starting with '[' must be an IPv6 address (hex digits and ':') in brackets, followed by :port"
    )]
    BadIpv6 { input: String },
    #[error(
        "invalid host pattern {input:?}: a bracketed IPv6 host needs a port; without one the kubelet reads the brackets as a glob character class and never matches"
    )]
    Ipv6WithoutPort { input: String },
    #[error(
        "invalid host pattern {input:?}: port {port:?} must be one or more digits (no wildcards)"
    )]
    BadPort { input: String, port: String },
    #[error(
        "invalid host pattern {input:?}: {ch:?} is not allowed in a path; the kubelet compares paths as plain prefixes of lowercase repository names (a-z, 0-9, '.', '_', '-', '/')"
    )]
    BadPathCharacter { input: String, ch: char },
    #[error(
        "invalid host pattern {input:?}: the path has uppercase letters, but repository names are lowercase, so it could never match"
    )]
    UppercasePath { input: String },
    #[error("invalid host pattern {input:?}: the path has an empty segment (a doubled '/')")]
    EmptyPathSegment { input: String },
    #[error(
        "invalid host pattern {input:?}: more than one leading /v1/ or /v2/; the kubelet strips one each time it reads the key, so it would not stay the same"
    )]
    NestedApiVersion { input: String },
}

/// distribution's `anchoredIdentifierRegexp`: a bare image ID, which `docker pull` refuses.
fn is_image_id(input: &str) -> bool {
    input.len() == 64 && input.bytes().all(is_lower_hex)
}

fn is_lower_hex(b: u8) -> bool {
    is(LOWER_HEX, b)
}

/// What one pass over an image reference finds: the checks that come first, and the
/// separators that split it. Positions are byte offsets of ASCII bytes.
#[derive(Default)]
struct Scan {
    /// An ASCII space or control byte.
    space_or_control: bool,
    /// A byte outside ASCII (then a non-ASCII whitespace or control character is possible).
    non_ascii: bool,
    /// "://" anywhere.
    scheme: bool,
    /// The first '@'.
    at: Option<usize>,
    /// The last ':' before the first '@'.
    last_colon: Option<usize>,
    /// The first and last '/' before the first '@'.
    first_slash: Option<usize>,
    last_slash: Option<usize>,
    /// Everything after the first '@' is a well-formed sha256 digest.
    sha256: bool,
}

// Byte classes: the bits of `BYTE_CLASSES`.
/// What [`Scan::of`] looks at: its separators, and the bytes never part of a reference (ASCII
/// whitespace and control characters, and all bytes of non-ASCII characters).
const SCAN_STOP: u8 = 1;
/// `[0-9a-f]`
const LOWER_HEX: u8 = 2;
/// `[a-z0-9]`
const LOWER_ALPHANUMERIC: u8 = 4;
/// `[A-Za-z0-9]`
const ALPHANUMERIC: u8 = 8;

/// A table, because the letters and digits that make up most of a reference would otherwise
/// each go through several comparisons.
const BYTE_CLASSES: [u8; 256] = {
    let mut classes = [0; 256];
    let mut i = 0;
    while i < classes.len() {
        let b = i as u8;
        if matches!(b, b'/' | b':' | b'@' | 0..=b' ' | 0x7f..) {
            classes[i] |= SCAN_STOP;
        }
        if matches!(b, b'0'..=b'9' | b'a'..=b'f') {
            classes[i] |= LOWER_HEX;
        }
        if matches!(b, b'0'..=b'9' | b'a'..=b'z') {
            classes[i] |= LOWER_ALPHANUMERIC;
        }
        if b.is_ascii_alphanumeric() {
            classes[i] |= ALPHANUMERIC;
        }
        i += 1;
    }
    classes
};

fn is(class: u8, b: u8) -> bool {
    BYTE_CLASSES[usize::from(b)] & class != 0
}

impl Scan {
    fn of(bytes: &[u8]) -> Self {
        let mut scan = Scan::default();
        // An index loop: one counter per byte, where `enumerate` keeps two.
        let mut next = 0;
        while next < bytes.len() {
            let (i, b) = (next, bytes[next]);
            next += 1;
            if !is(SCAN_STOP, b) {
                continue;
            }
            match b {
                b'/' => {
                    if i >= 2 && bytes[i - 2] == b':' && bytes[i - 1] == b'/' {
                        scan.scheme = true;
                    }
                    if scan.at.is_none() {
                        scan.first_slash.get_or_insert(i);
                        scan.last_slash = Some(i);
                    }
                }
                b':' if scan.at.is_none() => scan.last_colon = Some(i),
                b'@' if scan.at.is_none() => {
                    scan.at = Some(i);
                    // The usual digest holds none of the bytes looked for: no need to go on.
                    if is_sha256_digest(&bytes[next..]) {
                        scan.sha256 = true;
                        break;
                    }
                }
                // ASCII whitespace and control characters are the bytes up to ' ', and DEL.
                0..=b' ' | 0x7f => scan.space_or_control = true,
                0x80.. => scan.non_ascii = true,
                _ => {}
            }
        }
        scan
    }
}

/// distribution's `splitDockerDomain`: the first component is a registry only if it looks like
/// one, because Docker Hub user names ("acme/app") share the syntax. `first_slash` is the
/// position of the first '/' in `name`.
fn split_docker_domain(name: &str, first_slash: Option<usize>) -> (Option<&str>, &str) {
    if let Some(i) = first_slash {
        let first = &name[..i];
        if first == "localhost"
            || first
                .bytes()
                .any(|b| b == b'.' || b == b':' || b.is_ascii_uppercase())
        {
            return (Some(first), &name[i + 1..]);
        }
    }
    (None, name)
}

enum DomainProblem<'a> {
    Host,
    Port(&'a str),
}

/// `host[:port]` with host := domain-name | IPv4 | "[" IPv6 "]", as distribution's grammar.
fn split_host_port(domain: &str) -> Result<(&str, Option<&str>), DomainProblem<'_>> {
    let bytes = domain.as_bytes();
    let (host, port) = if bytes.first() == Some(&b'[') {
        let close = bytes
            .iter()
            .position(|&b| b == b']')
            .ok_or(DomainProblem::Host)?;
        let (address, after) = (&domain[1..close], &domain[close + 1..]);
        if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(DomainProblem::Host);
        }
        let port = match after.as_bytes() {
            [] => None,
            [b':', ..] => Some(&after[1..]),
            _ => return Err(DomainProblem::Host),
        };
        (address, port)
    } else {
        // An IPv4 address is a valid domain name syntactically, so one check covers both.
        let end = domain_name_end(bytes).ok_or(DomainProblem::Host)?;
        let port = (end < domain.len()).then(|| &domain[end + 1..]);
        (&domain[..end], port)
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(DomainProblem::Port(port));
    }
    Ok((host, port))
}

/// Where the host of `host[:port]` ends (its first ':', or the end) if it is a domain name:
/// components joined by '.', each `[a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn domain_name_end(domain: &[u8]) -> Option<usize> {
    // The byte before the current one; a component starts as if after a '.'.
    let mut previous = b'.';
    for (i, &b) in domain.iter().enumerate() {
        if !is(ALPHANUMERIC, b) {
            let ok = match b {
                b':' => return (previous != b'.' && previous != b'-').then_some(i),
                // A component is not empty and neither starts nor ends with '-'.
                b'.' => previous != b'.' && previous != b'-',
                b'-' => previous != b'.',
                _ => false,
            };
            if !ok {
                return None;
            }
        }
        previous = b;
    }
    (previous != b'.' && previous != b'-').then_some(domain.len())
}

/// Why a repository path does not follow the grammar.
enum PathProblem<'a> {
    /// A leading, trailing or doubled '/'.
    Empty,
    /// The first component that does not follow it.
    Invalid(&'a str),
}

/// Components joined by '/', each `[a-z0-9]+ (separator [a-z0-9]+)*` with
/// separator := "." | "_" | "__" | "-"+; checked in one pass, first component first.
fn check_path(path: &str) -> Result<(), PathProblem<'_>> {
    let bytes = path.as_bytes();
    let alphanumeric = |i: usize| bytes.get(i).is_some_and(|&b| is(LOWER_ALPHANUMERIC, b));
    let invalid = |start: usize| {
        let component = &path[start..];
        let end = component.bytes().position(|b| b == b'/');
        PathProblem::Invalid(&component[..end.unwrap_or(component.len())])
    };
    // Where the current component starts.
    let mut start = 0;
    let mut i = 0;
    loop {
        // A run of [a-z0-9]+ is required at the start and after every separator.
        if !alphanumeric(i) {
            if i == start && matches!(bytes.get(i), None | Some(b'/')) {
                return Err(PathProblem::Empty);
            }
            return Err(invalid(start));
        }
        while alphanumeric(i) {
            i += 1;
        }
        match bytes.get(i) {
            None => return Ok(()),
            Some(b'/') => {
                i += 1;
                start = i;
            }
            Some(b'.') => i += 1,
            Some(b'_') => {
                i += if bytes.get(i + 1) == Some(&b'_') {
                    2
                } else {
                    1
                }
            }
            Some(b'-') => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            Some(_) => return Err(invalid(start)),
        }
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    bytes.len() <= TAG_MAX
        && bytes.first().is_some_and(|&b| word(b))
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `algorithm ":" encoded`; sha256 needs its exact 64 lowercase hex, other algorithms at least
/// 32 hex characters (distribution's `digestPat`).
fn check_digest(digest: &str) -> Result<(), &'static str> {
    let Some(colon) = digest.bytes().position(|b| b == b':') else {
        return Err("expected <algorithm>:<hex>");
    };
    let (algorithm, encoded) = (&digest[..colon], &digest[colon + 1..]);
    // The common case in one pass: lowercase hex is also a valid encoding.
    if is_sha256_digest(digest.as_bytes()) {
        return Ok(());
    }
    if !is_digest_algorithm(algorithm) {
        return Err("the algorithm must be runs of a-z and 0-9, joined by '+', '.', '_' or '-'");
    }
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    if !encoded_ok {
        return Err("the encoded part must be letters, digits, '=', '_' or '-'");
    }
    if algorithm == "sha256" {
        if encoded.len() != 64 || !encoded.bytes().all(is_lower_hex) {
            return Err("sha256 needs exactly 64 lowercase hex characters");
        }
    } else if encoded.len() < 32 || !encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the encoded part needs at least 32 hex characters");
    }
    Ok(())
}

/// "sha256:" and 64 lowercase hex characters, which [`check_digest`] accepts.
fn is_sha256_digest(digest: &[u8]) -> bool {
    digest.len() == 71
        && digest.starts_with(b"sha256:")
        && digest[7..].iter().all(|&b| is_lower_hex(b))
}

/// `[a-z0-9]+ ([+._-] [a-z0-9]+)*`
fn is_digest_algorithm(algorithm: &str) -> bool {
    // Whether the current run of [a-z0-9] is non-empty.
    let mut in_run = false;
    for b in algorithm.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            in_run = true;
        } else if in_run && matches!(b, b'+' | b'.' | b'_' | b'-') {
            in_run = false;
        } else {
            return false;
        }
    }
    in_run
}

/// The kubelet's `Add`: one leading "/v1/" or "/v2/" names the registry API, not a repository,
/// and a path of just "/" means none.
fn canonical_path(path: &str) -> &str {
    let path = if has_api_version_prefix(path) {
        &path[3..]
    } else {
        path
    };
    if path == "/" { "" } else { path }
}

fn has_api_version_prefix(path: &str) -> bool {
    path.starts_with("/v1/") || path.starts_with("/v2/")
}

/// Go `filepath.Match` on a host: as many labels on both sides, each matching its glob.
fn host_matches(pattern: &str, target: &str) -> bool {
    let (mut pattern, mut target) = (pattern, target);
    loop {
        let pattern_dot = pattern.bytes().position(|b| b == b'.');
        let target_dot = target.bytes().position(|b| b == b'.');
        let pattern_label = &pattern[..pattern_dot.unwrap_or(pattern.len())];
        let target_label = &target[..target_dot.unwrap_or(target.len())];
        if !glob_label(pattern_label, target_label) {
            return false;
        }
        match (pattern_dot, target_dot) {
            (Some(p), Some(t)) => (pattern, target) = (&pattern[p + 1..], &target[t + 1..]),
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Go `filepath.Match` on one host label, for patterns whose only metacharacter is `*`
/// (any run of characters, possibly empty). Case-sensitive, like the kubelet.
fn glob_label(pattern: &str, target: &str) -> bool {
    let (pattern, target) = (pattern.as_bytes(), target.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where to resume after the latest '*': the pattern index after it and the target index
    // it has consumed up to. Retrying only the latest star suffices for '*'-only globs.
    let mut star: Option<(usize, usize)> = None;
    while t < target.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, t));
            }
            Some(&c) if c == target[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((after_star, consumed)) => {
                    p = after_star;
                    t = consumed + 1;
                    star = Some((after_star, t));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `strings.HasPrefix("/" + normalized path, prefix)` without building the string. A plain
/// prefix, as in the kubelet: "/proj" also matches "/project2/app".
fn path_prefix_matches(prefix: &str, image: &ImageReference<'_>) -> bool {
    let mut rest = prefix;
    for part in ["/", image.official_prefix(), image.path] {
        match rest.strip_prefix(part) {
            Some(remaining) => rest = remaining,
            // The prefix ends inside this part (or differs from it).
            None => return part.starts_with(rest),
        }
    }
    rest.is_empty()
}

/// Whether `text` holds whitespace or a control character (never part of a reference or pattern).
fn has_space_or_control(text: &str) -> bool {
    let mut non_ascii = false;
    for b in text.bytes() {
        match b {
            // ASCII whitespace and control characters are the bytes up to ' ', and DEL.
            0..=b' ' | 0x7f => return true,
            0x80.. => non_ascii = true,
            _ => {}
        }
    }
    non_ascii && has_space_or_control_char(text)
}

/// The Unicode form of [`has_space_or_control`], for text outside ASCII.
fn has_space_or_control_char(text: &str) -> bool {
    text.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    /// 64 lowercase hex characters: a sha256 encoding or, alone, an image ID.
    macro_rules! hex64 {
        () => {
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        };
    }
    /// 50 characters, to build over-long names.
    macro_rules! a50 {
        () => {
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        };
    }

    /// Expected fields `[domain, host, port, path, tag, digest]` ("" for `None`), or the name of
    /// the expected error variant.
    type Want = Result<[&'static str; 6], &'static str>;

    #[rustfmt::skip]
    const PARSE_CASES: &[(&str, Want)] = &[
        // Docker Hub, familiar and explicit.
        ("nginx", Ok(["docker.io", "docker.io", "", "nginx", "", ""])),
        ("nginx:1.27", Ok(["docker.io", "docker.io", "", "nginx", "1.27", ""])),
        ("library/nginx", Ok(["docker.io", "docker.io", "", "library/nginx", "", ""])),
        ("acme/app", Ok(["docker.io", "docker.io", "", "acme/app", "", ""])),
        ("docker.io/nginx", Ok(["docker.io", "docker.io", "", "nginx", "", ""])),
        ("docker.io/library/nginx:latest", Ok(["docker.io", "docker.io", "", "library/nginx", "latest", ""])),
        ("index.docker.io/acme/app", Ok(["docker.io", "docker.io", "", "acme/app", "", ""])),
        ("index.docker.io/nginx", Ok(["docker.io", "docker.io", "", "nginx", "", ""])),
        ("docker.io:5000/nginx", Ok(["docker.io:5000", "docker.io", "5000", "nginx", "", ""])),
        ("foo_bar/baz__qux/a-b--c/d.e", Ok(["docker.io", "docker.io", "", "foo_bar/baz__qux/a-b--c/d.e", "", ""])),
        (concat!(hex64!(), ":latest"), Ok(["docker.io", "docker.io", "", hex64!(), "latest", ""])),
        // localhost and other domains.
        ("localhost/app", Ok(["localhost", "localhost", "", "app", "", ""])),
        ("localhost:5000/app", Ok(["localhost:5000", "localhost", "5000", "app", "", ""])),
        ("localhost", Ok(["docker.io", "docker.io", "", "localhost", "", ""])),
        ("localhost:5000", Ok(["docker.io", "docker.io", "", "localhost", "5000", ""])),
        ("registry.example.com:5000/team/app:v1", Ok(["registry.example.com:5000", "registry.example.com", "5000", "team/app", "v1", ""])),
        ("gcr.io/p/app", Ok(["gcr.io", "gcr.io", "", "p/app", "", ""])),
        ("europe-west1-docker.pkg.dev/p/r/img:2.4.1", Ok(["europe-west1-docker.pkg.dev", "europe-west1-docker.pkg.dev", "", "p/r/img", "2.4.1", ""])),
        ("docker.europe-west1.rep.pkg.dev/p/r/img", Ok(["docker.europe-west1.rep.pkg.dev", "docker.europe-west1.rep.pkg.dev", "", "p/r/img", "", ""])),
        ("[::1]:5000/app", Ok(["[::1]:5000", "::1", "5000", "app", "", ""])),
        ("[fe80::1]/app", Ok(["[fe80::1]", "fe80::1", "", "app", "", ""])),
        ("192.168.0.1:5000/app", Ok(["192.168.0.1:5000", "192.168.0.1", "5000", "app", "", ""])),
        ("Foo/bar", Ok(["Foo", "Foo", "", "bar", "", ""])),
        ("Registry.Example.com/app", Ok(["Registry.Example.com", "Registry.Example.com", "", "app", "", ""])),
        ("a/b/c/d/e", Ok(["docker.io", "docker.io", "", "a/b/c/d/e", "", ""])),
        // Tags and digests.
        (concat!("eu.gcr.io/acme-prod/api@sha256:", hex64!()), Ok(["eu.gcr.io", "eu.gcr.io", "", "acme-prod/api", "", concat!("sha256:", hex64!())])),
        (concat!("gcr.io/p/app:1.0@sha256:", hex64!()), Ok(["gcr.io", "gcr.io", "", "p/app", "1.0", concat!("sha256:", hex64!())])),
        (concat!("localhost:5000/app:v2@sha256:", hex64!()), Ok(["localhost:5000", "localhost", "5000", "app", "v2", concat!("sha256:", hex64!())])),
        (concat!("nginx@sha512:", hex64!(), hex64!()), Ok(["docker.io", "docker.io", "", "nginx", "", concat!("sha512:", hex64!(), hex64!())])),
        ("nginx@sha256+b64u:0123456789ABCDEF0123456789abcdef", Ok(["docker.io", "docker.io", "", "nginx", "", "sha256+b64u:0123456789ABCDEF0123456789abcdef"])),
        ("nginx:_tag", Ok(["docker.io", "docker.io", "", "nginx", "_tag", ""])),
        ("nginx:V1.0-RC_2", Ok(["docker.io", "docker.io", "", "nginx", "V1.0-RC_2", ""])),
        (concat!("nginx:", hex64!(), hex64!()), Ok(["docker.io", "docker.io", "", "nginx", concat!(hex64!(), hex64!()), ""])),
        // 255 characters once normalized to "docker.io/library/<237 a>": the longest allowed.
        (concat!(a50!(), a50!(), a50!(), a50!(), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), Ok(["docker.io", "docker.io", "", concat!(a50!(), a50!(), a50!(), a50!(), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "", ""])),
        // Whole-input errors.
        ("", Err("Empty")),
        (" nginx", Err("Whitespace")),
        ("nginx ", Err("Whitespace")),
        ("nginx:tag with space", Err("Whitespace")),
        ("nginx\t", Err("Whitespace")),
        ("https://gcr.io/x", Err("Scheme")),
        (hex64!(), Err("ImageId")),
        (":latest", Err("MissingName")),
        (concat!("@sha256:", hex64!()), Err("MissingName")),
        // Tags and digests.
        ("nginx:", Err("EmptyTag")),
        ("nginx:.tag", Err("InvalidTag")),
        ("nginx:-tag", Err("InvalidTag")),
        ("nginx:t+g", Err("InvalidTag")),
        (concat!("nginx:", hex64!(), hex64!(), "0"), Err("InvalidTag")),
        ("nginx@", Err("EmptyDigest")),
        ("nginx@sha256:short", Err("InvalidDigest")),
        ("nginx@sha256", Err("InvalidDigest")),
        (concat!("nginx@SHA256:", hex64!()), Err("InvalidDigest")),
        ("nginx@sha256:0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF", Err("InvalidDigest")),
        ("nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde", Err("InvalidDigest")),
        ("nginx@md5:0123456789abcdef", Err("InvalidDigest")),
        ("nginx@sha512:0123456789abcdef0123456789abcdefg", Err("InvalidDigest")),
        (concat!("nginx@sha256:", hex64!(), "@x"), Err("InvalidDigest")),
        // Domains and ports.
        ("-bad.io/x", Err("InvalidDomain")),
        ("bad-.io/x", Err("InvalidDomain")),
        ("gcr..io/x", Err("InvalidDomain")),
        ("gcr.io./x", Err("InvalidDomain")),
        ("gcr_io.com/x", Err("InvalidDomain")),
        ("[::1/app", Err("InvalidDomain")),
        ("[::g]:5000/app", Err("InvalidDomain")),
        ("[::1]5000/app", Err("InvalidDomain")),
        ("localhost:/app", Err("InvalidPort")),
        ("localhost:50a/app", Err("InvalidPort")),
        ("registry:5000:5001/app", Err("InvalidPort")),
        ("nginx:1.0/x", Err("InvalidPort")),
        // Paths.
        ("acme/App", Err("Uppercase")),
        ("Nginx", Err("Uppercase")),
        ("gcr.io/Acme/app", Err("Uppercase")),
        ("a//b", Err("EmptyPathComponent")),
        ("a/b/", Err("EmptyPathComponent")),
        ("gcr.io/", Err("EmptyPathComponent")),
        ("/nginx", Err("EmptyPathComponent")),
        ("a/-b", Err("InvalidPathComponent")),
        ("a/b-", Err("InvalidPathComponent")),
        ("a/b..c", Err("InvalidPathComponent")),
        ("a/b___c", Err("InvalidPathComponent")),
        ("a/b._c", Err("InvalidPathComponent")),
        ("a/b!c", Err("InvalidPathComponent")),
        ("a/é", Err("InvalidPathComponent")),
        ("a:b:c", Err("InvalidPathComponent")),
        // Length: 300 characters, and one past the 255 boundary once normalized.
        (concat!(a50!(), a50!(), a50!(), a50!(), a50!(), a50!()), Err("NameTooLong")),
        (concat!(a50!(), a50!(), a50!(), a50!(), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), Err("NameTooLong")),
    ];

    fn reference_variant(error: &ReferenceError) -> &'static str {
        match error {
            ReferenceError::Empty => "Empty",
            ReferenceError::Whitespace { .. } => "Whitespace",
            ReferenceError::Scheme { .. } => "Scheme",
            ReferenceError::ImageId { .. } => "ImageId",
            ReferenceError::MissingName { .. } => "MissingName",
            ReferenceError::InvalidDomain { .. } => "InvalidDomain",
            ReferenceError::InvalidPort { .. } => "InvalidPort",
            ReferenceError::Uppercase { .. } => "Uppercase",
            ReferenceError::EmptyPathComponent { .. } => "EmptyPathComponent",
            ReferenceError::InvalidPathComponent { .. } => "InvalidPathComponent",
            ReferenceError::NameTooLong { .. } => "NameTooLong",
            ReferenceError::EmptyTag { .. } => "EmptyTag",
            ReferenceError::InvalidTag { .. } => "InvalidTag",
            ReferenceError::EmptyDigest { .. } => "EmptyDigest",
            ReferenceError::InvalidDigest { .. } => "InvalidDigest",
        }
    }

    fn fields(r: &ImageReference<'_>) -> [String; 6] {
        let text = |v: Option<&str>| v.unwrap_or_default().to_owned();
        [
            r.domain.to_owned(),
            r.host.to_owned(),
            text(r.port),
            r.path.to_owned(),
            text(r.tag),
            text(r.digest),
        ]
    }

    #[test]
    fn parse_table() {
        for (input, want) in PARSE_CASES {
            match (ImageReference::parse(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(fields(&got), *want, "input {input:?}"),
                (Err(got), Err(want)) => {
                    assert_eq!(reference_variant(&got), *want, "input {input:?}: {got}");
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
        // (input, Display, normalized_path)
        ("nginx", "docker.io/library/nginx", "library/nginx"),
        ("nginx:1.27", "docker.io/library/nginx", "library/nginx"),
        ("docker.io/nginx", "docker.io/library/nginx", "library/nginx"),
        ("index.docker.io/nginx", "docker.io/library/nginx", "library/nginx"),
        ("library/nginx", "docker.io/library/nginx", "library/nginx"),
        ("acme/app", "docker.io/acme/app", "acme/app"),
        ("index.docker.io/acme/app", "docker.io/acme/app", "acme/app"),
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
            assert_eq!(reference.normalized_path(), *normalized, "input {input:?}");
            let hub = display.starts_with("docker.io/");
            assert_eq!(reference.is_docker_hub(), hub, "input {input:?}");
        }
    }

    #[rustfmt::skip]
    const MATCH_CASES: &[(&str, &str, bool)] = &[
        // (pattern, image, matches)
        ("*.gcr.io", "eu.gcr.io/x", true),
        ("*.gcr.io", "eu.gcr.io/x:1", true),
        ("*.gcr.io", "gcr.io/x", false),
        ("*.gcr.io", "evilgcr.io/x", false),
        ("*.gcr.io", "a.b.gcr.io/x", false),
        ("*.gcr.io", "eu.gcr.io.evil.com/x", false),
        ("gcr.io", "gcr.io/p/app:1", true),
        ("gcr.io", "eu.gcr.io/x", false),
        ("https://gcr.io", "gcr.io/x", true),
        ("http://gcr.io/", "gcr.io/x", true),
        ("gcr*.io", "gcr.io/x", true),
        ("gcr.i*", "gcr.io/x", true),
        ("*-docker.pkg.dev", "europe-west1-docker.pkg.dev/p/r/i", true),
        ("*-docker.pkg.dev", "us-docker.pkg.dev/p/r/i", true),
        ("*-docker.pkg.dev", "europe-west1-maven.pkg.dev/p/r/i", false),
        ("*-docker.pkg.dev", "docker.pkg.dev/p/r/i", false),
        ("docker.*.rep.pkg.dev", "docker.europe-west1.rep.pkg.dev/p/r/i", true),
        ("docker.*.rep.pkg.dev", "docker.europe-west1.pkg.dev/p/r/i", false),
        ("docker.*.rep.pkg.dev", "maven.europe-west1.rep.pkg.dev/p/r/i", false),
        // Ports must be equal, or absent on both sides.
        ("registry.example.com:5000", "registry.example.com:5000/team/app:v1", true),
        ("registry.example.com:5000", "registry.example.com:5001/team/app", false),
        ("registry.example.com:5000", "registry.example.com/team/app", false),
        ("registry.example.com", "registry.example.com:5000/team/app", false),
        ("registry.example.com", "registry.example.com/team/app", true),
        ("localhost:5000", "localhost:5000/app", true),
        ("localhost", "localhost:5000/app", false),
        ("gcr.io:443", "gcr.io/x", false),
        // Paths are plain prefixes of "/" + the normalized path.
        ("gcr.io/my-project", "gcr.io/my-project/app", true),
        ("gcr.io/my-project", "gcr.io/other/app", false),
        ("gcr.io/my-project", "eu.gcr.io/my-project/app", false),
        ("*.gcr.io/my-project", "eu.gcr.io/my-project/app", true),
        ("gcr.io/proj", "gcr.io/project2/x", true),
        ("gcr.io/proj/", "gcr.io/project2/x", false),
        ("gcr.io/proj/", "gcr.io/proj/x", true),
        ("gcr.io/v2/my-project", "gcr.io/my-project/app", true),
        ("gcr.io/p/app", "gcr.io/p/app:1", true),
        ("gcr.io/p/app/", "gcr.io/p/app", false),
        // Case-sensitive, like Go's filepath.Match.
        ("GCR.io", "gcr.io/x", false),
        ("gcr.io", "GCR.io/x", false),
        ("GCR.io", "GCR.io/x", true),
        // Docker Hub: "docker.io" by the rules, "index.docker.io" by the kubelet's fallback.
        ("index.docker.io", "nginx", true),
        ("index.docker.io", "acme/app", true),
        ("index.docker.io", "docker.io/library/nginx", true),
        ("index.docker.io", "index.docker.io/acme/app", true),
        ("index.docker.io/v1/", "nginx", true),
        ("https://index.docker.io/v1/", "nginx", true),
        ("index.docker.io", "gcr.io/x", false),
        ("index.docker.io", "docker.io:5000/nginx", false),
        ("index.docker.io", "localhost/app", false),
        ("index.docker.io/acme", "acme/app", false),
        ("docker.io", "nginx", true),
        ("docker.io", "acme/app", true),
        ("docker.io", "index.docker.io/acme/app", true),
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

    #[rustfmt::skip]
    const PATTERN_CANONICAL_CASES: &[(&str, &str)] = &[
        // (input, as_str)
        ("gcr.io", "gcr.io"),
        ("*.gcr.io", "*.gcr.io"),
        ("*-docker.pkg.dev", "*-docker.pkg.dev"),
        ("docker.*.rep.pkg.dev", "docker.*.rep.pkg.dev"),
        ("registry.example.com:5000", "registry.example.com:5000"),
        ("gcr.io/my-project", "gcr.io/my-project"),
        ("gcr.io/proj/", "gcr.io/proj/"),
        ("https://gcr.io", "gcr.io"),
        ("http://gcr.io/", "gcr.io"),
        ("https://gcr.io/my-project", "gcr.io/my-project"),
        ("index.docker.io/v1/", "index.docker.io"),
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("gcr.io/v2/my-project", "gcr.io/my-project"),
        ("gcr.io/v1", "gcr.io/v1"),
        ("[::1]:5000", "[::1]:5000"),
        ("https://[fe80::1]:443/team", "[fe80::1]:443/team"),
        ("GCR.io", "GCR.io"),
        ("*", "*"),
    ];

    #[test]
    fn pattern_canonical_table() {
        for (input, want) in PATTERN_CANONICAL_CASES {
            let parsed = HostPattern::parse(input);
            let Ok(parsed) = parsed else {
                panic!("pattern {input:?} does not parse: {parsed:?}");
            };
            assert_eq!(parsed.as_str(), *want, "pattern {input:?}");
            assert_eq!(parsed.to_string(), *want, "pattern {input:?}");
            // The canonical text is written as an auths key and read back by the kubelet.
            assert_eq!(
                HostPattern::parse(parsed.as_str()).as_ref(),
                Ok(&parsed),
                "pattern {input:?}"
            );
        }
    }

    #[rustfmt::skip]
    const PATTERN_ERROR_CASES: &[(&str, &str)] = &[
        // (input, expected variant)
        ("", "Empty"),
        (" gcr.io", "Whitespace"),
        ("gcr.io\n", "Whitespace"),
        ("ftp://gcr.io", "UnsupportedScheme"),
        ("HTTPS://gcr.io", "UnsupportedScheme"),
        ("gcr.i?", "QueryOrFragment"),
        ("gcr.io/proj?x=1", "QueryOrFragment"),
        ("gcr.io#x", "QueryOrFragment"),
        ("https://", "EmptyHost"),
        ("/my-project", "EmptyHost"),
        (":5000", "EmptyHost"),
        ("gcr..io", "EmptyLabel"),
        (".gcr.io", "EmptyLabel"),
        ("gcr.io.", "EmptyLabel"),
        ("gcr_io.com", "BadHostCharacter"),
        ("user@gcr.io", "BadHostCharacter"),
        ("gcr.io%2f", "BadHostCharacter"),
        ("gcr.i[o]", "CharacterClass"),
        ("gcr.i\\o", "CharacterClass"),
        ("[a-z]*.gcr.io", "BadIpv6"),
        ("[::1", "BadIpv6"),
        ("[::g]:5000", "BadIpv6"),
        ("[::1]x", "BadIpv6"),
        ("[::1]", "Ipv6WithoutPort"),
        ("gcr.io:", "BadPort"),
        ("gcr.io:50a", "BadPort"),
        ("gcr.io:*", "BadPort"),
        ("gcr.io:5000:5001", "BadPort"),
        ("[::1]:", "BadPort"),
        ("gcr.io/proj/*", "BadPathCharacter"),
        ("gcr.io/p%20x", "BadPathCharacter"),
        ("gcr.io/My-Project", "UppercasePath"),
        ("gcr.io//proj", "EmptyPathSegment"),
        ("gcr.io/v1//proj", "EmptyPathSegment"),
        ("gcr.io/v1/v2/proj", "NestedApiVersion"),
    ];

    fn pattern_variant(error: &PatternError) -> &'static str {
        match error {
            PatternError::Empty => "Empty",
            PatternError::Whitespace { .. } => "Whitespace",
            PatternError::UnsupportedScheme { .. } => "UnsupportedScheme",
            PatternError::QueryOrFragment { .. } => "QueryOrFragment",
            PatternError::EmptyHost { .. } => "EmptyHost",
            PatternError::EmptyLabel { .. } => "EmptyLabel",
            PatternError::BadHostCharacter { .. } => "BadHostCharacter",
            PatternError::CharacterClass { .. } => "CharacterClass",
            PatternError::BadIpv6 { .. } => "BadIpv6",
            PatternError::Ipv6WithoutPort { .. } => "Ipv6WithoutPort",
            PatternError::BadPort { .. } => "BadPort",
            PatternError::BadPathCharacter { .. } => "BadPathCharacter",
            PatternError::UppercasePath { .. } => "UppercasePath",
            PatternError::EmptyPathSegment { .. } => "EmptyPathSegment",
            PatternError::NestedApiVersion { .. } => "NestedApiVersion",
        }
    }

    #[test]
    fn pattern_error_table() {
        for (input, want) in PATTERN_ERROR_CASES {
            match HostPattern::parse(input) {
                Ok(parsed) => panic!("pattern {input:?} parsed as {parsed:?}, want {want}"),
                Err(got) => {
                    assert_eq!(pattern_variant(&got), *want, "pattern {input:?}: {got}");
                    let quoted = format!("{input:?}");
                    assert!(
                        got.to_string().contains(&quoted),
                        "pattern {input:?}: message {got}"
                    );
                }
            }
        }
    }

    #[test]
    fn glob_label_table() {
        #[rustfmt::skip]
        const CASES: &[(&str, &str, bool)] = &[
            // (glob, label, matches)
            ("*", "", true),
            ("*", "abc", true),
            ("a*", "a", true),
            ("a*c", "abbbc", true),
            ("a*c", "abcd", false),
            ("*-docker", "europe-west1-docker", true),
            ("*-docker", "docker", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXcYb", false),
            ("**", "x", true),
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("abc", "ab", false),
        ];
        for (glob, label, want) in CASES {
            assert_eq!(
                glob_label(glob, label),
                *want,
                "glob {glob:?}, label {label:?}"
            );
        }
    }

    // The implementation before the single-pass rewrite of `ImageReference::parse` and
    // `HostPattern::matches`, kept as the oracle of the differential test below.

    fn parse_reference_model(input: &str) -> Result<ImageReference<'_>, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let owned = || input.to_owned();
        if model_has_space_or_control(input) {
            return Err(ReferenceError::Whitespace { input: owned() });
        }
        if input.contains("://") {
            return Err(ReferenceError::Scheme { input: owned() });
        }
        if is_image_id(input) {
            return Err(ReferenceError::ImageId { input: owned() });
        }

        // The digest goes first: it contains ':' itself, and '@' cannot occur anywhere else.
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (input, None),
        };
        if let Some(digest) = digest {
            if digest.is_empty() {
                return Err(ReferenceError::EmptyDigest { input: owned() });
            }
            model_check_digest(digest).map_err(|reason| ReferenceError::InvalidDigest {
                input: owned(),
                digest: digest.to_owned(),
                reason,
            })?;
        }

        // A ':' is a tag separator only after the last '/'; before it, it introduces a port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            if tag.is_empty() {
                return Err(ReferenceError::EmptyTag { input: owned() });
            }
            if !is_tag(tag) {
                return Err(ReferenceError::InvalidTag {
                    input: owned(),
                    tag: tag.to_owned(),
                });
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::MissingName { input: owned() });
        }

        let (written_domain, path) = model_split_docker_domain(name);
        let domain = match written_domain {
            None => DOCKER_HUB,
            Some(LEGACY_DOCKER_HUB) => DOCKER_HUB,
            Some(domain) => domain,
        };
        let (host, port) = model_split_host_port(domain).map_err(|problem| match problem {
            ModelDomainProblem::Host => ReferenceError::InvalidDomain {
                input: owned(),
                domain: domain.to_owned(),
            },
            ModelDomainProblem::Port(port) => ReferenceError::InvalidPort {
                input: owned(),
                port: port.to_owned(),
            },
        })?;

        // Checked before the component grammar, like distribution, so "acme/App" gets the
        // message that tells the user what to change.
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                input: owned(),
                path: path.to_owned(),
            });
        }
        for component in path.split('/') {
            if component.is_empty() {
                return Err(ReferenceError::EmptyPathComponent { input: owned() });
            }
            if !model_is_path_component(component) {
                return Err(ReferenceError::InvalidPathComponent {
                    input: owned(),
                    component: component.to_owned(),
                });
            }
        }

        let reference = ImageReference {
            domain,
            host,
            port,
            path,
            tag,
            digest,
        };
        // distribution measures the normalized name ("docker.io/library/nginx"), not the input.
        let official = reference.domain == DOCKER_HUB && !reference.path.contains('/');
        let length = reference.domain.len()
            + 1
            + if official { OFFICIAL_PREFIX.len() } else { 0 }
            + reference.path.len();
        if length > NAME_MAX {
            return Err(ReferenceError::NameTooLong {
                input: owned(),
                length,
            });
        }
        Ok(reference)
    }

    fn model_split_docker_domain(name: &str) -> (Option<&str>, &str) {
        match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (Some(first), remainder)
            }
            _ => (None, name),
        }
    }

    enum ModelDomainProblem<'a> {
        Host,
        Port(&'a str),
    }

    // `host[:port]` with host := domain-name | IPv4 | "[" IPv6 "]", as distribution's grammar.
    fn model_split_host_port(domain: &str) -> Result<(&str, Option<&str>), ModelDomainProblem<'_>> {
        let (host, port) = if let Some(bracketed) = domain.strip_prefix('[') {
            let (address, after) = bracketed.split_once(']').ok_or(ModelDomainProblem::Host)?;
            if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                return Err(ModelDomainProblem::Host);
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(ModelDomainProblem::Host)?),
            };
            (address, port)
        } else {
            let (host, port) = match domain.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (domain, None),
            };
            // An IPv4 address is a valid domain name syntactically, so one check covers both.
            if !host.split('.').all(model_is_domain_component) {
                return Err(ModelDomainProblem::Host);
            }
            (host, port)
        };
        if let Some(port) = port
            && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ModelDomainProblem::Port(port));
        }
        Ok((host, port))
    }

    // `[a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
    fn model_is_domain_component(component: &str) -> bool {
        let bytes = component.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                first.is_ascii_alphanumeric()
                    && last.is_ascii_alphanumeric()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            }
            _ => false,
        }
    }

    // `[a-z0-9]+ (separator [a-z0-9]+)*` with separator := "." | "_" | "__" | "-"+
    fn model_is_path_component(component: &str) -> bool {
        let bytes = component.as_bytes();
        let alphanumeric = |i: usize| {
            bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        let mut i = 0;
        loop {
            // A run of [a-z0-9]+ is required at the start and after every separator.
            if !alphanumeric(i) {
                return false;
            }
            while alphanumeric(i) {
                i += 1;
            }
            match bytes.get(i) {
                None => return true,
                Some(b'.') => i += 1,
                Some(b'_') => {
                    i += if bytes.get(i + 1) == Some(&b'_') {
                        2
                    } else {
                        1
                    }
                }
                Some(b'-') => {
                    while bytes.get(i) == Some(&b'-') {
                        i += 1;
                    }
                }
                Some(_) => return false,
            }
        }
    }

    fn model_check_digest(digest: &str) -> Result<(), &'static str> {
        let Some((algorithm, encoded)) = digest.split_once(':') else {
            return Err("expected <algorithm>:<hex>");
        };
        let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !algorithm_ok {
            return Err(
                "the algorithm must be runs of a-z and 0-9, joined by '+', '.', '_' or '-'",
            );
        }
        let encoded_ok = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        if !encoded_ok {
            return Err("the encoded part must be letters, digits, '=', '_' or '-'");
        }
        if algorithm == "sha256" {
            if encoded.len() != 64 || !encoded.bytes().all(is_lower_hex) {
                return Err("sha256 needs exactly 64 lowercase hex characters");
            }
        } else if encoded.len() < 32 || !encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the encoded part needs at least 32 hex characters");
        }
        Ok(())
    }

    fn model_has_space_or_control(text: &str) -> bool {
        if text.is_ascii() {
            // ASCII whitespace and control characters are the bytes up to ' ', and DEL.
            text.bytes().any(|b| b <= b' ' || b == 0x7f)
        } else {
            text.chars().any(|c| c.is_whitespace() || c.is_control())
        }
    }

    fn matches_model(pattern: &HostPattern, image: &ImageReference<'_>) -> bool {
        // isDefaultRegistryMatch: the "index.docker.io" key serves Docker Hub images. The
        // kubelet also applies it to any portless single-word domain ("localhost/app",
        // "Foo/bar"); that would hand Docker Hub credentials to another registry, so only
        // real Docker Hub images are matched here.
        if pattern.text == DEFAULT_REGISTRY_KEY && image.is_docker_hub() {
            return true;
        }
        if pattern.port() != image.port {
            return false;
        }
        // Go's net.SplitHostPort strips IPv6 brackets only when a port follows; without one
        // the kubelet compares the bracketed text.
        let target_host = if image.port.is_none() && image.domain.starts_with('[') {
            image.domain
        } else {
            image.host
        };
        let mut pattern_labels = pattern.host().split('.');
        let mut target_labels = target_host.split('.');
        loop {
            match (pattern_labels.next(), target_labels.next()) {
                (Some(pattern), Some(target)) if glob_label(pattern, target) => {}
                (None, None) => break,
                _ => return false,
            }
        }
        path_prefix_matches(pattern.path(), image)
    }

    /// What mutations insert and substitute: the separators, characters each grammar treats
    /// differently, ASCII and Unicode whitespace and control characters, and a non-ASCII letter.
    const ALPHABET: &[char] = &[
        'a', 'Z', '0', 'f', '.', ':', '/', '@', '-', '_', '[', ']', '+', '=', ' ', '\t', '\u{7f}',
        'é', '\u{a0}', '\u{85}',
    ];

    fn seeds() -> Vec<String> {
        let mut seeds: Vec<String> = [
            "gcr.io/acme/app:v1",
            concat!("europe-west1-docker.pkg.dev/p/r/img@sha256:", hex64!()),
            concat!("eu.gcr.io/acme-prod/api:1.2.3@sha256:", hex64!()),
            concat!("acme/app@sha512:", hex64!()),
            "localhost:5000/x",
            "[::1]:5000/a/b:tag",
            "[fe80::1]/x",
            "nginx",
            "nginx:1.27",
            "docker.io/library/nginx:1.25",
            "index.docker.io/acme/app",
            "docker.europe-west1.rep.pkg.dev/p/r/m:2.4.1",
            "registry.example.com:8443/team/a__b/c-d.e:latest",
            "192.168.0.1:5000/app",
        ]
        .map(str::to_owned)
        .into();
        // At the 255-character limit once normalized: one more character is one too many.
        seeds.push(format!("gcr.io/{}", "a".repeat(248)));
        seeds.push(format!("acme/{}", "b".repeat(245)));
        seeds
    }

    /// Char boundaries of `text`, its end included.
    fn boundaries(text: &str) -> Vec<usize> {
        text.char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect()
    }

    /// Every single insertion, deletion and replacement of one character from [`ALPHABET`].
    fn single_mutations(seed: &str, out: &mut Vec<String>) {
        let at = boundaries(seed);
        for (k, &start) in at.iter().enumerate() {
            let next = at.get(k + 1).copied();
            for &c in ALPHABET {
                out.push(format!("{}{c}{}", &seed[..start], &seed[start..]));
                if let Some(end) = next {
                    out.push(format!("{}{c}{}", &seed[..start], &seed[end..]));
                }
            }
            if let Some(end) = next {
                out.push(format!("{}{}", &seed[..start], &seed[end..]));
            }
        }
    }

    /// One random insertion, deletion or replacement.
    fn mutate(text: &mut String, rng: &mut Rng) {
        let at = boundaries(text);
        let k = rng.below(at.len());
        let c = ALPHABET[rng.below(ALPHABET.len())];
        let (start, end) = (at[k], at.get(k + 1).copied());
        match (rng.below(3), end) {
            (0, Some(end)) => text.replace_range(start..end, ""),
            (1, Some(end)) => text.replace_range(start..end, c.encode_utf8(&mut [0; 4])),
            _ => text.insert(start, c),
        }
    }

    fn differential_inputs() -> Vec<String> {
        let mut inputs: Vec<String> = PARSE_CASES
            .iter()
            .map(|(input, _)| *input)
            .chain(DISPLAY_CASES.iter().map(|(input, _, _)| *input))
            .chain(MATCH_CASES.iter().map(|(_, image, _)| *image))
            .chain(PATTERN_ERROR_CASES.iter().map(|(input, _)| *input))
            .map(str::to_owned)
            .collect();
        let seeds = seeds();
        for seed in &seeds {
            single_mutations(seed, &mut inputs);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..60_000 {
            let mut text = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut text, &mut rng);
            }
            inputs.push(text);
        }
        // Short strings of the alphabet alone reach the corners the seeds do not.
        for _ in 0..20_000 {
            let text: String = (0..rng.below(9))
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect();
            inputs.push(text);
        }
        inputs
    }

    #[test]
    fn parse_and_matches_agree_with_the_model() {
        let patterns: Vec<HostPattern> = MATCH_CASES
            .iter()
            .map(|(pattern, _, _)| *pattern)
            .chain(PATTERN_CANONICAL_CASES.iter().map(|(input, _)| *input))
            .chain([
                "docker.io",
                "*",
                "*.*",
                "*:5000",
                "[fe80::1]:443",
                "192.168.0.1:5000/app",
                "*o*.*",
                "*.i*",
                "l*t:5000",
                "e*-d*r.p*g.dev",
                "*c*r.io",
            ])
            .filter_map(|pattern| HostPattern::parse(pattern).ok())
            .collect();
        let mut variants = std::collections::BTreeSet::new();
        let inputs = differential_inputs();
        for input in &inputs {
            let got = ImageReference::parse(input);
            assert_eq!(got, parse_reference_model(input), "input {input:?}");
            match &got {
                Ok(reference) => {
                    variants.insert("Ok");
                    assert_eq!(
                        reference.normalized_name(),
                        reference.to_string(),
                        "input {input:?}"
                    );
                    for pattern in &patterns {
                        assert_eq!(
                            pattern.matches(reference),
                            matches_model(pattern, reference),
                            "pattern {pattern}, input {input:?}"
                        );
                    }
                }
                Err(error) => {
                    variants.insert(reference_variant(error));
                }
            }
        }
        // The generated set must reach every outcome, or the comparison proves little.
        let all = [
            "Ok",
            "Empty",
            "Whitespace",
            "Scheme",
            "ImageId",
            "MissingName",
            "InvalidDomain",
            "InvalidPort",
            "Uppercase",
            "EmptyPathComponent",
            "InvalidPathComponent",
            "NameTooLong",
            "EmptyTag",
            "InvalidTag",
            "EmptyDigest",
            "InvalidDigest",
        ];
        for variant in all {
            assert!(variants.contains(variant), "no input gives {variant}");
        }
        assert!(inputs.len() > 100_000, "{} inputs", inputs.len());
    }

    #[test]
    fn has_space_or_control_agrees_with_the_model() {
        let mut inputs = differential_inputs();
        inputs.extend(['\u{2028}', '\u{3000}', '\u{9f}', '\u{200b}'].map(|c| format!("a{c}b")));
        for input in &inputs {
            assert_eq!(
                has_space_or_control(input),
                model_has_space_or_control(input),
                "input {input:?}"
            );
        }
    }
}
