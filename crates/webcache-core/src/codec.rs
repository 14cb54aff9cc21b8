//! How one cache alias writes its values: the serializer of typed values and the compressor of
//! large ones (options `serializer`, `compressor`, `zstd_level`, `compress_min_bytes`).
//!
//! Every framed entry names its codec and its compression in its header (see
//! [`entry`](crate::backend::entry)), so a reader never needs the writer's settings: an alias switched
//! from one serializer or compressor to another keeps reading the entries written before the
//! switch. The exception is [`Serializer::DjangoJson`], whose entries have no header (that is
//! what lets Django read them); see its documentation.

use serde::de::DeserializeOwned;
use serde::ser::{self, Impossible, Serialize};

use crate::entry::Decoded;

/// The serializer of typed values (`Cache::set`, `get_or_set`, ...). Raw bytes
/// (`set_bytes`, pages) are stored as they are whatever the serializer.
///
/// Integers are stored as ASCII digits with every serializer, so `incr` works on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Serializer {
    /// JSON (`serializer = "json"`, the default): any serde type, readable in `redis-cli`.
    #[default]
    Json,
    /// MessagePack with field names (`"msgpack"`): self-describing like JSON (any serde type,
    /// `serde_json::Value` too), smaller and faster to write.
    MsgPack,
    /// [postcard](https://docs.rs/postcard) (`"postcard"`): the smallest and fastest, but not
    /// self-describing: the reader must ask for the type that was written (a changed struct
    /// reads as a miss or as wrong values), and types that need `deserialize_any`
    /// (`serde_json::Value`, `#[serde(untagged)]`, `#[serde(flatten)]`) cannot be read.
    Postcard,
    /// The format of django-redis's `JSONSerializer` (`"django_json"`): plain JSON without the
    /// webcache header and never compressed, integers as digits, so a Django site and a Rust
    /// service read and write the same keys. Such an alias also reads unframed JSON (what
    /// Django writes) and every framed entry. Entries with tags or a stale window still need
    /// the header, so Django cannot read those.
    DjangoJson,
}

impl Serializer {
    /// The names accepted by the `serializer` option, with their variants.
    pub const NAMES: &'static [(&'static str, Serializer)] = &[
        ("json", Serializer::Json),
        ("msgpack", Serializer::MsgPack),
        ("postcard", Serializer::Postcard),
        ("django_json", Serializer::DjangoJson),
    ];

    /// The serializer called `name` (`json`, `msgpack`, `postcard`, `django_json`).
    pub fn from_name(name: &str) -> Option<Serializer> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, s)| *s)
    }
}

/// The compressor of values of at least `compress_min_bytes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compressor {
    /// LZ4 (`compressor = "lz4"`, the default): very fast, a modest ratio.
    #[default]
    Lz4,
    /// Zstandard at `zstd_level` (`"zstd"`): a better ratio (pages, JSON) for more CPU.
    Zstd,
    /// Never compress (`"none"`, the same as `compress_min_bytes = "off"`).
    None,
}

impl Compressor {
    /// The names accepted by the `compressor` option, with their variants.
    pub const NAMES: &'static [(&'static str, Compressor)] = &[
        ("lz4", Compressor::Lz4),
        ("zstd", Compressor::Zstd),
        ("none", Compressor::None),
    ];

    /// The compressor called `name` (`lz4`, `zstd`, `none`).
    pub fn from_name(name: &str) -> Option<Compressor> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, c)| *c)
    }
}

/// The zstd level used unless configured otherwise (zstd's own default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Everything an entry writer needs to know about one alias's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// The serializer of typed values.
    pub serializer: Serializer,
    /// The compressor of large values.
    pub compressor: Compressor,
    /// The zstd level (see [`zstd_levels`]); used with [`Compressor::Zstd`].
    pub zstd_level: i32,
    /// Compress values of at least this many bytes (`None`: never).
    pub compress_min_bytes: Option<usize>,
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding {
            serializer: Serializer::Json,
            compressor: Compressor::Lz4,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            compress_min_bytes: Some(crate::cache::DEFAULT_COMPRESS_MIN_BYTES),
        }
    }
}

/// The zstd levels the `zstd_level` option accepts (zstd's fast negative levels to 22).
pub fn zstd_levels() -> std::ops::RangeInclusive<i32> {
    zstd::compression_level_range()
}

