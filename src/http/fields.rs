//! Field types of the typed request bodies: each checks its value while serde reads it, so the
//! one-pass parse ([`crate::request_json::parse`]) refuses a bad value with the field's path,
//! what would be valid, and the kind of value sent — never the value itself.
//!
//! - [`Whole`]: a whole number in a range fixed by the type.
//! - [`NonEmpty`]: text with something besides white space in it.
//! - [`present`]: for `Option` fields that may be left out but not sent as `null`.
//! - [`Object`]: a struct that must come as a JSON object.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// A whole number from `MIN` to `MAX`. A negative, fractional or out-of-range number is refused
/// naming the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole<const MIN: u64, const MAX: u64>(pub u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Whole<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Range<const MIN: u64, const MAX: u64>;
        impl<const MIN: u64, const MAX: u64> Visitor<'_> for Range<MIN, MAX> {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a whole number from {MIN} to {MAX}")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
                if (MIN..=MAX).contains(&n) {
                    Ok(n)
                } else {
                    Err(E::invalid_value(Unexpected::Unsigned(n), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(n), &self)),
                }
            }
        }
        deserializer.deserialize_u64(Range::<MIN, MAX>).map(Whole)
    }
}

/// Text that is not empty or only white space; kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmpty(pub String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(NonEmptyVisitor).map(NonEmpty)
    }
}

/// Reads a [`NonEmpty`] string; also what other field types use for their text.
pub struct NonEmptyVisitor;

impl Visitor<'_> for NonEmptyVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-empty string")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
        self.visit_string(text.to_string())
    }
    fn visit_string<E: de::Error>(self, text: String) -> Result<String, E> {
        if text.trim().is_empty() {
            return Err(E::invalid_value(Unexpected::Str(&text), &self));
        }
        Ok(text)
    }
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<T>`: a field left out is
/// `None`, a field sent as `null` is refused as `T` refuses it.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A body or field that must be a JSON object: what it looks like, for the message when it is
/// not.
pub trait Shape {
    /// E.g. `an object like {"size": 8}`.
    const SHAPE: &'static str;
}

/// `T` read from a JSON object only. serde's derived `Deserialize` also takes an array of the
/// fields in order (`[8]` for `{"size": 8}`), a form no endpoint documents; this refuses it,
/// saying what shape was expected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de> + Shape> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Shape> Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::SHAPE)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Fields(PhantomData)).map(Object)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::request_json::{JsonError, parse};

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        #[serde(default, deserialize_with = "present")]
        n: Option<Whole<1, 10>>,
        #[serde(default, deserialize_with = "present")]
        text: Option<NonEmpty>,
    }

    impl Shape for Body {
        const SHAPE: &'static str = "an object like {\"n\": 1}";
    }

    fn message(text: &str) -> String {
        match parse::<Object<Body>>(text.as_bytes()) {
            Err(JsonError { message, .. }) => message,
            Ok(body) => panic!("accepted {text}: {body:?}"),
        }
    }

    #[test]
    fn whole_numbers_refuse_what_is_out_of_range_naming_the_range() {
        assert_eq!(parse::<Object<Body>>(br#"{"n": 10}"#).ok().and_then(|b| b.0.n), Some(Whole(10)));
        assert_eq!(parse::<Object<Body>>(b"{}").ok().map(|b| b.0.n), Some(None));
        for (body, got) in [
            (r#"{"n": 0}"#, "got an integer"),
            (r#"{"n": 11}"#, "got an integer"),
            (r#"{"n": -1}"#, "got an integer"),
            (r#"{"n": 2.5}"#, "got a number"),
            (r#"{"n": "5"}"#, "got a string of 1 bytes"),
            (r#"{"n": null}"#, "got null"),
        ] {
            let text = message(body);
            assert!(text.contains("`n`: expected") && text.contains("a whole number from 1 to 10"), "{text}");
            assert!(text.ends_with(got), "{body}: {text}");
        }
    }

    #[test]
    fn blank_text_is_refused_without_being_shown() {
        let text = message(r#"{"text": "  \n "}"#);
        assert!(
            text.contains("`text`: expected a value that is a non-empty string, got a string of 4 bytes"),
            "{text}"
        );
        assert!(message(r#"{"text": null}"#).ends_with("got null"));
    }

    #[test]
    fn an_array_of_the_fields_is_not_an_object() {
        assert_eq!(message("[5]"), "invalid JSON body: expected an object like {\"n\": 1}, got an array");
        assert_eq!(message("null"), "invalid JSON body: expected an object like {\"n\": 1}, got null");
    }
}
