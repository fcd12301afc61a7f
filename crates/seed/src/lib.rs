//! A synthetic Lombardy for demos and benchmarks: the region's real ATS, ASST and hospitals
//! (from the national code lists), community houses, pharmacies, family doctors and
//! pediatricians, and citizens in households with valid codici fiscali, health cards,
//! exemptions, family links and clinical histories.
//!
//! Everything is a pure function of the seed: household `h` is generated from a random stream
//! of its own, so a run can stop and resume anywhere and the same seed always gives the same
//! region. Clinical documents come out as national CDA2 XML, to be published through the
//! producer path like any hospital's.
#![forbid(unsafe_code)]

pub mod cda;
pub mod clinical;
pub mod data;
pub mod people;
pub mod region;
pub mod registry;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The random stream for item `index` of kind `stream` under `seed` (portable: ChaCha8 with a
/// seed derived by FNV-1a and the SplitMix64 finaliser).
pub fn rng(seed: u64, stream: &str, index: u64) -> ChaCha8Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ChaCha8Rng::seed_from_u64(z)
}

/// Today's date in Rome: what ages and validity are computed against.
pub fn today() -> time::Date {
    fascicolo_domain::rome::today()
}
