//! Reading the config's YAML tree without stopping at the first surprise.
//!
//! serde stops at the first error, and its messages quote the offending value
//! (`invalid type: string "…", expected a map`). Here every field of the file's shape is a [`Node`]:
//! reading one never fails; a node of the wrong kind is kept as [`Node::Wrong`], which records only
//! the *kind* of what was found (a string, a list, ...) and what was expected, never the value.
//! Validation then turns each into a `FieldError` with the field's path, so type errors are reported
//! all at once, alongside the semantic ones.
//!
//! Unknown keys are collected by [`serde_ignored`] while the tree is read (the shape's structs do not
//! deny unknown fields); [`read`] returns their paths.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::SeqAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess};

/// The kind of YAML node found where another was expected. Deliberately carries no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Boolean,
    Number,
    String,
    List,
    Mapping,
    Tagged,
    Bytes,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Boolean => "a boolean",
            Self::Number => "a number",
            Self::String => "a string",
            Self::List => "a list",
            Self::Mapping => "a mapping",
            Self::Tagged => "a tagged value",
            Self::Bytes => "bytes",
        })
    }
}

/// One field of the file's shape, read without failing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Node<T> {
    /// Not in the file, or null.
    #[default]
    Absent,
    /// Something of another kind: what was expected and the kind found, not the value.
    Wrong {
        expected: &'static str,
        found: Found,
    },
    Read(T),
}

/// How a type of the file's shape is read from the node kinds it accepts. Every other kind makes a
/// [`Node::Wrong`]; the default methods accept nothing (and consume what they are given).
pub trait Shape<'de>: Sized {
    /// What the field expects, as a message says it: "a string", "a mapping".
    const EXPECTED: &'static str;

    /// What null (or an empty value, `key:`) means; `None` is [`Node::Absent`].
    fn from_null() -> Option<Self> {
        None
    }

    fn from_str(_text: &str) -> Option<Self> {
        None
    }

    fn from_bool(_value: bool) -> Option<Self> {
        None
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        // Into a throwaway tree rather than `IgnoredAny`, which `serde_ignored` would report.
        while seq.next_element::<serde_norway::Value>()?.is_some() {}
        Ok(None)
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map
            .next_entry::<serde_norway::Value, serde_norway::Value>()?
            .is_some()
        {}
        Ok(None)
    }
}

impl<'de> Shape<'de> for String {
    const EXPECTED: &'static str = "a string";

    fn from_str(text: &str) -> Option<Self> {
        Some(text.to_owned())
    }
}

impl<'de> Shape<'de> for bool {
    const EXPECTED: &'static str = "true or false";

    fn from_bool(value: bool) -> Option<Self> {
        Some(value)
    }
}

impl<'de, T: Deserialize<'de>> Shape<'de> for Vec<T> {
    const EXPECTED: &'static str = "a list";

    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        Vec::deserialize(SeqAccessDeserializer::new(seq)).map(Some)
    }
}

/// A mapping whose keys and values are read as strings (label selectors' `matchLabels`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries(pub Vec<(Node<String>, Node<String>)>);

impl<'de> Shape<'de> for Entries {
    const EXPECTED: &'static str = "a mapping of strings to strings";

    fn from_null() -> Option<Self> {
        Some(Self::default())
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node<String>>()? {
            entries.push((key, map.next_value::<Node<String>>()?));
        }
        Ok(Some(Self(entries)))
    }
}

/// Implements [`Shape`] for structs of the file's shape: read from a mapping, with serde's derive
/// (which must not deny unknown fields: `serde_ignored` reports them). `null_is_empty: true` makes
/// `key:` (null) mean an empty mapping rather than an absent one.
macro_rules! mapping_shape {
    ($($ty:ty { null_is_empty: $null:expr }),* $(,)?) => {$(
        impl<'de> $crate::config::shape::Shape<'de> for $ty {
            const EXPECTED: &'static str = "a mapping";

            fn from_null() -> Option<Self> {
                $null.then(Self::default)
            }

            fn from_map<A: serde::de::MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
                <Self as serde::Deserialize>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )
                .map(Some)
            }
        }
    )*};
}
pub(crate) use mapping_shape;

impl<'de, T: Shape<'de>> Deserialize<'de> for Node<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor(PhantomData))
    }
}

struct NodeVisitor<T>(PhantomData<T>);

impl<T> NodeVisitor<T> {
    fn wrong<'de, E>(found: Found) -> Result<Node<T>, E>
    where
        T: Shape<'de>,
    {
        Ok(Node::Wrong {
            expected: T::EXPECTED,
            found,
        })
    }

    fn or_wrong<'de>(value: Option<T>, found: Found) -> Node<T>
    where
        T: Shape<'de>,
    {
        match value {
            Some(value) => Node::Read(value),
            None => Node::Wrong {
                expected: T::EXPECTED,
                found,
            },
        }
    }
}

impl<'de, T: Shape<'de>> de::Visitor<'de> for NodeVisitor<T> {
    type Value = Node<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(T::from_null().map_or(Node::Absent, Node::Read))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Self::or_wrong(T::from_bool(value), Found::Boolean))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Self::wrong(Found::Number)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
        Self::wrong(Found::Number)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Self::wrong(Found::Number)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
        Self::wrong(Found::Number)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Self::wrong(Found::Number)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Self::or_wrong(T::from_str(text), Found::String))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Self::wrong(Found::Bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Ok(Self::or_wrong(T::from_seq(seq)?, Found::List))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(Self::or_wrong(T::from_map(map)?, Found::Mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        // A YAML tag (`!name value`): consumed, never used.
        let (_, variant) = data.variant::<serde_norway::Value>()?;
        variant.newtype_variant::<serde_norway::Value>()?;
        Self::wrong(Found::Tagged)
    }
}

/// One step of a field path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A field path as `registries[0].credentials.basicAuth`; the empty path is `(top level)`.
pub fn format_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    if out.is_empty() {
        out.push_str(TOP_LEVEL);
    }
    out
}

/// How the document itself is named in a field path.
pub const TOP_LEVEL: &str = "(top level)";

fn segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            segments(parent, out);
            out.push(Segment::Index(*index));
        }
        Path::Map { parent, key } => {
            segments(parent, out);
            out.push(Segment::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent, out),
    }
}

/// Reads a parsed YAML tree into `T`'s shape, returning it with the path of every key the shape
/// does not know. Reading cannot fail on the tree's content; an error here would come from the
/// tree itself, and its text is not used.
pub fn read<'de, T: Shape<'de>>(
    value: serde_norway::Value,
) -> Result<(Node<T>, Vec<Vec<Segment>>), serde_norway::Error> {
    let mut unknown = Vec::new();
    let node = serde_ignored::deserialize(value, |path| {
        let mut out = Vec::new();
        segments(&path, &mut out);
        unknown.push(out);
    })?;
    Ok((node, unknown))
}

/// The field names serde's derive gives a struct, read from the struct's own `Deserialize` so the
/// list of known fields in "unknown field" messages cannot drift from the shape.
pub fn fields_of<T: Deserialize<'static>>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldNames(&mut fields));
    fields.unwrap_or(&[])
}

/// A deserializer that only records the field list a derived struct asks for, then gives up.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only field names are read"))
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("only field names are read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}
