//! The FSE 2.0 document types: national template, LOINC type, XDS class and schematron.

/// One document type the national gateway knows.
#[derive(Debug, Clone, Copy)]
pub struct DocType {
    /// `ClinicalDocument/templateId/@root` (the first one).
    pub template: &'static str,
    /// LOINC document type (`ClinicalDocument/code/@code`).
    pub loinc: &'static str,
    /// Italian name.
    pub name: &'static str,
    /// XDS class code (`REF`, `LDO`, `VRB`, `SUM`, `VAC`, `PRS`, `PRE`, ...).
    pub class: &'static str,
    /// Schematron file name and text.
    pub schematron: (&'static str, &'static str),
}

macro_rules! sch {
    ($f:literal) => {
        ($f, include_str!(concat!("../data/schematron/", $f)))
    };
}

/// The 22 types with a national schematron.
pub const TYPES: &[DocType] = &[
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.1",
        loinc: "11502-2",
        name: "Referto di laboratorio",
        class: "REF",
        schematron: sch!("schematronFSE_LAB_v27.1.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.5",
        loinc: "34105-7",
        name: "Lettera di dimissione ospedaliera",
        class: "LDO",
        schematron: sch!("schematronFSE_LDO_v5.5.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.6.1",
        loinc: "59258-4",
        name: "Verbale di pronto soccorso",
        class: "VRB",
        schematron: sch!("schematron_VPS_v3.8.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.7.1",
        loinc: "68604-8",
        name: "Referto di radiologia",
        class: "REF",
        schematron: sch!("schematronFSE_RAD_v4.1.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.8.1",
        loinc: "11526-1",
        name: "Referto di anatomia patologica",
        class: "REF",
        schematron: sch!("schematronFSE_RAP_1.4.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.9.1",
        loinc: "11488-4",
        name: "Referto di specialistica ambulatoriale",
        class: "REF",
        schematron: sch!("schematron_RSA_v8.3.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.4.1.1",
        loinc: "60591-5",
        name: "Profilo sanitario sintetico",
        class: "SUM",
        schematron: sch!("schematron_PSS_v4.0.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.11.1.2",
        loinc: "82593-5",
        name: "Certificato vaccinale",
        class: "VAC",
        schematron: sch!("schematron_certificato_VACC_v2.4.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.11.1.1",
        loinc: "87273-9",
        name: "Scheda singola vaccinazione",
        class: "VAC",
        schematron: sch!("schematron_singola_VACC_v3.3.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.2.1",
        loinc: "57833-6",
        name: "Prescrizione farmaceutica",
        class: "PRS",
        schematron: sch!("schematronFSE_PrF_4.6.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.3.1",
        loinc: "57833-6",
        name: "Prescrizione farmaceutica non a carico SSN",
        class: "PRS",
        schematron: sch!("schematron_PrFNoSSN_1.2.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.2.2",
        loinc: "57832-8",
        name: "Prescrizione specialistica",
        class: "PRS",
        schematron: sch!("schematron_PrS_v2.7.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.13.1.1",
        loinc: "60593-1",
        name: "Erogazione farmaceutica",
        class: "PRE",
        schematron: sch!("schematronFSE_ErF_1.1.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.13.2.1",
        loinc: "60593-1",
        name: "Erogazione farmaceutica non a carico SSN",
        class: "PRE",
        schematron: sch!("schematron_ErF_NoSSN_1.2.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.13.1.2",
        loinc: "81223-0",
        name: "Erogazione specialistica",
        class: "PRE",
        schematron: sch!("schematronFSE_ErS_1.1.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.16.1.1",
        loinc: "75496-0",
        name: "Referto di televisita",
        class: "REF",
        schematron: sch!("schematron_Referto_Televisita_v1.0.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.16.2.1",
        loinc: "85208-7",
        name: "Relazione di teleconsulto",
        class: "REF",
        schematron: sch!("schematron_Relazione_CTC_v1.0.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.16.4.1",
        loinc: "75496-0",
        name: "Relazione finale di teleassistenza",
        class: "REF",
        schematron: sch!("schematron_Rel_Fin_Teleassistenza_v1.0.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.18.1",
        loinc: "100971-1",
        name: "Certificato di malattia",
        class: "CER",
        schematron: sch!("schematron_CC_v1.0.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.14.1",
        loinc: "108276-7",
        name: "Lettera di invito allo screening",
        class: "LET",
        schematron: sch!("schematron_Lettera_Screening_v1.2.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.15.1",
        loinc: "111490-9",
        name: "Lettera di invito alla vaccinazione",
        class: "LET",
        schematron: sch!("schematron_Lettera_VACC_v1.4.sch"),
    },
    DocType {
        template: "2.16.840.1.113883.2.9.10.1.17.1",
        loinc: "101881-1",
        name: "Taccuino - piano terapeutico individuale",
        class: "PDC",
        schematron: sch!("schematron_TPI_v1.1.sch"),
    },
];

/// The type whose template is `root`.
pub fn by_template(root: &str) -> Option<&'static DocType> {
    TYPES.iter().find(|t| t.template == root)
}

/// The national names of the document types in English (the LOINC names, as people say them),
/// for pages shown in English: (Italian, English).
const ENGLISH_NAMES: &[(&str, &str)] = &[
    ("Referto di laboratorio", "Laboratory report"),
    ("Lettera di dimissione ospedaliera", "Hospital discharge letter"),
    ("Verbale di pronto soccorso", "Emergency department report"),
    ("Referto di radiologia", "Radiology report"),
    ("Referto di anatomia patologica", "Pathology report"),
    ("Referto di specialistica ambulatoriale", "Outpatient specialist report"),
    ("Profilo sanitario sintetico", "Patient summary"),
    ("Certificato vaccinale", "Vaccination certificate"),
    ("Scheda singola vaccinazione", "Vaccination record"),
    ("Prescrizione farmaceutica", "Medicine prescription"),
    ("Prescrizione farmaceutica non a carico SSN", "Medicine prescription (not paid by the health service)"),
    ("Prescrizione specialistica", "Specialist prescription"),
    ("Erogazione farmaceutica", "Medicine dispensing"),
    ("Erogazione farmaceutica non a carico SSN", "Medicine dispensing (not paid by the health service)"),
    ("Erogazione specialistica", "Specialist service delivered"),
    ("Referto di televisita", "Televisit report"),
    ("Relazione di teleconsulto", "Teleconsultation report"),
    ("Relazione finale di teleassistenza", "Final telecare report"),
    ("Certificato di malattia", "Sickness certificate"),
    ("Lettera di invito allo screening", "Screening invitation letter"),
    ("Lettera di invito alla vaccinazione", "Vaccination invitation letter"),
    ("Taccuino - piano terapeutico individuale", "Notebook - individual treatment plan"),
];

/// The English name of a national document type's Italian name (`None` for any other text: a
/// producer's own title stays as written).
pub fn english_name(italian: &str) -> Option<&'static str> {
    ENGLISH_NAMES.iter().find(|(it, _)| it.eq_ignore_ascii_case(italian.trim())).map(|(_, en)| *en)
}

/// The national name of a LOINC document type (the first type that carries it): what a list
/// of documents groups them under, whatever title each producer gave its own.
pub fn name_by_loinc(loinc: &str) -> Option<&'static str> {
    TYPES.iter().find(|t| t.loinc == loinc).map(|t| t.name)
}

fn xds_codes(list: &str) -> Vec<(&'static str, &'static str)> {
    include_str!("../data/xds-codes.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| match l.split('\t').collect::<Vec<_>>()[..] {
            [l, code, name] if l == list => Some((code, name)),
            _ => None,
        })
        .collect()
}

/// XDS class codes with their Italian names (`data/xds-codes.tsv`).
pub static CLASSES: std::sync::LazyLock<Vec<(&'static str, &'static str)>> = std::sync::LazyLock::new(|| xds_codes("class"));

/// Facility types (`healthcareFacilityTypeCode`, `data/xds-codes.tsv`).
pub static FACILITY_TYPES: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| xds_codes("facility").into_iter().map(|(code, _)| code).collect());

/// Whether `class` may carry the LOINC document type `loinc` (the gateway's typeCode ↔ classCode
/// correlation; types without a schematron map to `TAC` and `PRO`).
pub fn class_matches_type(class: &str, loinc: &str) -> bool {
    let expected: Vec<&str> = TYPES.iter().filter(|t| t.loinc == loinc).map(|t| t.class).collect();
    if !expected.is_empty() {
        return expected.contains(&class);
    }
    match loinc {
        "103140-0" => class == "TAC",
        "101134-5" => class == "PRO",
        _ => CLASSES.iter().any(|(c, _)| *c == class),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_national_type_has_an_english_name() {
        for t in TYPES {
            assert!(english_name(t.name).is_some(), "{}", t.name);
        }
        assert_eq!(english_name("referto di laboratorio"), Some("Laboratory report"));
        assert_eq!(english_name("Visita del dott. Rossi"), None);
    }

    #[test]
    fn the_xds_code_lists_load() {
        assert_eq!(CLASSES.len(), 19);
        assert!(CLASSES.contains(&("VAC", "Vaccino")) && CLASSES.contains(&("COL", "Documento di collaborazione")));
        assert_eq!(FACILITY_TYPES.len(), 8);
        assert!(FACILITY_TYPES.contains(&"MdsPLS") && !FACILITY_TYPES.contains(&"VAC"));
        assert!(class_matches_type("REF", "11502-2") && !class_matches_type("LDO", "11502-2"));
        assert!(class_matches_type("PRE", "00000-0") && !class_matches_type("XXX", "00000-0"));
    }
}
