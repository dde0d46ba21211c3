//! `EventPayload` records: `0x00 ‖ JSON`, or `0x01 ‖ dictId u32 (native) ‖ zstd frame` compressed
//! with dictionary `dictId` of the `CompressionDictionary` table.

use std::collections::HashMap;

use zstd::bulk::Decompressor;

/// Type byte of an uncompressed payload.
pub const PAYLOAD_RAW: u8 = 0;
/// Type byte of a zstd payload.
pub const PAYLOAD_ZSTD: u8 = 1;
/// Largest event JSON accepted when a frame does not record its size.
pub const MAX_JSON: usize = 4 * 1024 * 1024;

/// Decodes a payload record. `dictionary` fetches a dictionary's bytes the first time an id is
/// seen; decompressors are cached in `cache`.
pub fn decode(
    raw: &[u8],
    dictionary: impl FnOnce(u32) -> Result<Vec<u8>, String>,
    cache: &mut HashMap<u32, Decompressor<'static>>,
) -> Result<Vec<u8>, String> {
    match raw.first() {
        None => Err("empty payload".into()),
        Some(&PAYLOAD_RAW) => Ok(raw[1..].to_vec()),
        Some(&PAYLOAD_ZSTD) => {
            let id_bytes: [u8; 4] = raw
                .get(1..5)
                .and_then(|b| b.try_into().ok())
                .ok_or("compressed payload too short for a dictionary id")?;
            let dict_id = u32::from_ne_bytes(id_bytes);
            let frame = &raw[5..];
            let d = match cache.entry(dict_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let dict = dictionary(dict_id)?;
                    e.insert(Decompressor::with_dictionary(&dict).map_err(|e| format!("dictionary {dict_id}: {e}"))?)
                }
            };
            let cap = Decompressor::upper_bound(frame).unwrap_or(MAX_JSON).min(MAX_JSON);
            d.decompress(frame, cap).map_err(|e| format!("zstd payload with dictionary {dict_id}: {e}"))
        }
        Some(t) => Err(format!("unknown payload type byte {t} (expected 0 or 1)")),
    }
}

/// Encodes a payload record (used by the test kit's generator, beside the decoder it mirrors).
#[cfg(any(test, feature = "testkit"))]
pub fn encode(json: &[u8], compress: Option<(u32, &mut zstd::bulk::Compressor<'_>)>) -> Result<Vec<u8>, String> {
    match compress {
        None => {
            let mut out = Vec::with_capacity(json.len() + 1);
            out.push(PAYLOAD_RAW);
            out.extend_from_slice(json);
            Ok(out)
        }
        Some((dict_id, c)) => {
            let frame = c.compress(json).map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(frame.len() + 5);
            out.push(PAYLOAD_ZSTD);
            out.extend_from_slice(&dict_id.to_ne_bytes());
            out.extend_from_slice(&frame);
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_compressed_payloads_decode() {
        let json = br#"{"content":"hello hello hello","kind":1}"#;
        let dict = b"content kind hello".repeat(8);
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
        let rec = encode(json, Some((7, &mut c))).unwrap();
        let mut cache = HashMap::new();
        assert_eq!(
            decode(
                &rec,
                |id| {
                    assert_eq!(id, 7);
                    Ok(dict.clone())
                },
                &mut cache
            )
            .unwrap(),
            json
        );
        assert_eq!(decode(&encode(json, None).unwrap(), |_| unreachable!(), &mut cache).unwrap(), json);
        assert!(decode(&[2, 1], |_| unreachable!(), &mut cache).unwrap_err().contains("type byte 2"));
        assert!(decode(&[1, 9, 0, 0, 0, 1], |_| Err("dictionary 9 is missing".into()), &mut HashMap::new()).is_err());
    }
}
