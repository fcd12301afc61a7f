//! The CapabilityStatement, generated from what the server actually supports: every resource
//! type of the model, every indexed search parameter of the registry.

use fascicolo_fhir::model::model;
use fascicolo_fhir::params::{registry, ParamType};
use serde_json::{json, Value};

pub fn capability_statement(base: &str, software_version: &str) -> Value {
    let site = base.trim_end_matches('/').trim_end_matches("/fhir/r4");
    let mut resources = Vec::new();
    for t in model().resource_types() {
        let mut params: Vec<Value> = registry()
            .for_type(t)
            .filter(|p| p.expr.is_some() && p.kind != ParamType::Special && (p.kind != ParamType::Composite || !p.components.is_empty()))
            .map(|p| json!({"name": p.code, "definition": p.url, "type": p.kind.as_str()}))
            .collect();
        params.insert(0, json!({"name": "_id", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id", "type": "token"}));
        params.insert(
            1,
            json!({"name": "_lastUpdated", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated", "type": "date"}),
        );
        let includes: Vec<String> = registry()
            .for_type(t)
            .filter(|p| p.kind == ParamType::Reference && p.expr.is_some())
            .map(|p| format!("{t}:{}", p.code))
            .collect();
        let interactions: Vec<Value> =
            ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"]
                .iter()
                .map(|c| json!({"code": c}))
                .collect();
        let mut r = json!({
            "type": t,
            "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
            "interaction": interactions,
            "versioning": "versioned",
            "readHistory": true,
            "updateCreate": true,
            "conditionalCreate": true,
            "conditionalRead": "not-supported",
            "conditionalUpdate": true,
            "conditionalDelete": "not-supported",
            "searchInclude": includes,
            "searchRevInclude": ["*"],
            "searchParam": params,
        });
        if t == "Patient" {
            r["operation"] = json!([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}]);
        }
        if t == "Appointment" {
            // IHE ITI Scheduling: find, hold and book (the NRE in referral-identifier)
            let ihe = "https://profiles.ihe.net/ITI/Scheduling/OperationDefinition";
            r["operation"] = json!([{"name": "find", "definition": format!("{ihe}/appointment-find")},
                {"name": "hold", "definition": format!("{ihe}/appointment-hold")},
                {"name": "book", "definition": format!("{ihe}/appointment-book")}]);
        }
        if t == "Group" {
            r["operation"] = json!([{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}]);
        }
        resources.push(r);
    }
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-26",
        "publisher": "Fascicolo",
        "kind": "instance",
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "software": {"name": "Fascicolo", "version": software_version},
        "implementation": {"description": "Fascicolo FHIR R4 server", "url": base},
        "fhirVersion": fascicolo_fhir::FHIR_VERSION,
        "format": ["json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": true,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "description": "OAuth2 bearer tokens (SMART on FHIR v2 scopes): see .well-known/smart-configuration. Every interaction goes through the privacy gate and is written to the patient's access log.",
                "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris", "extension": [
                    {"url": "authorize", "valueUri": format!("{site}/oauth/authorize")},
                    {"url": "token", "valueUri": format!("{site}/oauth/token")},
                    {"url": "introspect", "valueUri": format!("{site}/oauth/introspect")},
                    {"url": "revoke", "valueUri": format!("{site}/oauth/revoke")}]}]
            },
            "documentation": "Search: all parameter types with prefixes and the modifiers :exact :contains :missing :not :text :identifier :of-type :above :below and reference type modifiers; _sort, _count, _total, _summary (true, count, data, text, false), _elements, _include/_revinclude with :iterate, one level of chaining and _has. Paging uses keyset cursors.",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "search-system"}, {"code": "history-system"}],
            "operation": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}],
            "searchParam": [
                {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
                {"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"}
            ]
        }]
    })
}
