//! Demo mode: a small synthetic registry (citizens, a family, a delegation, GP, pediatrician,
//! specialist, nurse, CUP operator, ASST administrator, consent, care relations), the demo API
//! clients, and the personas' records, published through the producer path like any
//! hospital's (documents with hiding and an art. 6 item among them). Every person is fictional; every codice fiscale is
//! well formed (check character computed). The regional-scale generator is `fascicolo seed`.

use anyhow::Context;
use fascicolo_app::access::{CF_SYSTEM, CONSENT_CATEGORY, DELEGATION_SCOPE_EXT, NOTICE_PREFIX, RELATIONSHIP_SYSTEM, V3_ROLE};
use fascicolo_app::auth::Client;
use fascicolo_app::gate::ROLE_SYSTEM;
use fascicolo_app::{Actor, FhirService};
use fascicolo_domain::codice_fiscale::check_char;
use fascicolo_domain::privacy::age_on;
use serde_json::{json, Value};

/// The demo organisation that the demo hospital system publishes for.
pub const DEMO_HOSPITAL_ORG: &str = "asst-fbf-sacco";

/// A codice fiscale from its first 15 characters.
pub fn cf(first15: &str) -> String {
    format!("{first15}{}", check_char(first15.as_bytes()))
}

/// A person of the demo registry.
#[derive(Debug, Clone)]
pub struct Persona {
    pub id: &'static str,
    pub cf: String,
    pub given: &'static str,
    pub family: &'static str,
    /// What the demo identity provider shows.
    pub role: &'static str,
}

/// Everyone the demo identity provider lets you be.
pub fn personas() -> Vec<Persona> {
    let p = |id, code: &str, given, family, role| Persona { id, cf: cf(code), given, family, role };
    vec![
        p("rossi-giulia", "RSSGLI85D52F205", "Giulia", "Rossi", "citizen"),
        p("verdi-anna", "VRDNNA40B60F205", "Anna", "Verdi", "citizen"),
        p("bianchi-marco", "BNCMRC07A10F205", "Marco", "Bianchi", "citizen"),
        p("ferrari-paolo", "FRRPLA70A01F205", "Paolo", "Ferrari", "gp"),
        p("colombo-elena", "CLMLNE75E55F205", "Elena", "Colombo", "pediatrician"),
        p("marino-andrea", "MRNNDR72H15F205", "Andrea", "Marino", "gp"),
        p("ricci-marco", "RCCMRC68L22F205", "Marco", "Ricci", "specialist"),
        p("galli-sara", "GLLSRA90S70F205", "Sara", "Galli", "nurse"),
        p("moretti-luigi", "MRTLGU82C08F205", "Luigi", "Moretti", "cup-operator"),
        p("conti-chiara", "CNTCHR79T41F205", "Chiara", "Conti", "asst-admin"),
    ]
}

/// The child in the demo family (no login of his own: his mother acts for him).
pub fn child() -> Persona {
    Persona { id: "bianchi-luca", cf: cf("BNCLCU16P03F205"), given: "Luca", family: "Bianchi", role: "minor" }
}

/// Built-in API clients of demo mode.
pub fn clients() -> Vec<Client> {
    let merchants = DEMO_MERCHANTS.iter().map(|(id, name, _)| Client {
        id: format!("demo-{id}"),
        name: format!("Demo celiac merchant ({name})"),
        kind: "merchant".into(),
        organization: None,
        redirect_uris: Vec::new(),
        jwks: None,
        secret_sha256: None,
    });
    let mut v = vec![
        Client {
            id: "demo-platform".into(),
            name: "Demo regional integration (full access, audited)".into(),
            kind: "platform".into(),
            organization: None,
            redirect_uris: Vec::new(),
            jwks: None,
            secret_sha256: None,
        },
        Client {
            id: "demo-hospital".into(),
            name: "Demo hospital system (ASST Fatebenefratelli Sacco)".into(),
            kind: "producer".into(),
            organization: Some(DEMO_HOSPITAL_ORG.into()),
            redirect_uris: Vec::new(),
            jwks: None,
            secret_sha256: None,
        },
        Client {
            id: "demo-app".into(),
            name: "Demo SMART app (public client, PKCE, loopback redirects)".into(),
            kind: "app".into(),
            organization: None,
            redirect_uris: vec!["http://127.0.0.1*".into(), "http://localhost*".into()],
            jwks: None,
            secret_sha256: None,
        },
    ];
    v.extend(merchants);
    v
}

