//! Structural validation of a resource against the R4 model: element names, JSON types,
//! primitive formats, cardinality, required-strength code bindings and reference targets.
//! Every problem is reported with its FHIRPath location; nothing stops at the first one.

use crate::datetime::{self, Precision};
use crate::model::{self, model, Element};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// OperationOutcome issue type code (`structure`, `required`, `value`, `code-invalid`...).
    pub code: &'static str,
    /// FHIRPath location, e.g. `Patient.name[0].given[1]`.
    pub location: String,
    pub message: String,
}

/// Validate a resource. An empty list means valid.
pub fn validate_resource(v: &Value) -> Vec<Issue> {
    let mut issues = Vec::new();
    check_resource(v, "", &mut issues);
    issues
}

fn push(issues: &mut Vec<Issue>, code: &'static str, location: &str, message: String) {
    issues.push(Issue { code, location: location.to_string(), message });
}

fn check_resource(v: &Value, loc_prefix: &str, issues: &mut Vec<Issue>) {
    let Some(obj) = v.as_object() else {
        push(issues, "structure", loc_prefix, "a resource must be a JSON object".into());
        return;
    };
    let Some(rt) = obj.get("resourceType").and_then(Value::as_str) else {
        push(issues, "structure", loc_prefix, "missing resourceType".into());
        return;
    };
    if !model().is_concrete_resource(rt) {
        push(issues, "not-supported", loc_prefix, format!("unknown resource type '{rt}'"));
        return;
    }
    let loc = if loc_prefix.is_empty() { rt.to_string() } else { loc_prefix.to_string() };
    check_object(v, rt, &loc, true, issues);
}

