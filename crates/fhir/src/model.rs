//! The R4 structure model: elements, cardinality, types, reference targets and required
//! bindings of every resource and complex datatype, derived from the official
//! StructureDefinitions by `tools/gen_r4_model.py` into `data/r4-model.json`.

use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

static MODEL_JSON: &str = include_str!("../data/r4-model.json");

#[derive(Debug, Deserialize)]
struct RawElement {
    min: u32,
    max: String,
    types: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    binding: Option<String>,
    #[serde(rename = "ref")]
    content_ref: Option<String>,
    #[serde(default)]
    summary: bool,
}

#[derive(Debug, Deserialize)]
struct RawType {
    kind: String,
    #[serde(rename = "abstract")]
    is_abstract: bool,
    elements: HashMap<String, RawElement>,
}

#[derive(Debug, Deserialize)]
struct RawModel {
    types: HashMap<String, RawType>,
    valuesets: HashMap<String, Vec<(Option<String>, String)>>,
    compartment: HashMap<String, Vec<String>>,
}

/// One element of a type, as a child of its parent path.
#[derive(Debug, Clone)]
pub struct Element {
    /// Name without `[x]`.
    pub name: String,
    /// The full definition path (`Observation.component.value[x]`).
    pub path: String,
    pub choice: bool,
    pub min: u32,
    /// `None` for `*`.
    pub max: Option<u32>,
    pub types: Vec<String>,
    pub targets: Vec<String>,
    pub binding: Option<String>,
    pub content_ref: Option<String>,
    /// Part of the `_summary=true` view.
    pub summary: bool,
}

#[derive(Debug)]
pub struct TypeInfo {
    pub kind: String,
    pub is_abstract: bool,
}

/// The loaded model.
#[derive(Debug, Default)]
pub struct Model {
    types: HashMap<String, TypeInfo>,
    /// Children by parent definition path.
    children: HashMap<String, Vec<Element>>,
    valuesets: HashMap<String, HashSet<String>>,
    compartment: HashMap<String, Vec<String>>,
}

pub fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(MODEL_JSON).unwrap_or_default())
}

impl Model {
    fn load(json: &str) -> Result<Self, serde_json::Error> {
        let raw: RawModel = serde_json::from_str(json)?;
        let mut m = Model { compartment: raw.compartment, ..Default::default() };
        for (url, codes) in raw.valuesets {
            m.valuesets.insert(url, codes.into_iter().map(|(_, c)| c).collect());
        }
        for (name, t) in raw.types {
            for (path, e) in t.elements {
                let Some((parent, last)) = path.rsplit_once('.') else { continue };
                let choice = last.ends_with("[x]");
                m.children.entry(parent.to_string()).or_default().push(Element {
                    name: last.trim_end_matches("[x]").to_string(),
                    path: path.clone(),
                    choice,
                    min: e.min,
                    max: if e.max == "*" { None } else { e.max.parse().ok() },
                    types: e.types,
                    targets: e.targets,
                    binding: e.binding,
                    content_ref: e.content_ref,
                    summary: e.summary,
                });
            }
            m.types.insert(name, TypeInfo { kind: t.kind, is_abstract: t.is_abstract });
        }
        Ok(m)
    }

    pub fn is_resource(&self, name: &str) -> bool {
        self.types.get(name).is_some_and(|t| t.kind == "resource")
    }

    pub fn is_concrete_resource(&self, name: &str) -> bool {
        self.types.get(name).is_some_and(|t| t.kind == "resource" && !t.is_abstract)
    }

    pub fn is_complex_type(&self, name: &str) -> bool {
        self.types.get(name).is_some_and(|t| t.kind == "complex-type")
    }

    pub fn resource_types(&self) -> impl Iterator<Item = &str> {
        let mut v: Vec<&str> = self.types.iter().filter(|(_, t)| t.kind == "resource" && !t.is_abstract).map(|(n, _)| n.as_str()).collect();
        v.sort_unstable();
        v.into_iter()
    }

    pub fn children(&self, parent: &str) -> &[Element] {
        self.children.get(parent).map_or(&[], Vec::as_slice)
    }

    pub fn has_children(&self, parent: &str) -> bool {
        self.children.contains_key(parent)
    }

    /// The codes of a required-binding value set, when we can expand it.
    pub fn valueset(&self, url: &str) -> Option<&HashSet<String>> {
        self.valuesets.get(url)
    }

    /// The Patient compartment: the search parameters of `resource_type` that link to a patient.
    pub fn patient_compartment_params(&self, resource_type: &str) -> &[String] {
        self.compartment.get(resource_type).map_or(&[], Vec::as_slice)
    }
}

/// Look a top-level JSON property up against its element, matching choice types.
/// Returns the element and the concrete type for this property.
pub fn resolve_property<'m>(elements: &'m [Element], key: &str) -> Option<(&'m Element, Option<String>)> {
    if let Some(e) = elements.iter().find(|e| !e.choice && e.name == key) {
        return Some((e, None));
    }
    for e in elements.iter().filter(|e| e.choice) {
        if let Some(suffix) = key.strip_prefix(e.name.as_str()) {
            if let Some(t) = e.types.iter().find(|t| upper_first(t) == suffix) {
                return Some((e, Some(t.clone())));
            }
        }
    }
    None
}

pub fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Whether the JSON has the minimal shape of a resource.
pub fn resource_type_of(v: &Value) -> Option<&str> {
    v.get("resourceType").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_r4() {
        let m = model();
        assert!(m.is_concrete_resource("Observation"));
        assert!(!m.is_concrete_resource("DomainResource"));
        assert!(m.is_complex_type("CodeableConcept"));
        assert_eq!(m.resource_types().count(), 146);
        let obs = m.children("Observation");
        let (e, t) = resolve_property(obs, "valueQuantity").unwrap();
        assert_eq!(e.name, "value");
        assert_eq!(t.as_deref(), Some("Quantity"));
        assert!(resolve_property(obs, "valueFoo").is_none());
        let status = obs.iter().find(|e| e.name == "status").unwrap();
        let vs = m.valueset(status.binding.as_deref().unwrap()).unwrap();
        assert!(vs.contains("final") && !vs.contains("done"));
        assert_eq!(m.patient_compartment_params("Observation"), ["subject", "performer"]);
    }
}