fn person(rt: &str, p: &Persona, gender: &str, birth: &str) -> Value {
    let mut v = json!({"resourceType": rt, "id": p.id, "active": true,
        "identifier": [{"system": CF_SYSTEM, "value": p.cf}],
        "name": [{"family": p.family, "given": [p.given]}], "gender": gender, "birthDate": birth});
    if rt == "Patient" {
        // the ATS of residence: whose family doctors one may choose
        v["managingOrganization"] = json!({"reference": "Organization/ats-milano"});
        // a home in Milan, on the map (booking ranks sites by distance from it)
        let (street, lat, lon) = match p.id {
            "verdi-anna" => ("Via Padova 120", 45.5002, 9.2268),
            _ => ("Via Savona 42", 45.4536, 9.1631),
        };
        v["address"] = json!([{"use": "home", "line": [street], "city": "Milano", "district": "MI", "country": "IT",
            "_city": {"extension": [{"url": fascicolo_domain::systems::ISTAT_EXT, "valueCode": "015146"}]},
            "extension": [{"url": fascicolo_domain::systems::GEOLOCATION_EXT,
                "extension": [{"url": "latitude", "valueDecimal": lat}, {"url": "longitude", "valueDecimal": lon}]}]}]);
    }
    v
}

/// The patients the 9 official FSE 2.0 CDA2 examples name (synthetic test codes), so that the
/// examples can be published as they are.
pub const EXAMPLE_PATIENTS: [(&str, &str, &str); 3] =
    [("GTWGWY82B42G920M", "Giuseppe", "Test"), ("RSSMRA22A01A399Z", "Guido", "Test"), ("PROVAX00X00X000Y", "Giuseppe", "Prova")];

/// Registers the official examples' patients (idempotent).
pub async fn seed_example_patients(fhir: &FhirService) -> anyhow::Result<()> {
    for (i, (cf, given, family)) in EXAMPLE_PATIENTS.iter().enumerate() {
        let id = format!("esempio-fse-{}", i + 1);
        if fhir.exists("Patient", &id).await? {
            continue;
        }
        let p = json!({"resourceType": "Patient", "id": id, "active": true,
            "identifier": [{"system": CF_SYSTEM, "value": cf}], "name": [{"family": family, "given": [given]}]});
        fhir.update(&Actor::system(), "Patient", &id, p.to_string().as_bytes(), None)
            .await
            .with_context(|| format!("seeding Patient/{id}"))?;
    }
    Ok(())
}

/// What demo seeding has finished, kept in the store (so a start that was cut short, by a full
/// disk or a signal, resumes where it stopped: every step is idempotent, and a step counts as
/// done only once it has finished).
/// The job marks of demo seeding: `demo/<step>` once a step has finished.
const JOB: &str = "demo/";

async fn finished(fhir: &FhirService, step: &str) -> anyhow::Result<bool> {
    Ok(fhir.job_mark(&format!("{JOB}{step}")).await?.is_some())
}

async fn mark_finished(fhir: &FhirService, step: &str) -> anyhow::Result<()> {
    fhir.set_job_mark(&format!("{JOB}{step}"), "").await?;
    Ok(())
}

/// Everything demo mode shows: the registry with its personas, a small synthetic region around
/// it with documents published like a hospital's, and the personas' histories. Returns whether
/// anything was left to do; a start that stopped half-way finishes the job.
pub async fn seed_everything(fhir: &FhirService, ingest: &fascicolo_app::ingest::Ingest) -> anyhow::Result<bool> {
    let fhir = fhir.clone();
    if finished(&fhir, "everything").await? {
        return Ok(false);
    }
    if seed(&fhir).await? {
        tracing::info!("demo mode: seeded a small synthetic registry (sign in through the demo identity provider)");
    }
    let args = crate::seed::SeedArgs { citizens: 60, seed: 1, years: 3, no_documents: false, batch: 20, jobs: 2 };
    match crate::seed::region(&fhir).await? {
        // `fascicolo seed` ran on this data folder first: the demo lives in that region
        Some(r) if r != crate::seed::Region::from(&args) => {
            tracing::info!(
                seed = r.seed,
                citizens = r.citizens,
                "demo mode: the data folder holds a synthetic region already; the demo uses it"
            )
        }
        _ => {
            let s = crate::seed::run(&fhir, ingest, &args, false).await?;
            tracing::info!(citizens = s.citizens, documents = s.documents, "demo mode: seeded a synthetic region (fascicolo seed)");
        }
    }
    let n = seed_histories(ingest).await?;
    tracing::info!(documents = n, "demo mode: published the personas' histories");
    celiac_purchases(&fhir).await?;
    desk_bookings(&fhir).await?;
    mark_finished(&fhir, "everything").await?;
    Ok(true)
}

