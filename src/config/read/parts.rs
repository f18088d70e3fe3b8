//! How one part of probes.yaml is read on its own: a section or a site with some of its keys
//! left out (`Part`), a section written empty (`OrEmpty`), a site given up but for its name
//! (`NameOnly`). Each reads what the parser hands it and nothing else: no problem is judged here.

use std::marker::PhantomData;

use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde::Deserialize;

/// A section or a site: its type read with the keys `left_out` left out, the path of an error
/// kept in `path`.
pub struct Part<'a, T> {
    left_out: &'a [String],
    path: &'a mut Option<String>,
    read: PhantomData<T>,
}

impl<'a, T> Part<'a, T> {
    pub fn new(left_out: &'a [String], path: &'a mut Option<String>) -> Self {
        Self {
            left_out,
            path,
            read: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Part<'_, T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<T, D::Error> {
        let without = Without {
            inner: de,
            keys: self.left_out,
        };
        serde_path_to_error::deserialize(without).map_err(|e| {
            *self.path = Some(e.path().to_string());
            e.into_inner()
        })
    }
}

/// A section written empty (`smtp:` and nothing below it, perhaps its keys at the left margin
/// under it) is `None`, not an error: what is wrong there is those keys.
pub struct OrEmpty<'a, T>(pub Part<'a, T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for OrEmpty<'_, T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Option<T>, D::Error> {
        de.deserialize_option(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for OrEmpty<'_, T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a section")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Option<T>, D::Error> {
        self.0.deserialize(de).map(Some)
    }
}

/// A deserializer that hands a struct its map without some keys (their values read past).
struct Without<'k, D> {
    inner: D,
    keys: &'k [String],
}

macro_rules! forward {
    ($($method:ident),*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.inner.$method(visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Without<'_, D> {
    type Error = D::Error;
    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any
    );
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_unit_struct(name, visitor)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_newtype_struct(name, visitor)
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple(len, visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_enum(name, variants, visitor)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let keys = self.keys;
        if keys.is_empty() {
            return self.inner.deserialize_struct(name, fields, visitor);
        }
        self.inner
            .deserialize_struct(name, fields, WithoutVisitor { visitor, keys })
    }
}

struct WithoutVisitor<'k, V> {
    visitor: V,
    keys: &'k [String],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for WithoutVisitor<'_, V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.visitor.expecting(f)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(WithoutKeys {
            map,
            keys: self.keys,
        })
    }
}

struct WithoutKeys<'k, A> {
    map: A,
    keys: &'k [String],
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WithoutKeys<'_, A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.map.next_key::<String>()? else {
                return Ok(None);
            };
            if self.keys.contains(&key) {
                self.map.next_value::<IgnoredAny>()?;
                continue;
            }
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// A site given up: only its name (or its URL's host) read, leniently.
#[derive(Default)]
pub struct NameOnly {
    name: Option<String>,
    url: Option<String>,
}

impl NameOnly {
    pub fn name(self) -> Option<String> {
        let host = || {
            self.url
                .as_deref()
                .and_then(|u| crate::settings::Target::parse(u.trim()).ok())
                .map(|t| t.host().to_string())
        };
        self.name
            .as_deref()
            .map(|n| n.trim().to_string())
            .or_else(host)
    }
}

impl<'de> Deserialize<'de> for NameOnly {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(NameOnlyVisitor)
    }
}

struct NameOnlyVisitor;

impl<'de> Visitor<'de> for NameOnlyVisitor {
    type Value = NameOnly;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a site")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NameOnly, A::Error> {
        let mut site = NameOnly::default();
        while let Some(Loose(key)) = map.next_key::<Loose>()? {
            match key.as_deref() {
                Some("name") => site.name = map.next_value::<Loose>()?.0,
                Some("url") => site.url = map.next_value::<Loose>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(site)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<NameOnly, E> {
        // `- example.com`: a site written as its URL alone.
        Ok(NameOnly {
            name: None,
            url: Some(v.to_string()),
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NameOnly, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(NameOnly::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<NameOnly, E> {
        Ok(NameOnly::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<NameOnly, E> {
        Ok(NameOnly::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<NameOnly, E> {
        Ok(NameOnly::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<NameOnly, E> {
        Ok(NameOnly::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<NameOnly, E> {
        Ok(NameOnly::default())
    }
}

/// Any value, as text when it is one value.
struct Loose(Option<String>);

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose, E> {
        Ok(Loose(Some(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Loose, E> {
        Ok(Loose(Some(v.to_string())))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Loose, E> {
        Ok(Loose(Some(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Loose, E> {
        Ok(Loose(Some(v.to_string())))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Loose, E> {
        Ok(Loose(Some(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose(None))
    }
}