/// Turns a typed value read back from an entry into `T`; the error says why it does not fit.
pub fn deserialize<T: DeserializeOwned>(decoded: Decoded) -> Result<T, String> {
    match decoded {
        Decoded::Integer(n) => serde_json::from_value(n.into()).map_err(|e| e.to_string()),
        Decoded::Json(payload) => serde_json::from_slice(&payload).map_err(|e| e.to_string()),
        Decoded::MsgPack(payload) => rmp_serde::from_slice(&payload).map_err(|e| e.to_string()),
        Decoded::Postcard(payload) => {
            postcard::from_bytes(&payload).map_err(|e| format!("postcard: {e}"))
        }
        Decoded::Bytes(_) => Err("it holds raw bytes; read it with get_bytes".to_owned()),
    }
}

/// The value as an `i64` if it serializes as one integer (newtypes and `Some` looked through),
/// without serializing it: how non-JSON serializers keep integers as `incr`-able digits.
pub(crate) fn as_integer<T: Serialize + ?Sized>(value: &T) -> Option<i64> {
    value.serialize(IntegerProbe).ok()
}

/// A serializer that only succeeds on integers that fit an `i64`.
struct IntegerProbe;

/// Why [`IntegerProbe`] stopped: the value is not one integer.
#[derive(Debug)]
struct NotAnInteger;

impl std::fmt::Display for NotAnInteger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not an integer")
    }
}

impl std::error::Error for NotAnInteger {}

impl ser::Error for NotAnInteger {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        NotAnInteger
    }
}

macro_rules! refuse {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $arg),*) -> Result<i64, NotAnInteger> { Err(NotAnInteger) })*
    };
}

impl ser::Serializer for IntegerProbe {
    type Ok = i64;
    type Error = NotAnInteger;
    type SerializeSeq = Impossible<i64, NotAnInteger>;
    type SerializeTuple = Impossible<i64, NotAnInteger>;
    type SerializeTupleStruct = Impossible<i64, NotAnInteger>;
    type SerializeTupleVariant = Impossible<i64, NotAnInteger>;
    type SerializeMap = Impossible<i64, NotAnInteger>;
    type SerializeStruct = Impossible<i64, NotAnInteger>;
    type SerializeStructVariant = Impossible<i64, NotAnInteger>;

    fn serialize_i8(self, v: i8) -> Result<i64, NotAnInteger> {
        Ok(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<i64, NotAnInteger> {
        Ok(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<i64, NotAnInteger> {
        Ok(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<i64, NotAnInteger> {
        Ok(v)
    }
    fn serialize_u8(self, v: u8) -> Result<i64, NotAnInteger> {
        Ok(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<i64, NotAnInteger> {
        Ok(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<i64, NotAnInteger> {
        Ok(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<i64, NotAnInteger> {
        i64::try_from(v).map_err(|_| NotAnInteger)
    }
    refuse!(
        serialize_bool(bool),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );
    fn serialize_some<V: Serialize + ?Sized>(self, value: &V) -> Result<i64, NotAnInteger> {
        value.serialize(self)
    }
    fn serialize_newtype_struct<V: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &V,
    ) -> Result<i64, NotAnInteger> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<V: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &V,
    ) -> Result<i64, NotAnInteger> {
        Err(NotAnInteger)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAnInteger> {
        Err(NotAnInteger)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAnInteger> {
        Err(NotAnInteger)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAnInteger> {
        Err(NotAnInteger)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAnInteger> {
        Err(NotAnInteger)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAnInteger> {
        Err(NotAnInteger)
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, NotAnInteger> {
        Err(NotAnInteger)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAnInteger> {
        Err(NotAnInteger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_finds_integers_only() {
        assert_eq!(as_integer(&42u8), Some(42));
        assert_eq!(as_integer(&-7i64), Some(-7));
        assert_eq!(as_integer(&Some(5u32)), Some(5));
        assert_eq!(as_integer(&u64::MAX), None);
        assert_eq!(as_integer(&1.0f64), None);
        assert_eq!(as_integer(&true), None);
        assert_eq!(as_integer("42"), None);
        assert_eq!(as_integer(&vec![1]), None);
        assert_eq!(as_integer(&None::<i64>), None);
    }

    #[test]
    fn names_parse() {
        assert_eq!(Serializer::from_name("MsgPack"), Some(Serializer::MsgPack));
        assert_eq!(
            Serializer::from_name("django_json"),
            Some(Serializer::DjangoJson)
        );
        assert_eq!(Serializer::from_name("pickle"), None);
        assert_eq!(Compressor::from_name("zstd"), Some(Compressor::Zstd));
        assert_eq!(Compressor::from_name("gzip"), None);
    }
}