/// The demo's celiac merchants: (organisation id, name, channel); their API clients are
/// `demo-{id}`.
pub const DEMO_MERCHANTS: [(&str, &str, &str); 3] = [
    ("farmacia-san-luca", "Farmacia San Luca", "pharmacy"),
    ("bottega-senza-glutine", "Bottega Senza Glutine", "shop"),
    ("supermercato-navigli", "Supermercato Navigli", "supermarket"),
];

/// Luca (coeliac, 10) has spent part of this month's budget: his mother showed the code, and
/// the merchants went through the merchant API's own path (authorise, capture).
async fn celiac_purchases(fhir: &FhirService) -> anyhow::Result<()> {
    let month = month_tag();
    // once a month: a demo started again in another month shows purchases of that month
    if finished(fhir, &format!("celiac-{month}")).await? {
        return Ok(());
    }
    let portal = fascicolo_app::portal::Portal::new(fhir.clone());
    let giulia = personas().into_iter().find(|p| p.id == "rossi-giulia").context("demo persona")?;
    let cf = fascicolo_domain::CodiceFiscale::parse(&giulia.cf).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut mother = Actor::new(fascicolo_app::Who::Citizen { cf, patient: Some(giulia.id.into()) });
    mother.acting_for = Some(child().id.into());
    let (code, _) = portal.celiac_code(&mother).await.context("the demo celiac code")?;
    for (i, (merchant, amount, captured)) in
        [("farmacia-san-luca", 2_340, 2_340), ("supermercato-navigli", 3_175, 2_980)].into_iter().enumerate()
    {
        let mut m = Actor::new(fascicolo_app::Who::Client { client_id: format!("demo-{merchant}"), organization: None, platform: false });
        m.scopes = Some(Vec::new());
        let key = format!("demo-{month}-{i}");
        let a = portal.celiac_authorize(&m, &code, amount, &key).await.context("a demo celiac purchase")?;
        portal.celiac_capture(&m, &a.spend.id, Some(captured)).await.context("a demo celiac capture")?;
    }
    mark_finished(fhir, &format!("celiac-{month}")).await?;
    Ok(())
}

/// The synthetic region's ASST Fatebenefratelli Sacco (company code 030703).
const REGION_ASST: &str = "asst-030703";

