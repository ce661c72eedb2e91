//! Every key path the loader's serde schema accepts, read from the schema itself.
//!
//! A deserializer that holds no data walks a `Deserialize` type and records each struct
//! field it is asked for, so `config/example.toml` can be checked against what the loader
//! really accepts rather than against a list someone has to remember to update.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess};
use serde::forward_to_deserialize_any;

/// The dotted key paths of `T`'s schema whose values are not tables themselves (an array
/// of tables adds no index: `allowed_domain.domain`; a free-form map such as `[hosts]` is
/// one leaf).
pub(super) fn leaf_keys<'de, T: de::Deserialize<'de>>() -> BTreeSet<String> {
    let seen = RefCell::new(Seen::default());
    // The values the walker invents (false, 0, "") may fail a type's own checks; the
    // field names were recorded before that, which is all this is for.
    let _ = T::deserialize(Walker {
        path: String::new(),
        seen: &seen,
    });
    let seen = seen.into_inner();
    seen.paths
        .iter()
        .filter(|p| !seen.tables.contains(*p))
        .cloned()
        .collect()
}

#[derive(Default)]
struct Seen {
    paths: BTreeSet<String>,
    tables: BTreeSet<String>,
}

/// Numbers get a zero of their kind; a number's field name is all the walk needs.
macro_rules! scalars {
    ($($($method:ident)+ => $visit:ident($zero:expr)),+ $(,)?) => {
        $($(
            fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                visitor.$visit($zero)
            }
        )+)+
    };
}

struct Walker<'a> {
    path: String,
    seen: &'a RefCell<Seen>,
}

impl<'de> Deserializer<'de> for Walker<'_> {
    type Error = Error;

    // Scalars and untagged enums (which buffer through `deserialize_any`) get a string.
    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("")
    }
    fn deserialize_bool<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(false)
    }
    scalars! {
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 => visit_u64(0),
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 => visit_i64(0),
        deserialize_f32 deserialize_f64 => visit_f64(0.0),
    }
    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }
    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(OneElement { walker: Some(self) })
    }
    fn deserialize_map<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.seen.borrow_mut().paths.insert(self.path);
        visitor.visit_map(Fields {
            fields: &[],
            next: 0,
            path: String::new(),
            seen: self.seen,
        })
    }
    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        {
            let mut seen = self.seen.borrow_mut();
            seen.paths.insert(self.path.clone());
            seen.tables.insert(self.path.clone());
        }
        visitor.visit_map(Fields {
            fields,
            next: 0,
            path: self.path,
            seen: self.seen,
        })
    }

    forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct newtype_struct tuple
        tuple_struct enum identifier ignored_any
    }
}

/// A sequence of one element, so the element type's fields are walked once.
struct OneElement<'a> {
    walker: Option<Walker<'a>>,
}

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.walker.take().map(|w| seed.deserialize(w)).transpose()
    }
}

/// A struct's fields, each recorded under its dotted path as it is handed out.
struct Fields<'a> {
    fields: &'static [&'static str],
    next: usize,
    path: String,
    seen: &'a RefCell<Seen>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(name) = self.fields.get(self.next) else {
            return Ok(None);
        };
        let key: StrDeserializer<'_, Error> = name.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let name = self.fields[self.next];
        self.next += 1;
        let path = if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        };
        self.seen.borrow_mut().paths.insert(path.clone());
        seed.deserialize(Walker {
            path,
            seen: self.seen,
        })
    }
}

/// The dotted key paths a documentation file names, set or shown commented out
/// (`# key = value`, for keys that cannot all be set at once), arrays of tables without an
/// index, inline tables like tables, with the tables themselves.
pub(super) fn documented_keys(text: &str) -> Result<BTreeSet<String>, toml::de::Error> {
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_key_line(rest) || is_table_header(rest) => rest,
            _ => line,
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    Ok(document_keys(&uncommented.parse()?))
}

fn is_key_line(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    })
}

fn is_table_header(line: &str) -> bool {
    let name = line.trim_start_matches('[').trim_end_matches(']');
    line.starts_with('[')
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
}

fn document_keys(doc: &toml::Table) -> BTreeSet<String> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
        out.insert(prefix.to_string());
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            toml::Value::Array(items) => {
                for item in items.iter().filter(|i| i.is_table()) {
                    walk(prefix, item, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for (k, v) in doc {
        walk(k, v, &mut out);
    }
    out
}
