//! Lists a person may write as one value: `to: ops@example.com` is `to: [ops@example.com]`.
//! Each item keeps where it is written; a value alone keeps its own place.

use schemars::JsonSchema;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Text;

// The JSON Schema shape of such a list: one value, or a list of them (inlined, so that each
// field keeps its own description).
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(inline)]
#[allow(dead_code)] // only its schema is used
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

/// A list of text values, or one value standing for a list of one (`deserialize_with`). An
/// empty value (`to:`) is an empty list.
pub fn one_or_many<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Text>, D::Error> {
    let written = Spanned::<Written>::deserialize(de)?;
    Ok(match written.value {
        Written::Many(items) => items,
        Written::One(value) => vec![Spanned::new(value, written.referenced, written.defined)],
        Written::Nothing => Vec::new(),
    })
}

/// [`one_or_many`] for an optional field: absent is `None`, present is a list.
pub fn maybe_one_or_many<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<Text>>, D::Error> {
    one_or_many(de).map(Some)
}

/// `control_checks:`, read on its own (a top-level section).
pub struct Texts(pub Vec<Text>);

impl<'de> Deserialize<'de> for Texts {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        one_or_many(de).map(Texts)
    }
}

/// What was written: a list, one value, or nothing.
enum Written {
    Many(Vec<Text>),
    One(String),
    Nothing,
}

impl<'de> Deserialize<'de> for Written {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(WrittenVisitor)
    }
}

struct WrittenVisitor;

// The parser hands a plain scalar over as what it looks like (`42`, `true`, `1.5`); in a list of
// text it is that text, as the list's own items are read.
impl<'de> Visitor<'de> for WrittenVisitor {
    type Value = Written;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("one value or a list of them")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Written, E> {
        Ok(Written::One(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Written, E> {
        Ok(Written::One(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Written, E> {
        Ok(Written::One(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Written, E> {
        Ok(Written::One(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Written, E> {
        Ok(Written::One(v.to_string()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Written, E> {
        Ok(Written::One(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Written, E> {
        Ok(Written::Nothing)
    }
    fn visit_none<E: de::Error>(self) -> Result<Written, E> {
        Ok(Written::Nothing)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Written, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Text>()? {
            items.push(item);
        }
        Ok(Written::Many(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "one_or_many")]
        to: Vec<Text>,
    }

    fn read(text: &str) -> Vec<(String, u64, u64)> {
        let holder: Holder = serde_saphyr::from_str(text).unwrap();
        holder
            .to
            .into_iter()
            .map(|t| (t.value, t.referenced.line(), t.referenced.column()))
            .collect()
    }

    #[test]
    fn one_value_is_a_list_of_one_at_its_own_place() {
        assert_eq!(
            read("to: ops@example.com\n"),
            [("ops@example.com".into(), 1, 5)]
        );
        assert_eq!(
            read("to: [a@example.com, b@example.com]\n"),
            [
                ("a@example.com".into(), 1, 6),
                ("b@example.com".into(), 1, 21)
            ]
        );
        assert_eq!(
            read("to:\n  - a@example.com\n"),
            [("a@example.com".into(), 2, 5)]
        );
        assert_eq!(read("to: 42\n"), [("42".into(), 1, 5)]);
        assert!(read("to:\n").is_empty());
        assert!(read("to: []\n").is_empty());
    }
}