/// The synthetic region's citizens booked two in three of their specialist prescriptions at
/// the CUP desk, through the booking service's own path: most took the first date offered,
/// every fourth a date three weeks later (out of the guarantee when one in time was offered).
/// The public waiting times count these bookings; the personas' prescriptions stay to book.
async fn desk_bookings(fhir: &FhirService) -> anyhow::Result<()> {
    if finished(fhir, "desk-bookings").await? {
        return Ok(());
    }
    // the demo's hospital organisation is the front office of the region's ASST of the same
    // name: its CUP operators manage that ASST's agendas
    if let Ok(asst) = fhir.read(&Actor::system(), "Organization", REGION_ASST).await {
        let mut org = fhir.read(&Actor::system(), "Organization", DEMO_HOSPITAL_ORG).await.map_err(|e| anyhow::anyhow!("{e}"))?.resource;
        org["partOf"] = json!({"reference": format!("Organization/{}", asst.resource["id"].as_str().unwrap_or(REGION_ASST))});
        fhir.update(&Actor::system(), "Organization", DEMO_HOSPITAL_ORG, org.to_string().as_bytes(), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let portal = fascicolo_app::portal::Portal::new(fhir.clone());
    let desk = Actor::new(fascicolo_app::Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some(DEMO_HOSPITAL_ORG.into()),
        role: fascicolo_app::gate::ProRole::CupOperator,
    });
    let personas: Vec<String> = personas().into_iter().map(|p| p.id.to_string()).chain([child().id.to_string()]).collect();
    let pairs = vec![("status".to_string(), "active".to_string()), ("_count".to_string(), "1000".to_string())];
    let page = fhir.search(&Actor::system(), Some("ServiceRequest"), &pairs, "").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut booked = 0;
    for (i, (_, json, _)) in page.entries.iter().enumerate() {
        let sr: serde_json::Value = serde_json::from_str(json)?;
        let (Some(id), Some(patient)) = (sr["id"].as_str(), sr["subject"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/")))
        else {
            continue;
        };
        if personas.iter().any(|p| p == patient) || !id.contains("-prescrizione-") || i % 3 == 2 {
            continue;
        }
        let from = (i % 4 == 3).then(|| fascicolo_domain::rome::today() + time::Duration::days(21));
        let options = match portal.find(&desk, Some(patient), id, from).await {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %e, "demo booking skipped");
                continue;
            }
        };
        if let Some(o) = options.options.first() {
            if portal.book(&desk, Some(patient), id, &o.key).await.is_ok() {
                booked += 1;
            }
        }
    }
    tracing::info!(booked, "demo mode: the region's citizens booked at the CUP desk");
    mark_finished(fhir, "desk-bookings").await?;
    Ok(())
}

/// This month in Rome, `YYYY-MM`.
fn month_tag() -> String {
    fascicolo_domain::celiac::month_key(fascicolo_domain::rome::today())
}

/// Seed the demo registry when it is not (all) there yet; returns whether it seeded.
pub async fn seed(fhir: &FhirService) -> anyhow::Result<bool> {
    seed_example_patients(fhir).await?;
    if finished(fhir, "registry").await? {
        return Ok(false);
    }
    let ps = personas();
    let by = |id: &str| ps.iter().find(|p| p.id == id).cloned().context("demo persona");
    let put = |v: Value| async move {
        let rt = v["resourceType"].as_str().unwrap_or_default().to_string();
        let id = v["id"].as_str().unwrap_or_default().to_string();
        fhir.update(&Actor::system(), &rt, &id, v.to_string().as_bytes(), None).await.with_context(|| format!("seeding {rt}/{id}"))
    };
    put(json!({"resourceType": "Organization", "id": DEMO_HOSPITAL_ORG, "active": true, "name": "ASST Fatebenefratelli Sacco",
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}]}))
    .await?;
    put(json!({"resourceType": "Organization", "id": "ats-milano", "active": true, "name": "ATS della Città Metropolitana di Milano",
        "identifier": [{"system": fascicolo_domain::systems::ASL_SYSTEM, "value": "030321"}],
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "govt"}]}]}))
    .await?;
    // professionals: Practitioner + PractitionerRole with the platform's role code
    let roles = [
        ("ferrari-paolo", "gp", Some("ats-milano"), "male", "1970-01-01"),
        ("colombo-elena", "pediatrician", Some("ats-milano"), "female", "1975-05-15"),
        ("marino-andrea", "gp", Some("ats-milano"), "male", "1972-06-15"),
        ("ricci-marco", "specialist", Some(DEMO_HOSPITAL_ORG), "male", "1968-07-22"),
        ("galli-sara", "nurse", Some(DEMO_HOSPITAL_ORG), "female", "1990-11-30"),
        ("moretti-luigi", "cup-operator", Some(DEMO_HOSPITAL_ORG), "male", "1982-03-08"),
        ("conti-chiara", "asst-admin", Some(DEMO_HOSPITAL_ORG), "female", "1979-12-01"),
    ];
    for (id, role, org, gender, birth) in roles {
        let p = by(id)?;
        put(person("Practitioner", &p, gender, birth)).await?;
        let mut r = json!({"resourceType": "PractitionerRole", "id": format!("{id}-role"), "active": true,
            "practitioner": {"reference": format!("Practitioner/{id}")},
            "code": [{"coding": [{"system": ROLE_SYSTEM, "code": role}]}]});
        if let Some(o) = org {
            r["organization"] = json!({"reference": format!("Organization/{o}")});
        }
        put(r).await?;
    }
    // citizens
    let giulia = by("rossi-giulia")?;
    let mut g = person("Patient", &giulia, "female", "1985-04-12");
    g["generalPractitioner"] = json!([{"reference": "Practitioner/ferrari-paolo"}]);
    g["telecom"] = json!([{"system": "email", "value": "giulia.rossi@example.invalid"}, {"system": "sms", "value": "+39 333 000 0001"}]);
    put(g).await?;
    let mut a = person("Patient", &by("verdi-anna")?, "female", "1940-02-20");
    a["generalPractitioner"] = json!([{"reference": "Practitioner/ferrari-paolo"}]);
    a["telecom"] = json!([{"system": "email", "value": "anna.verdi@example.invalid"}]);
    put(a).await?;
    let mut l = person("Patient", &child(), "male", &LUCA_BIRTH.to_string());
    l["generalPractitioner"] = json!([{"reference": "Practitioner/colombo-elena"}]);
    put(l).await?;
    let mut m = person("Patient", &by("bianchi-marco")?, "male", &MARCO_BIRTH.to_string());
    m["generalPractitioner"] = json!([{"reference": "Practitioner/ferrari-paolo"}]);
    put(m).await?;
    // Luca has coeliac disease: the condition, and the exemption the ATS issued (RI0060)
    put(json!({"resourceType": "Condition", "id": "bianchi-luca-celiac",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "579.0", "display": "Celiachia"}], "text": "Celiachia"},
        "subject": {"reference": "Patient/bianchi-luca"}, "onsetDateTime": "2022-03-14"}))
    .await?;
    put(json!({"resourceType": "Coverage", "id": "bianchi-luca-esenzione-ri0060", "status": "active",
        "type": {"coding": [{"system": fascicolo_domain::exemption::SYSTEM, "code": fascicolo_domain::celiac::EXEMPTION, "display": "Celiachia"}]},
        "beneficiary": {"reference": "Patient/bianchi-luca"}, "payor": [{"reference": "Organization/ats-milano"}],
        "period": {"start": "2022-04-01"}}))
    .await?;
    // the celiac merchants the ATS registered: a pharmacy, a specialist shop, a supermarket
    for (id, name, channel) in DEMO_MERCHANTS {
        put(json!({"resourceType": "Organization", "id": id, "active": true, "name": name,
            "identifier": [{"system": fascicolo_app::celiac::MERCHANT_CLIENT, "value": format!("demo-{id}")}],
            "type": [{"coding": [{"system": fascicolo_app::celiac::MERCHANT_TYPE.0, "code": fascicolo_app::celiac::MERCHANT_TYPE.1},
                {"system": "urn:fascicolo:celiac-channel", "code": channel}]}]}))
        .await?;
    }
    // family: Giulia holds parental responsibility for Luca (minor) and had it for Marco (19)
    for (id, child_id) in [("rossi-giulia-for-luca", "bianchi-luca"), ("rossi-giulia-for-marco", "bianchi-marco")] {
        put(json!({"resourceType": "RelatedPerson", "id": id, "active": true, "patient": {"reference": format!("Patient/{child_id}")},
            "relationship": [{"coding": [{"system": V3_ROLE, "code": "MTH", "display": "mother"}]}],
            "identifier": [{"system": CF_SYSTEM, "value": giulia.cf}], "name": [{"family": "Rossi", "given": ["Giulia"]}]}))
        .await?;
    }
    // Anna delegates her daughter-in-law Giulia (documents and vaccinations... everything)
    put(json!({"resourceType": "RelatedPerson", "id": "rossi-giulia-for-anna", "active": true, "patient": {"reference": "Patient/verdi-anna"},
        "relationship": [{"coding": [{"system": RELATIONSHIP_SYSTEM, "code": "delegate"}]}],
        "identifier": [{"system": CF_SYSTEM, "value": giulia.cf}], "name": [{"family": "Rossi", "given": ["Giulia"]}],
        "period": {"start": "2026-01-01T00:00:00Z", "end": "2028-01-01T00:00:00Z"},
        "extension": [{"url": DELEGATION_SCOPE_EXT, "valueCode": "DocumentReference"}, {"url": DELEGATION_SCOPE_EXT, "valueCode": "Immunization"},
            {"url": DELEGATION_SCOPE_EXT, "valueCode": "Appointment"}, {"url": DELEGATION_SCOPE_EXT, "valueCode": "AuditEvent"}]}))
    .await?;
    // consent to consultation (notice version 1) for Giulia, Anna and Luca (given by his mother)
    for (pid, performer) in [
        ("rossi-giulia", "Patient/rossi-giulia"),
        ("verdi-anna", "Patient/verdi-anna"),
        ("bianchi-luca", "RelatedPerson/rossi-giulia-for-luca"),
    ] {
        put(json!({"resourceType": "Consent", "id": format!("consent-{pid}"), "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": CONSENT_CATEGORY, "code": "consultation"}]}],
            "patient": {"reference": format!("Patient/{pid}")}, "dateTime": "2026-01-15T09:00:00Z",
            "performer": [{"reference": performer}], "policy": [{"uri": format!("{NOTICE_PREFIX}1")}],
            "provision": {"type": "permit"},
            "extension": [{"url": fascicolo_app::access::CONSENT_CHANNEL_EXT, "valueCode": "portal"}]}))
        .await?;
    }
    // care relations: Giulia has a booked cardiology visit; Anna has an active home-care team
    put(json!({"resourceType": "Appointment", "id": "appt-giulia-cardio", "status": "booked",
        "description": "Visita cardiologica", "start": "2026-12-10T09:30:00Z", "end": "2026-12-10T10:00:00Z",
        "participant": [{"actor": {"reference": "Patient/rossi-giulia"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/ricci-marco"}, "status": "accepted"}]}))
    .await?;
    put(json!({"resourceType": "CareTeam", "id": "careteam-anna", "status": "active", "name": "ADI Verdi Anna",
        "subject": {"reference": "Patient/verdi-anna"},
        "participant": [{"member": {"reference": "Practitioner/galli-sara"}}, {"member": {"reference": "Practitioner/ferrari-paolo"}}]}))
    .await?;
    // specialist prescriptions to book, written by the family doctors and the pediatrician as
    // their software does through the FHIR API
    for (k, (patient, doctor, code, class, days_ago, question)) in [
        ("rossi-giulia", "ferrari-paolo", "89.7A.3", "D", 3, "Cardiopalmo saltuario"),
        ("verdi-anna", "ferrari-paolo", "88.76.1", "B", 1, "Dolore addominale ricorrente"),
        ("verdi-anna", "ferrari-paolo", "95.02", "P", 20, "Calo del visus"),
        ("bianchi-luca", "colombo-elena", "95.02", "P", 6, "Controllo del visus"),
    ]
    .into_iter()
    .enumerate()
    {
        let nre = format!("030{:012}", (PERSONA_HOUSEHOLDS * 8 + k as u64) * 10_000 + 9_990);
        let service = fascicolo_domain::booking::service(code).context("a demo service")?;
        let authored = fascicolo_domain::rome::today() - time::Duration::days(days_ago);
        put(json!({"resourceType": "ServiceRequest", "id": format!("{patient}-prescrizione-{nre}"), "status": "active",
            "intent": "order", "subject": {"reference": format!("Patient/{patient}")},
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.9.4.3.9", "value": nre}],
            "requisition": {"system": "urn:oid:2.16.840.1.113883.2.9.4.3.9", "value": nre},
            "code": {"coding": [{"system": fascicolo_domain::booking::SERVICE_SYSTEM, "code": code, "display": service.name_it}],
                "text": service.name_it},
            "authoredOn": authored.to_string(),
            "requester": {"reference": format!("Practitioner/{doctor}")}, "reasonCode": [{"text": question}],
            "extension": [{"url": fascicolo_domain::booking::PRIORITY_EXT, "valueCode": class},
                {"url": fascicolo_domain::booking::ACCESS_EXT, "valueCode": "first"}]}))
        .await?;
    }
    mark_finished(fhir, "registry").await?;
    Ok(true)
}

/// Where the personas' households are numbered: past any region's (12 million households hold
/// more people than Lombardy), so their prescription numbers never meet a seeded citizen's, and
/// still inside the NRE's 12 digits.
const PERSONA_HOUSEHOLDS: u64 = 12_000_000;

/// Clinical histories for the demo's citizens (Giulia, her mother Anna, her son Luca),
/// generated and published through the producer path like the synthetic region's.
pub async fn seed_histories(ingest: &fascicolo_app::ingest::Ingest) -> anyhow::Result<u64> {
    use crate::seed::{persona_history, PersonaHistory};
    use fascicolo_seed::people::Chronic;
    let ps = personas();
    let by = |id: &str| ps.iter().find(|p| p.id == id).cloned().context("demo persona");
    let gp = by("ferrari-paolo")?;
    let ped = by("colombo-elena")?;
    let date =
        |y: i32, m: u8, d: u8| -> anyhow::Result<time::Date> { Ok(time::Date::from_calendar_date(y, time::Month::try_from(m)?, d)?) };
    let giulia = by("rossi-giulia")?;
    let anna = by("verdi-anna")?;
    let luca = child();
    let people = [
        PersonaHistory {
            patient: giulia.id.into(),
            cf: giulia.cf.clone(),
            given: "Giulia",
            surname: "Rossi",
            female: true,
            birth: date(1985, 4, 12)?,
            chronic: vec![Chronic::Hypertension],
            doctor: Some((gp.cf.clone(), "Paolo", "Ferrari")),
        },
        PersonaHistory {
            patient: anna.id.into(),
            cf: anna.cf.clone(),
            given: "Anna",
            surname: "Verdi",
            female: true,
            birth: date(1940, 2, 20)?,
            chronic: vec![Chronic::Diabetes],
            doctor: Some((gp.cf.clone(), "Paolo", "Ferrari")),
        },
        PersonaHistory {
            patient: luca.id.into(),
            cf: luca.cf.clone(),
            given: "Luca",
            surname: "Bianchi",
            female: false,
            birth: LUCA_BIRTH,
            // his coeliac disease is in the registry (demo::seed); his documents' history stays
            // as the portal tests know it
            chronic: vec![],
            doctor: Some((ped.cf.clone(), "Elena", "Colombo")),
        },
    ];
    let mut n = 0;
    for (i, p) in people.iter().enumerate() {
        n += persona_history(ingest, 7, 5, p, PERSONA_HOUSEHOLDS + i as u64).await.with_context(|| format!("history of {}", p.patient))?;
    }
    Ok(n)
}

/// Birth dates of Giulia's sons in the demo registry.
const LUCA_BIRTH: time::Date = time::macros::date!(2016 - 09 - 03);
const MARCO_BIRTH: time::Date = time::macros::date!(2007 - 01 - 10);

/// The people the demo identity provider offers, with what they show.
pub fn idp_personas() -> Vec<fascicolo_web::demo_idp::DemoPersona> {
    let describe = |role: &str| -> (String, String) {
        let (it, en) = match role {
            "citizen" => ("Cittadina/o", "Citizen"),
            "gp" => ("Medico di medicina generale", "General practitioner"),
            "pediatrician" => ("Pediatra di libera scelta", "Family pediatrician"),
            "specialist" => ("Cardiologo, ASST Fatebenefratelli Sacco", "Cardiologist, ASST Fatebenefratelli Sacco"),
            "nurse" => ("Infermiera, assistenza domiciliare", "Nurse, home care"),
            "cup-operator" => ("Operatore CUP", "Booking-centre operator"),
            _ => ("Amministratrice anagrafe ASST", "ASST registry administrator"),
        };
        (it.to_string(), en.to_string())
    };
    personas()
        .into_iter()
        .map(|p| {
            let mut description = describe(p.role);
            if p.id == "rossi-giulia" {
                // ages as of today in Rome, from the registry's birth dates
                let today = fascicolo_domain::rome::today();
                let (luca, marco) = (age_on(LUCA_BIRTH, today), age_on(MARCO_BIRTH, today));
                description.0.push_str(&format!(" — madre di Luca ({luca} anni) e Marco ({marco}), delegata di Anna Verdi"));
                description.1.push_str(&format!(" — mother of Luca ({luca}) and Marco ({marco}), delegate of Anna Verdi"));
            }
            fascicolo_web::demo_idp::DemoPersona {
                cf: p.cf,
                name: format!("{} {}", p.given, p.family),
                profile: p.role.to_string(),
                description,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sign-in page says how old Giulia's sons are today, not on the day it was written.
    #[test]
    fn the_sign_in_page_gives_the_childrens_ages_as_of_today() {
        let today = fascicolo_domain::rome::today();
        let years = |y: i32, m: u8, d: u8| today.year() - y - i32::from((today.month() as u8, today.day()) < (m, d));
        let giulia = idp_personas().into_iter().find(|p| p.cf == cf("RSSGLI85D52F205")).expect("Giulia");
        let (luca, marco) = (years(2016, 9, 3), years(2007, 1, 10));
        assert!(giulia.description.0.contains(&format!("Luca ({luca} anni) e Marco ({marco})")), "{}", giulia.description.0);
        assert!(giulia.description.1.contains(&format!("Luca ({luca}) and Marco ({marco})")), "{}", giulia.description.1);
    }
}