fn check_object(v: &Value, def_path: &str, loc: &str, is_resource: bool, issues: &mut Vec<Issue>) {
    let Some(obj) = v.as_object() else {
        push(issues, "structure", loc, format!("expected an object for {def_path}"));
        return;
    };
    let elements = model().children(def_path);
    if obj.is_empty() {
        push(issues, "structure", loc, "objects must not be empty".into());
    }
    for (key, val) in obj {
        if is_resource && key == "resourceType" {
            continue;
        }
        if let Some(base) = key.strip_prefix('_') {
            if model::resolve_property(elements, base).is_none() {
                push(issues, "structure", &format!("{loc}.{key}"), format!("unknown element '{key}'"));
            }
            continue;
        }
        let Some((el, concrete)) = model::resolve_property(elements, key) else {
            push(issues, "structure", &format!("{loc}.{key}"), format!("unknown element '{key}' in {def_path}"));
            continue;
        };
        let loc_key = format!("{loc}.{key}");
        let ty = concrete.or_else(|| el.types.first().cloned()).unwrap_or_default();
        match (val, el.max) {
            (Value::Array(items), Some(1)) => {
                push(issues, "structure", &loc_key, format!("'{key}' allows one value, not a list"));
                for (i, it) in items.iter().enumerate() {
                    check_value(it, el, &ty, &format!("{loc_key}[{i}]"), issues);
                }
            }
            (Value::Array(items), _) => {
                if items.is_empty() {
                    push(issues, "structure", &loc_key, "arrays must not be empty".into());
                }
                if let Some(max) = el.max {
                    if items.len() > max as usize {
                        push(issues, "structure", &loc_key, format!("at most {max} values allowed"));
                    }
                }
                // a null item is a placeholder when the `_key` array carries the item's id or
                // extensions at the same index (R4 JSON, primitive arrays)
                let companion = obj.get(&format!("_{key}")).and_then(Value::as_array);
                for (i, it) in items.iter().enumerate() {
                    if it.is_null() && companion.and_then(|c| c.get(i)).is_some_and(|c| !c.is_null()) {
                        continue;
                    }
                    check_value(it, el, &ty, &format!("{loc_key}[{i}]"), issues);
                }
            }
            (other, None) | (other, Some(2..)) => {
                push(issues, "structure", &loc_key, format!("'{key}' must be a list"));
                check_value(other, el, &ty, &loc_key, issues);
            }
            (other, _) => check_value(other, el, &ty, &loc_key, issues),
        }
    }
    for el in elements.iter().filter(|e| e.min > 0) {
        let present = obj.keys().any(|k| {
            if el.choice {
                k.strip_prefix(el.name.as_str()).is_some_and(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
            } else {
                k == &el.name || k.strip_prefix('_') == Some(el.name.as_str())
            }
        });
        if !present {
            push(issues, "required", &format!("{loc}.{}", el.name), format!("missing required element '{}'", el.name));
        }
    }
}

fn check_value(v: &Value, el: &Element, ty: &str, loc: &str, issues: &mut Vec<Issue>) {
    if v.is_null() {
        push(issues, "structure", loc, "null is not allowed".into());
        return;
    }
    if let Some(r) = &el.content_ref {
        check_object(v, r, loc, false, issues);
        return;
    }
    match ty {
        "Resource" | "DomainResource" => {
            check_resource(v, loc, issues);
        }
        "BackboneElement" | "Element" if model().has_children(&el.path) => check_object(v, &el.path, loc, false, issues),
        t if model().is_complex_type(t) => {
            check_object(v, t, loc, false, issues);
            check_complex_binding(v, el, t, loc, issues);
            if t == "Reference" {
                check_reference_target(v, el, loc, issues);
            }
        }
        t => {
            check_primitive(v, t, loc, issues);
            if let (Some(vs), Some(code)) = (&el.binding, v.as_str()) {
                if let Some(codes) = model().valueset(vs) {
                    if !codes.contains(code) {
                        push(
                            issues,
                            "code-invalid",
                            loc,
                            format!("'{code}' is not a valid code for {}", vs.rsplit('/').next().unwrap_or(vs)),
                        );
                    }
                }
            }
        }
    }
}

fn check_complex_binding(v: &Value, el: &Element, ty: &str, loc: &str, issues: &mut Vec<Issue>) {
    let Some(vs) = &el.binding else { return };
    let Some(codes) = model().valueset(vs) else { return };
    let codings: Vec<&Value> = match ty {
        "Coding" => vec![v],
        "CodeableConcept" => v.get("coding").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default(),
        _ => return,
    };
    if codings.is_empty() {
        return;
    }
    let ok = codings.iter().any(|c| c.get("code").and_then(Value::as_str).is_some_and(|c| codes.contains(c)));
    if !ok {
        push(issues, "code-invalid", loc, format!("no coding from the required value set {}", vs.rsplit('/').next().unwrap_or(vs)));
    }
}

fn check_reference_target(v: &Value, el: &Element, loc: &str, issues: &mut Vec<Issue>) {
    let Some(r) = v.get("reference").and_then(Value::as_str) else { return };
    if el.targets.is_empty() || el.targets.iter().any(|t| t == "Resource") || r.starts_with('#') {
        return;
    }
    if let Some(t) = crate::fhirpath::reference_type(r) {
        if model().is_resource(t) && !el.targets.iter().any(|x| x == t) {
            push(
                issues,
                "structure",
                &format!("{loc}.reference"),
                format!("a reference to {t} is not allowed here (allowed: {})", el.targets.join(", ")),
            );
        }
    }
}

fn check_primitive(v: &Value, ty: &str, loc: &str, issues: &mut Vec<Issue>) {
    let bad = |issues: &mut Vec<Issue>, what: &str| push(issues, "value", loc, format!("not a valid {ty}: {what}"));
    match ty {
        "boolean" | "System.Boolean" => {
            if !v.is_boolean() {
                bad(issues, "expected true or false");
            }
        }
        "integer" | "positiveInt" | "unsignedInt" | "System.Integer" => match v.as_i64() {
            None => bad(issues, "expected a whole number"),
            Some(n) if ty == "positiveInt" && n < 1 => bad(issues, "must be at least 1"),
            Some(n) if ty == "unsignedInt" && n < 0 => bad(issues, "must not be negative"),
            Some(n) if i32::try_from(n).is_err() => bad(issues, "out of range"),
            _ => {}
        },
        "decimal" | "System.Decimal" => {
            if !v.is_number() {
                bad(issues, "expected a number");
            }
        }
        _ => {
            let Some(s) = v.as_str() else {
                bad(issues, "expected a string");
                return;
            };
            if s.trim().is_empty() && ty != "xhtml" {
                bad(issues, "must not be empty");
                return;
            }
            if let Some(problem) = string_problem(ty, s) {
                bad(issues, problem);
            }
        }
    }
}

/// What is wrong with a string value of a primitive type, if anything.
fn string_problem(ty: &str, s: &str) -> Option<&'static str> {
    let ok = match ty {
        "id" => crate::is_valid_id(s),
        "code" => s == s.trim() && !s.contains("  "),
        "date" => matches!(datetime::parse(s), Some((_, p)) if p <= Precision::Day),
        "dateTime" => {
            matches!(datetime::parse(s), Some((_, p)) if p <= Precision::Day || (p >= Precision::Second && datetime::has_zone(s)))
        }
        "instant" => matches!(datetime::parse(s), Some((_, p)) if p >= Precision::Second && datetime::has_zone(s)),
        "time" => s.len() >= 8 && datetime::parse(&format!("2000-01-01T{s}Z")).is_some(),
        "xhtml" => s.trim_start().starts_with("<div"),
        "oid" => s.starts_with("urn:oid:"),
        "uuid" => s.starts_with("urn:uuid:"),
        "uri" | "url" | "canonical" => !s.chars().any(char::is_whitespace),
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match ty {
        "id" => "ids are 1-64 letters, digits, '-' or '.'",
        "code" => "no leading, trailing or double spaces",
        "date" => "expected YYYY, YYYY-MM or YYYY-MM-DD",
        "dateTime" => "expected a date or a date and time with seconds and a time zone",
        "instant" => "expected a date and time with seconds and a time zone",
        "time" => "expected hh:mm:ss",
        "xhtml" => "narrative must be an XHTML <div>",
        "oid" => "expected urn:oid:...",
        "uuid" => "expected urn:uuid:...",
        _ => "no spaces allowed",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_null_primitive_item_is_a_placeholder_only_with_its_companion() {
        let with = json!({"resourceType": "Patient", "address": [{"line": [null, "Via Roma 1"],
            "_line": [{"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-censusTract", "valueString": "058091"}]}, null]}]});
        assert!(validate_resource(&with).is_empty(), "{:?}", validate_resource(&with));
        let without = json!({"resourceType": "Patient", "address": [{"line": [null, "Via Roma 1"]}]});
        let issues = validate_resource(&without);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].location, "Patient.address[0].line[0]");
    }

    #[test]
    fn valid_patient() {
        let p = json!({"resourceType":"Patient","id":"a1","gender":"female","birthDate":"1980-02-29",
            "name":[{"family":"Rossi","given":["Maria"]}],"managingOrganization":{"reference":"Organization/1"},
            "_birthDate":{"extension":[{"url":"http://x","valueDateTime":"1980-02-29T10:00:00+01:00"}]}});
        assert_eq!(validate_resource(&p), vec![]);
    }

    #[test]
    fn reports_every_problem_with_location() {
        let p = json!({"resourceType":"Patient","gender":"donna","birthDate":"1980-02-30",
            "name":{"family":"Rossi"},"foo":1,"active":"yes","managingOrganization":{"reference":"Patient/1"}});
        let issues = validate_resource(&p);
        let locs: Vec<&str> = issues.iter().map(|i| i.location.as_str()).collect();
        assert!(locs.contains(&"Patient.gender"), "{issues:?}");
        assert!(locs.contains(&"Patient.birthDate"));
        assert!(locs.contains(&"Patient.name"));
        assert!(locs.contains(&"Patient.foo"));
        assert!(locs.contains(&"Patient.active"));
        assert!(locs.contains(&"Patient.managingOrganization.reference"));
        assert_eq!(issues.len(), 6, "{issues:?}");
    }

    #[test]
    fn required_elements_and_choice_types() {
        let o = json!({"resourceType":"Observation","code":{"text":"x"},"valueFoo":1});
        let issues = validate_resource(&o);
        assert!(issues.iter().any(|i| i.location == "Observation.status" && i.code == "required"));
        assert!(issues.iter().any(|i| i.location == "Observation.valueFoo"));
        let o = json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.5},
            "component":[{"code":{"text":"c"},"valueString":"s"}]});
        assert_eq!(validate_resource(&o), vec![]);
        let o = json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"component":[{"valueString":"s"}]});
        assert!(validate_resource(&o).iter().any(|i| i.location == "Observation.component[0].code"));
    }

    #[test]
    fn unknown_type_and_contained() {
        assert_eq!(validate_resource(&json!({"resourceType":"Nope"}))[0].code, "not-supported");
        let b = json!({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","gender":"x"}}]});
        let issues = validate_resource(&b);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].location, "Bundle.entry[0].resource.gender");
    }
}
