//! NDJSON (FHIR Bulk Data's format: one resource per line) imported as one transaction, for
//! `POST [base]/$import` and `fascicolo import` (decision 0011). Every line becomes a
//! `PUT Type/id` entry and goes through the transaction path like any other write: validation,
//! the gate, referential integrity. A rejected line rejects the whole file, and every problem
//! names its line (`line 7`, `line 7: gender`).

use crate::{Actor, AppError, AppResult, FhirService};
use fascicolo_fhir::OutcomeIssue;
use serde_json::{json, Value};

/// The largest NDJSON file or `$import` body: a file is one transaction (all or nothing), held
/// in memory while it is checked, at some 50–75 times its size. Bulk Data exporters split their
/// output in files; a larger one is refused with a clear message instead of exhausting memory.
pub const MAX_BYTES: usize = 64 << 20;

/// Namespace of the ids given to lines without one: an id derived from the file's content and
/// the line, so importing the same file again changes nothing.
const NDJSON_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2b0e_61c4_93f7_4d58_a1c6_7e90_35d2_f8b4);

/// A transaction Bundle of the lines, and the line number of each of its entries; or every
/// line that is not a resource.
fn transaction(bytes: &[u8]) -> Result<(Value, Vec<usize>), Vec<OutcomeIssue>> {
    let file = uuid::Uuid::new_v5(&NDJSON_NAMESPACE, bytes);
    let mut entries = Vec::new();
    let mut lines = Vec::new();
    let mut rejected = Vec::new();
    let reject = |n: usize, msg: String| OutcomeIssue { expression: Some(format!("line {n}")), ..OutcomeIssue::error("structure", msg) };
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                rejected.push(reject(n, format!("not JSON: {e}")));
                continue;
            }
        };
        let Some(rt) = v.get("resourceType").and_then(Value::as_str).map(String::from) else {
            rejected.push(reject(n, "not a FHIR resource (no resourceType)".into()));
            continue;
        };
        let id = match v.get("id") {
            None => uuid::Uuid::new_v5(&file, format!("line/{n}").as_bytes()).to_string(),
            Some(Value::String(id)) => id.clone(),
            Some(_) => {
                rejected.push(reject(n, format!("{rt}.id is not a string")));
                continue;
            }
        };
        let request = json!({"method": "PUT", "url": format!("{rt}/{id}")});
        v["id"] = Value::String(id);
        // built as a map: `json!` would copy the resource value by serializing it again
        let mut entry = serde_json::Map::with_capacity(2);
        entry.insert("resource".into(), v);
        entry.insert("request".into(), request);
        entries.push(Value::Object(entry));
        lines.push(n);
    }
    if !rejected.is_empty() {
        return Err(rejected);
    }
    Ok((json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}), lines))
}

/// `Bundle.entry[i].resource.x` as `line N: x`, `Bundle.entry[i]...` (the request the import
/// made, or the resource as a whole) as `line N`.
fn locate(expression: &str, lines: &[usize]) -> Option<String> {
    let rest = expression.strip_prefix("Bundle.entry[")?;
    let (index, rest) = rest.split_once(']')?;
    let line = *lines.get(index.parse::<usize>().ok()?)?;
    let rest = rest.trim_start_matches('.');
    Some(match rest.strip_prefix("resource.") {
        Some(path) => format!("line {line}: {path}"),
        None => format!("line {line}"),
    })
}

impl FhirService {
    /// Store every resource of an NDJSON file in one transaction and return how many, or store
    /// nothing: lines that are not resources are `Invalid` with every such line located, and a
    /// transaction's problems come back with their entries' locations turned into lines.
    pub async fn import_ndjson(&self, actor: &Actor, bytes: &[u8]) -> AppResult<usize> {
        if bytes.len() > MAX_BYTES {
            return Err(AppError::TooLarge(format!(
                "{} bytes of NDJSON, over the {} MiB limit of one import (all or nothing): split it",
                bytes.len(),
                MAX_BYTES >> 20
            )));
        }
        let (bundle, lines) = transaction(bytes).map_err(AppError::Invalid)?;
        let count = lines.len();
        if count == 0 {
            return Ok(0);
        }
        match self.process_bundle_value(actor, bundle, "urn:fascicolo:import").await {
            Ok(_) => Ok(count),
            Err(AppError::Invalid(issues)) => Err(AppError::Invalid(
                issues
                    .into_iter()
                    .map(|i| {
                        let expression = i.expression.as_deref().and_then(|x| locate(x, &lines)).or(i.expression.clone());
                        OutcomeIssue { expression, ..i }
                    })
                    .collect(),
            )),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_from_one_and_blank_lines_count() {
        let text = b"{\"resourceType\":\"Patient\",\"id\":\"a\"}\r\n\n{oops\n[1]\n{\"resourceType\":\"Basic\",\"id\":7}\n";
        let issues = transaction(text).unwrap_err();
        let at: Vec<_> = issues.iter().map(|i| i.expression.clone().unwrap_or_default()).collect();
        assert_eq!(at, ["line 3", "line 4", "line 5"]);
        assert!(issues[0].diagnostics.starts_with("not JSON"), "{}", issues[0].diagnostics);
        let (bundle, lines) = transaction(b"\n{\"resourceType\":\"Patient\",\"id\":\"a\"}\r\n{\"resourceType\":\"Basic\"}").unwrap();
        assert_eq!(lines, [2, 3]);
        assert_eq!(bundle["entry"][0]["request"]["url"], "Patient/a");
        // an id-less line gets the same id from the same file, another from another file
        let again = transaction(b"\n{\"resourceType\":\"Patient\",\"id\":\"a\"}\r\n{\"resourceType\":\"Basic\"}").unwrap().0;
        assert_eq!(bundle["entry"][1]["resource"]["id"], again["entry"][1]["resource"]["id"]);
        let other = transaction(b"{\"resourceType\":\"Basic\"}").unwrap().0;
        assert_ne!(bundle["entry"][1]["resource"]["id"], other["entry"][0]["resource"]["id"]);
    }

    #[test]
    fn entry_locations_become_lines() {
        let lines = [2, 5, 9];
        assert_eq!(locate("Bundle.entry[1].resource.gender", &lines).as_deref(), Some("line 5: gender"));
        assert_eq!(locate("Bundle.entry[2].resource", &lines).as_deref(), Some("line 9"));
        assert_eq!(locate("Bundle.entry[0].request.url", &lines).as_deref(), Some("line 2"));
        assert_eq!(locate("Bundle.entry[3].resource", &lines), None);
        assert_eq!(locate("Patient.name", &lines), None);
    }
}
