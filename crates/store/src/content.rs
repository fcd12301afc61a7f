//! How resource content is kept on disk: a zstd frame compressed with a dictionary trained on
//! FHIR resources (decision 0010).
//!
//! Most stored resources are 0.5–3 KB of JSON, too small for a general-purpose compressor to find
//! much to reuse inside one of them; a dictionary holds what they share (element names, code
//! systems, profile URLs, the Italian display texts), so one resource compresses to a few hundred
//! bytes. Every frame records the id of the dictionary it was written with; the dictionary that
//! ships with this release is kept by every later release, so old rows stay readable. Content
//! written before migration 4 (plain JSON text) is still read as it is.

use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::StoreError;

/// The dictionary of this release (trained by `crates/store-sqlite/examples/train_dictionary.rs`,
/// see `dict/README.md`).
pub const DICTIONARY: &[u8] = include_bytes!("../dict/fhir-r4-v1.zdict");

/// The compression level: 3 is zstd's default, a few microseconds for a resource.
const LEVEL: i32 = 3;

/// The first four bytes of every zstd frame.
const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Larger than any resource the server accepts (the request body limit is far below).
const MAX_CONTENT: u64 = 256 * 1024 * 1024;

fn encoder_dictionary() -> &'static EncoderDictionary<'static> {
    static D: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| EncoderDictionary::copy(DICTIONARY, LEVEL))
}

fn decoder_dictionary() -> &'static DecoderDictionary<'static> {
    static D: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| DecoderDictionary::copy(DICTIONARY))
}

/// The id written in the dictionary's header (and so in every frame compressed with it).
pub fn dictionary_id() -> u32 {
    zstd::zstd_safe::get_dict_id_from_dict(DICTIONARY).map_or(0, |n| n.get())
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
    static PLAIN_DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("resource content: {e}"))
}

/// The bytes to store for a resource's JSON (empty stays empty: a deletion, or a history row
/// whose content is the current version's).
pub fn encode(json: &str) -> Result<Vec<u8>, StoreError> {
    if json.is_empty() {
        return Ok(Vec::new());
    }
    COMPRESSOR.with(|c| {
        let mut slot = c.borrow_mut();
        let compressor = match &mut *slot {
            Some(c) => c,
            None => slot.insert(Compressor::with_prepared_dictionary(encoder_dictionary()).map_err(backend)?),
        };
        compressor.compress(json.as_bytes()).map_err(backend)
    })
}

/// The JSON of stored content: a zstd frame (with this release's dictionary or none), or the
/// plain text that releases before migration 4 stored.
pub fn decode(bytes: &[u8]) -> Result<String, StoreError> {
    if !bytes.starts_with(&MAGIC) {
        return String::from_utf8(bytes.to_vec()).map_err(backend);
    }
    let size = zstd::zstd_safe::get_frame_content_size(bytes)
        .map_err(|_| backend("not a valid zstd frame"))?
        .ok_or_else(|| backend("a zstd frame without its content size"))?;
    if size > MAX_CONTENT {
        return Err(backend(format!("a frame of {size} bytes")));
    }
    let capacity = usize::try_from(size).map_err(backend)?;
    let out = match zstd::zstd_safe::get_dict_id_from_frame(bytes).map(|n| n.get()) {
        None => PLAIN_DECOMPRESSOR.with(|c| {
            let mut slot = c.borrow_mut();
            let d = match &mut *slot {
                Some(d) => d,
                None => slot.insert(Decompressor::new().map_err(backend)?),
            };
            d.decompress(bytes, capacity).map_err(backend)
        })?,
        Some(id) if id == dictionary_id() => DECOMPRESSOR.with(|c| {
            let mut slot = c.borrow_mut();
            let d = match &mut *slot {
                Some(d) => d,
                None => slot.insert(Decompressor::with_prepared_dictionary(decoder_dictionary()).map_err(backend)?),
            };
            d.decompress(bytes, capacity).map_err(backend)
        })?,
        Some(id) => return Err(backend(format!("compressed with dictionary {id}, which this release does not have"))),
    };
    String::from_utf8(out).map_err(backend)
}

/// Whether stored bytes are already in this module's format (a migration compresses the rest).
pub fn is_encoded(bytes: &[u8]) -> bool {
    bytes.is_empty() || bytes.starts_with(&MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBS: &str = r#"{"resourceType":"Observation","id":"0190f3a4-1c2b-7d3e-8f40-123456789abc","meta":{"versionId":"1","lastUpdated":"2026-08-12T10:30:00.000+00:00"},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"2345-7","display":"Glucosio [Massa/Volume] in Siero o Plasma"}]},"subject":{"reference":"Patient/0190f3a4-0000-7d3e-8f40-123456789abc"},"effectiveDateTime":"2026-08-12T12:30:00+02:00","valueQuantity":{"value":92,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}}"#;

    #[test]
    fn round_trips_and_shrinks() {
        let bytes = encode(OBS).expect("encode");
        assert!(bytes.starts_with(&MAGIC));
        assert!(bytes.len() * 2 < OBS.len(), "{} bytes for {}", bytes.len(), OBS.len());
        assert_eq!(zstd::zstd_safe::get_dict_id_from_frame(&bytes).map(|n| n.get()), Some(dictionary_id()));
        assert_eq!(decode(&bytes).expect("decode"), OBS);
        let unicode = r#"{"resourceType":"Patient","name":[{"family":"Nicolò","given":["Zoë"]}]}"#;
        assert_eq!(decode(&encode(unicode).expect("encode")).expect("decode"), unicode);
    }

    #[test]
    fn reads_plain_text_and_frames_without_dictionary() {
        assert_eq!(decode(OBS.as_bytes()).expect("plain"), OBS);
        let plain = zstd::bulk::compress(OBS.as_bytes(), 3).expect("compress");
        assert_eq!(decode(&plain).expect("no dictionary"), OBS);
        assert!(encode("").expect("empty").is_empty());
        assert_eq!(decode(&[]).expect("empty"), "");
    }

    #[test]
    fn refuses_damaged_or_foreign_frames() {
        let mut bytes = encode(OBS).expect("encode");
        let n = bytes.len();
        bytes.truncate(n - 5);
        assert!(decode(&bytes).is_err(), "a truncated frame");
        // the same frame, its header naming another dictionary
        let mut foreign = encode(OBS).expect("encode");
        let descriptor = foreign[4];
        let single_segment = (descriptor >> 5) & 1 == 1;
        assert_ne!(descriptor & 3, 0, "the frame names its dictionary");
        foreign[5 + usize::from(!single_segment)] ^= 0x5a;
        let err = decode(&foreign).expect_err("an unknown dictionary");
        assert!(err.to_string().contains("dictionary"), "{err}");
        assert!(decode(&[0xff, 0xfe]).is_err(), "not UTF-8");
    }
}
