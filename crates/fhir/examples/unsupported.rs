//! Lists the search parameters that are not indexed, with the reason (used for docs/search.md).
fn main() {
    for (url, why) in &fascicolo_fhir::params::registry().unsupported {
        println!("| {url} | {why} |");
    }
}
