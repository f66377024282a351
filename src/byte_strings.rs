//! serde helpers that encode byte strings (`Vec<u8>`) as one block.
//!
//! serde sees a `Vec<u8>` as a sequence and drives the encoder one byte at a time; bincode
//! then writes its length and each byte, which is exactly what it writes for a byte string
//! (`serialize_bytes`) in one copy. So the helpers change the cost, not the encoding: data
//! written either way reads either way. Used where whole rows and messages travel: the
//! delivery rows of a Raft entry, the bodies of the cluster's calls and answers, and
//! snapshot chunks.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// Rows written or removed: a key, and its new value or `None`.
pub type Rows = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// `#[serde(with = "byte_strings::bytes")]` on a `Vec<u8>`.
pub mod bytes {
    use super::*;

    /// Writes `value` as one byte string.
    pub fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        Bytes(value).serialize(serializer)
    }

    /// Reads a byte string (or, from a self-describing format, a sequence of bytes).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        ByteBuf::deserialize(deserializer).map(|b| b.0)
    }
}

/// `#[serde(with = "byte_strings::rows")]` on a `Vec<(Vec<u8>, Option<Vec<u8>>)>`: rows
/// written or removed, as key and value byte strings.
pub mod rows {
    use super::*;

    /// Writes each row's key and value as byte strings.
    pub fn serialize<S: Serializer>(
        rows: &[(Vec<u8>, Option<Vec<u8>>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            rows.iter()
                .map(|(key, value)| (Bytes(key), value.as_deref().map(Bytes))),
        )
    }

    /// Reads rows written by [`serialize`] (or as plain sequences).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Rows, D::Error> {
        let rows: Vec<(ByteBuf, Option<ByteBuf>)> = Vec::deserialize(deserializer)?;
        Ok(rows
            .into_iter()
            .map(|(key, value)| (key.0, value.map(|v| v.0)))
            .collect())
    }
}

/// A byte string to write.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// A byte string read.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_byte_buf(ByteBufVisitor)
            .map(ByteBuf)
    }
}

struct ByteBufVisitor;

impl<'de> Visitor<'de> for ByteBufVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fast {
        #[serde(with = "bytes")]
        body: Vec<u8>,
        #[serde(with = "rows")]
        rows: Rows,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        body: Vec<u8>,
        rows: Rows,
    }

    fn bincode<T: Serialize>(v: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
    }

    #[test]
    fn the_encoding_is_the_plain_one_both_ways() {
        let rows = vec![
            (vec![1, 2, 3], Some(vec![0; 300])),
            (b"gone".to_vec(), None),
        ];
        let fast = Fast {
            body: (0..=255).collect(),
            rows: rows.clone(),
        };
        let plain = Plain {
            body: fast.body.clone(),
            rows,
        };
        assert_eq!(bincode(&fast), bincode(&plain));
        let config = bincode::config::standard();
        let (read, _): (Fast, _) =
            bincode::serde::decode_from_slice(&bincode(&plain), config).unwrap();
        assert_eq!(read, fast);
        let json = serde_json::to_string(&plain).unwrap();
        assert_eq!(serde_json::from_str::<Fast>(&json).unwrap(), read);
    }
}
