//! The citizen portal over HTTP: what each person sees and, above all, what they do not; forms
//! that refuse bad input store nothing; language; the PDF index. Runs on SQLite, and on
//! PostgreSQL when FASCICOLO_TEST_DATABASE_URL is set. (The journeys in a real browser, with
//! accessibility checks, are `tests/browser/journeys.mjs`, run by `.ci/run`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use fascicolo_app::gate::ProRole;
use fascicolo_app::{Actor, FhirService, Who};
use serde_json::{json, Value};
use std::sync::Arc;

const GIULIA: &str = "RSSGLI85D52F205Q";

/// The demo registry, a tiny region (for the ASSTs that publish) and the personas' histories.
async fn portal_app() -> TestApp {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    record_fixtures(&fhir).await;
    // the same blob folder as the server, which renders what is published here
    let cfg = fascicolo_server::config::Config { public_url: Some(app.root.clone()), data_dir: app.data_dir.clone(), ..Default::default() };
    let ingest = fascicolo_server::ingest_service(&cfg, fhir.clone(), &app.root).unwrap();
    let args = fascicolo_load::seed::SeedArgs { citizens: 3, seed: 1, years: 1, no_documents: true, batch: 10, jobs: 1 };
    fascicolo_load::seed::run(&fhir, &ingest, &args, false).await.unwrap();
    let n = fascicolo_load::demo::seed_histories(&ingest).await.unwrap();
    assert!(n > 20, "the personas have histories ({n} documents)");
    app
}

struct Browser<'a> {
    app: &'a TestApp,
    cookie: String,
}

impl Browser<'_> {
    async fn get(&self, path: &str) -> (u16, String) {
        let r = no_redirects().get(format!("{}{path}", self.app.root)).header("cookie", &self.cookie).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
    async fn bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let r = no_redirects().get(format!("{}{path}", self.app.root)).header("cookie", &self.cookie).send().await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let r = no_redirects().post(format!("{}{path}", self.app.root)).header("cookie", &self.cookie).form(form).send().await.unwrap();
        let loc = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        (r.status().as_u16(), loc, r.text().await.unwrap())
    }
    async fn csrf(&self) -> String {
        csrf_of(&self.get("/famiglia").await.1)
    }
}

async fn browser<'a>(app: &'a TestApp, cf: &str, profile: &str) -> Browser<'a> {
    let s = sign_in(app, cf, profile).await;
    Browser { app, cookie: format!("fascicolo_session={s}") }
}

fn gp() -> Actor {
    Actor::new(Who::Professional { practitioner: "ferrari-paolo".into(), organization: None, role: ProRole::Gp })
}

/// Document ids linked from a list page.
fn doc_links(html: &str) -> Vec<String> {
    html.split("class=\"title\" href=\"/documenti/").skip(1).filter_map(|s| s.split('"').next().map(String::from)).collect()
}

fn pdf_text(bytes: &[u8]) -> String {
    let doc = lopdf::Document::load_mem(bytes).expect("a PDF");
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    doc.extract_text(&pages).expect("text")
}

#[tokio::test]
async fn the_portal_shows_the_record_and_hides_what_it_must() {
    let app = portal_app().await;
    // signed out: to the sign-in, coming back to the page asked for
    let r = no_redirects().get(format!("{}/documenti?q=x", app.root)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/auth/login?next=%2Fdocumenti%3Fq%3Dx");

    let giulia = browser(&app, GIULIA, "citizen").await;
    let (s, home) = giulia.get("/").await;
    assert_eq!(s, 200);
    assert!(home.contains("Giulia Rossi") && home.contains("Prossimi appuntamenti") && home.contains("Visita cardiologica"));

    // the list holds exactly the documents the FHIR API gives her, newest first
    let (_, list) = giulia.get("/documenti").await;
    let citizen_token = token_for(
        &app.store,
        &Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(GIULIA).unwrap(), patient: Some("rossi-giulia".into()) }),
    )
    .await;
    let api = app.get_as("/DocumentReference?patient=rossi-giulia&status=current&_summary=count", &citizen_token).await;
    let total = api.body["total"].as_u64().unwrap();
    assert!(list.contains(&format!("{total} documenti")), "the count matches the API's ({total})");
    assert!(
        list.contains("Referto di consulenza psicologica") && list.contains("Oscurato ai medici"),
        "she sees her own hidden document, marked"
    );

    // free text finds the lab reports and only them
    let (_, found) = giulia.get("/documenti?q=laboratorio").await;
    let ids = doc_links(&found);
    assert!(ids.len() >= 5, "lab reports found: {}", ids.len());
    assert!(!ids.contains(&"doc-giulia-cardio".to_string()), "the cardiology report does not match");
    // the first published lab report (the tests also have a hand-made one carrying text, no CDA)
    let mut lab = None;
    for id in &ids {
        let (_, page) = giulia.get(&format!("/documenti/{id}")).await;
        if page.contains("<h2>Contenuto</h2>") {
            assert!(page.contains("Glucosio") && page.contains("Oscura ai medici"));
            lab = Some(id.clone());
            break;
        }
    }
    let lab = lab.expect("a published lab report");
    let (s, chart) = giulia.get("/risultati/2345-7").await;
    assert_eq!(s, 200);
    assert!(chart.contains("<svg") && chart.contains("<polygon") && chart.contains("Glucosio"));

    // the GP sees the report (consent, care relation) and the access is logged
    let doctor = browser(&app, &fascicolo_load::demo::cf("FRRPLA70A01F205"), "gp").await;
    assert_eq!(doctor.get(&format!("/documents/{lab}")).await.0, 200);
    // the portal is the citizen's: a professional profile gets an explanation, no data
    let (s, page) = doctor.get("/documenti").await;
    assert_eq!(s, 403);
    assert!(page.contains("Area riservata ai cittadini") && !page.contains("Referto"));

    // hiding needs the form's CSRF token; without it nothing changes
    let (s, _, _) = giulia.post(&format!("/documenti/{lab}/oscuramento"), &[("csrf", "forged"), ("code", "P99")]).await;
    assert_eq!(s, 403);
    assert_eq!(doctor.get(&format!("/documents/{lab}")).await.0, 200, "a forged form hides nothing");
    let csrf = giulia.csrf().await;
    // a code the form never sends: refused, nothing hidden
    let (s, _, refused) =
        giulia.post(&format!("/documenti/{lab}/oscuramento"), &[("csrf", &csrf), ("code", "P42"), ("confirm", "1")]).await;
    assert_eq!(s, 400, "{refused}");
    assert_eq!(doctor.get(&format!("/documents/{lab}")).await.0, 200, "a refused code hides nothing");
    // the first press asks for confirmation, saying what hiding means; nothing changes yet
    let (s, _, confirm) = giulia.post(&format!("/documenti/{lab}/oscuramento"), &[("csrf", &csrf), ("code", "P99")]).await;
    assert_eq!(s, 200);
    assert!(confirm.contains("Vuoi oscurare questo documento?") && confirm.contains("nemmeno in un"), "{confirm}");
    assert!(confirm.contains("name=\"confirm\" value=\"1\"") && confirm.contains(&format!("href=\"/documenti/{lab}\"")));
    assert_eq!(doctor.get(&format!("/documents/{lab}")).await.0, 200, "not hidden before she confirms");
    let (s, loc, _) = giulia.post(&format!("/documenti/{lab}/oscuramento"), &[("csrf", &csrf), ("code", "P99"), ("confirm", "1")]).await;
    assert_eq!((s, loc.as_str()), (303, format!("/documenti/{lab}?esito=P99").as_str()));
    // now hidden from the GP everywhere: page, PDF, FHIR search, his view of the results
    assert_eq!(doctor.get(&format!("/documents/{lab}")).await.0, 404);
    assert_eq!(doctor.get(&format!("/documents/{lab}/pdf")).await.0, 404);
    let gp_token = token_for(&app.store, &gp()).await;
    let r = app.get_as(&format!("/DocumentReference?patient=rossi-giulia&_id={lab}"), &gp_token).await;
    assert_eq!(r.body["total"], 0);
    // nor in his counts, nor reached through an _include from its results
    let count = |b: &Value| b["total"].as_u64().unwrap();
    let gp_count = app.get_as("/DocumentReference?patient=rossi-giulia&_summary=count", &gp_token).await;
    let her_count = app.get_as("/DocumentReference?patient=rossi-giulia&_summary=count", &citizen_token).await;
    assert!(count(&gp_count.body) < count(&her_count.body), "his count leaves out what is hidden from him");
    let inc = app.get_as("/DiagnosticReport?patient=rossi-giulia&_include=DiagnosticReport:result&_count=1000", &gp_token).await;
    assert!(!inc.body.to_string().contains(&lab), "no trace of the hidden report in his includes");
    let r = app
        .get_as(&format!("/Observation?patient=rossi-giulia&_count=1000&_tag=urn:fascicolo:document|DocumentReference/{lab}"), &gp_token)
        .await;
    assert_eq!(r.body["total"], 0, "nor the results of the hidden report");
    // she still sees it, marked, and can lift the hiding
    let (_, page) = giulia.get(&format!("/documenti/{lab}")).await;
    assert!(page.contains("Oscurato ai medici"), "marked hidden for her");
    assert!(page.contains("Togli l&#39;oscuramento") || page.contains("Togli l'oscuramento"), "with the way back");

    // the access log names the GP and his role
    let (_, log) = giulia.get("/privacy/accessi").await;
    assert!(log.contains("Paolo Ferrari") && log.contains("Medico di medicina generale"), "the GP's access is in the log");

    // the PDF index lists every document she sees, with the font embedded
    let (s, pdf) = giulia.bytes("/documenti/indice.pdf").await;
    assert_eq!(s, 200);
    assert!(pdf.starts_with(b"%PDF-") && pdf.windows(9).any(|w| w == b"FontFile2"));
    let text = pdf_text(&pdf);
    assert!(text.contains(&format!("{total} documenti")), "the index says {total} documents");

    // detail pages: her vaccination opens; her son's does not open while her record is on screen
    let (_, list) = giulia.get("/vaccinazioni").await;
    let vacc = list.split("href=\"/vaccinazioni/").nth(1).and_then(|s| s.split('"').next()).expect("a vaccination link").to_string();
    let (s, page) = giulia.get(&format!("/vaccinazioni/{vacc}")).await;
    assert_eq!(s, 200);
    assert!(page.contains("Lotto") && page.contains("Somministrata"));
    assert_eq!(giulia.get("/vaccinazioni/imm-luca-flu").await.0, 404, "an item of another record, even one she may read as a parent");
    let (_, list) = giulia.get("/prescrizioni").await;
    let presc = list.split("href=\"/prescrizioni/").nth(1).and_then(|s| s.split('"').next()).expect("a prescription link").to_string();
    let (s, page) = giulia.get(&format!("/prescrizioni/{presc}")).await;
    assert_eq!(s, 200);
    assert!(page.contains("NRE") && page.contains("Code 39"), "the NRE with its barcode");

    // the parent: switching to the minor child, a P97 document is nowhere, not even in the PDF
    let (s, loc, _) = giulia.post("/auth/profile", &[("csrf", &csrf), ("acting_for", "bianchi-luca"), ("next", "/")]).await;
    assert_eq!((s, loc.as_str()), (303, "/"));
    let (_, home) = giulia.get("/").await;
    assert!(home.contains("Luca Bianchi") && home.contains("figlio minore") && !home.contains("figlio/a"), "whose record it is, on screen");
    let (_, list) = giulia.get("/documenti").await;
    assert!(!doc_links(&list).is_empty(), "the child's documents are listed");
    assert!(!list.contains("consultorio"), "a document hidden from parents is not listed");
    assert!(!list.contains("Giulia Rossi (il tuo)"));
    let text = pdf_text(&giulia.bytes("/documenti/indice.pdf").await.1);
    assert!(text.contains("Luca Bianchi") && !text.to_lowercase().contains("consultorio"), "nor in the PDF index");
    assert_eq!(giulia.get("/documenti/doc-luca-consultorio").await.0, 404, "nor by address");
    // her elder son turned 18: his record is no longer hers to look at, nor offered
    let (_, family) = giulia.get("/famiglia").await;
    assert!(family.contains("Luca Bianchi") && !family.contains("Marco Bianchi"), "only the minor child is offered");
    assert!(family.contains("Figlio minorenne") && !family.contains("Figlio/a"), "Luca is her son, in words that agree");
    let (s, _, _) = giulia.post("/auth/profile", &[("csrf", &csrf), ("acting_for", "bianchi-marco"), ("next", "/")]).await;
    assert_eq!(s, 403, "an adult child's record cannot be switched to");
    // a record she may not act on cannot be switched to
    let (s, _, _) = giulia.post("/auth/profile", &[("csrf", &csrf), ("acting_for", "rossi-giulia-someone-else"), ("next", "/")]).await;
    assert_eq!(s, 403);

    // the delegate: Anna's delegation covers documents, vaccinations, appointments, access log
    giulia.post("/auth/profile", &[("csrf", &csrf), ("acting_for", "verdi-anna"), ("next", "/")]).await;
    let (s, list) = giulia.get("/documenti").await;
    assert_eq!(s, 200);
    let annas = doc_links(&list);
    assert!(annas.contains(&"doc-anna-ldo".to_string()), "Anna's discharge letter is listed: {annas:?}");
    assert!(!annas.contains(&lab), "and nothing of Giulia's record");
    let (s, page) = giulia.get("/risultati").await;
    assert_eq!(s, 403, "results are outside the delegation");
    assert!(!page.contains("mg/dL"));
    // her own looks at Anna's record are in Anna's log, by role (her delegation does not reach
    // the people acting for Anna, so no name), never as a bare reference
    let (s, log) = giulia.get("/privacy/accessi").await;
    assert_eq!(s, 200);
    assert!(log.contains("Delegato") && log.contains("per conto del titolare"), "the delegate's own accesses are listed");
    assert!(!log.contains("RelatedPerson/"), "no bare reference in the log");
    assert!(!log.contains("(1 elementi)"), "one item is 'elemento'");
    giulia.post("/auth/profile", &[("csrf", &csrf), ("acting_for", "rossi-giulia"), ("next", "/")]).await;
}

#[tokio::test]
async fn taccuino_and_delegation_forms_refuse_bad_input_and_store_nothing() {
    let app = portal_app().await;
    let giulia = browser(&app, GIULIA, "citizen").await;
    let csrf = giulia.csrf().await;
    let observations = || async { app.count("Observation").await };
    let before = observations().await;
    // every problem, next to its field, nothing stored
    let (s, _, page) = giulia
        .post("/taccuino", &[("csrf", &csrf), ("kind", "blood-pressure"), ("value", "abc"), ("value2", ""), ("when", "2999-01-01")])
        .await;
    assert_eq!(s, 422);
    for id in ["value-error", "value2-error", "when-error"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id} shown");
    }
    assert!(page.contains("aria-invalid=\"true\"") && page.contains("nulla è stato salvato"));
    assert_eq!(observations().await, before);
    // a forged form: refused, nothing stored
    let (s, _, _) = giulia.post("/taccuino", &[("csrf", "x"), ("kind", "weight"), ("value", "70"), ("when", "2026-01-01")]).await;
    assert_eq!(s, 403);
    assert_eq!(observations().await, before);

    // a private measurement: stored, charted for her, invisible to the GP
    let (s, loc, _) = giulia.post("/taccuino", &[("csrf", &csrf), ("kind", "weight"), ("value", "71,5"), ("when", "2026-01-01")]).await;
    assert_eq!((s, loc.as_str()), (303, "/taccuino?esito=misura"));
    // a shared one
    let (s, _, _) = giulia
        .post(
            "/taccuino",
            &[("csrf", &csrf), ("kind", "blood-pressure"), ("value", "135"), ("value2", "85"), ("when", "2026-01-02"), ("share", "1")],
        )
        .await;
    assert_eq!(s, 303);
    assert_eq!(observations().await, before + 2);
    let (_, chart) = giulia.get("/risultati/29463-7").await;
    assert!(chart.contains("71,5 kg") && !chart.contains("71.5 kg") && chart.contains("Taccuino"), "a decimal comma in Italian");
    // in English the Taccuino's measurements have English names, in the list and on the chart
    let (_, en) = giulia.get("/taccuino?lang=en").await;
    assert!(en.contains("Body weight</a>") && !en.contains("Peso corporeo"), "{en}");
    let (_, en_chart) = giulia.get("/risultati/29463-7?lang=en").await;
    assert!(en_chart.contains("<h1>Body weight</h1>") && en_chart.contains("71.5 kg"), "{en_chart}");
    let gp_token = token_for(&app.store, &gp()).await;
    let r = app.get_as("/Observation?patient=rossi-giulia&code=http://loinc.org|29463-7", &gp_token).await;
    assert_eq!(r.body["total"], 0, "the private weight is hidden from the GP");
    let r = app.get_as("/Observation?patient=rossi-giulia&code=http://loinc.org|85354-9", &gp_token).await;
    assert_eq!(r.body["total"], 1, "the shared blood pressure is visible to him");
    assert_eq!(r.body["entry"][0]["resource"]["component"][1]["valueQuantity"]["value"], 85.0);

    // she shares the private weight later: now the GP sees it
    let weight = app.send("GET", "/Observation?code=http://loinc.org|29463-7&patient=rossi-giulia", None, &[]).await.body["entry"][0]
        ["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _, _) = giulia.post(&format!("/taccuino/misure/{weight}/visibilita"), &[("csrf", &csrf), ("share", "1")]).await;
    assert_eq!(s, 303);
    let r = app.get_as("/Observation?patient=rossi-giulia&code=http://loinc.org|29463-7", &gp_token).await;
    assert_eq!(r.body["total"], 1, "shared afterwards");
    // a lab result is not a Taccuino measurement: its visibility is not switched from here
    let lab = app.send("GET", "/Observation?code=http://loinc.org|2345-7&patient=rossi-giulia", None, &[]).await.body["entry"][0]
        ["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(giulia.post(&format!("/taccuino/misure/{lab}/visibilita"), &[("csrf", &csrf), ("share", "0")]).await.0, 403);

    // a private note: stored as a Taccuino text document, shown to her, hidden from the GP
    let docs = app.count("DocumentReference").await;
    let (s, _, page) = giulia.post("/taccuino/note", &[("csrf", &csrf), ("title", "Dieta"), ("text", "")]).await;
    assert_eq!(s, 422, "an empty note is refused");
    assert!(page.contains("Scrivi il testo della nota"));
    assert_eq!(app.count("DocumentReference").await, docs);
    let (s, _, _) = giulia.post("/taccuino/note", &[("csrf", &csrf), ("title", "Dieta"), ("text", "Niente sale <b>dopo</b> le 18")]).await;
    assert_eq!(s, 303);
    let (_, list) = giulia.get("/documenti?q=dieta").await;
    let note = doc_links(&list).first().cloned().expect("the note is listed");
    let (_, page) = giulia.get(&format!("/documenti/{note}")).await;
    assert!(page.contains("Niente sale &lt;b&gt;dopo&lt;/b&gt; le 18"), "the note's text, escaped");
    let r = app.get_as(&format!("/DocumentReference?patient=rossi-giulia&_id={note}"), &gp_token).await;
    assert_eq!(r.body["total"], 0, "the private note is hidden from the GP");

    // notification settings: what is unticked is off
    let (s, _, _) = giulia.post("/privacy/notifiche", &[("csrf", &csrf), ("on", "new-document.email"), ("on", "access.email")]).await;
    assert_eq!(s, 303);
    let (_, page) = giulia.get("/privacy").await;
    assert!(page.contains("value=\"new-document.email\" checked") && page.contains("value=\"access.email\" checked"));
    assert!(!page.contains("value=\"new-document.sms\" checked") && !page.contains("value=\"access.sms\" checked"));

    // delegations: a wrong codice fiscale and a past date are both named; nothing stored
    let rps = app.count("RelatedPerson").await;
    let (s, _, page) = giulia
        .post("/famiglia/deleghe", &[("csrf", &csrf), ("given", "Mario"), ("family", "Neri"), ("cf", "NOTACODE"), ("until", "2001-01-01")])
        .await;
    assert_eq!(s, 422);
    assert!(page.contains("id=\"cf-error\"") && page.contains("id=\"until-error\""));
    assert!(page.contains("value=\"Mario\""), "what she typed is kept");
    assert_eq!(app.count("RelatedPerson").await, rps);
    // a valid one, scoped, then revoked
    let cf = fascicolo_load::demo::cf("NREMRA70A01F205");
    let (s, loc, _) = giulia
        .post(
            "/famiglia/deleghe",
            &[("csrf", &csrf), ("given", "Mario"), ("family", "Neri"), ("cf", &cf), ("until", "2030-01-01"), ("scope", "Immunization")],
        )
        .await;
    assert_eq!((s, loc.as_str()), (303, "/famiglia?esito=delega"), "{loc}");
    let (_, page) = giulia.get("/famiglia").await;
    assert!(page.contains("Mario Neri") && page.contains("Vaccinazioni") && page.contains("Revoca"));
    let rp = page.split("/famiglia/deleghe/").nth(1).and_then(|s| s.split('/').next()).unwrap().to_string();
    let (s, _, _) = giulia.post(&format!("/famiglia/deleghe/{rp}/revoca"), &[("csrf", &csrf)]).await;
    assert_eq!(s, 303);
    let (_, page) = giulia.get("/famiglia").await;
    assert!(page.contains("terminata"));
    let v: Value = app.send("GET", &format!("/RelatedPerson/{rp}"), None, &[]).await.body;
    assert_eq!(v["active"], false);
}

#[tokio::test]
async fn italian_by_default_english_on_request_and_remembered() {
    let app = portal_app().await;
    let giulia = browser(&app, GIULIA, "citizen").await;
    let (_, it) = giulia.get("/documenti").await;
    assert!(it.contains("<html lang=\"it\"") && it.contains("I tuoi documenti"));
    let r = no_redirects().get(format!("{}/lingua/en?next=/privacy", app.root)).header("cookie", &giulia.cookie).send().await.unwrap();
    assert_eq!(location(&r), "/privacy");
    let lang = set_cookie(&r, "fascicolo_lang").unwrap();
    assert_eq!(lang, "en");
    let r = no_redirects()
        .get(format!("{}/documenti", app.root))
        .header("cookie", format!("{}; fascicolo_lang=en", giulia.cookie))
        .send()
        .await
        .unwrap();
    let en = r.text().await.unwrap();
    assert!(en.contains("<html lang=\"en\"") && en.contains("Your documents") && !en.contains("I tuoi documenti"));
    // the profile page too: the portal's design, the chosen language
    let r = no_redirects()
        .get(format!("{}/me", app.root))
        .header("cookie", format!("{}; fascicolo_lang=en", giulia.cookie))
        .send()
        .await
        .unwrap();
    let me = r.text().await.unwrap();
    assert!(
        me.contains("<html lang=\"en\"") && me.contains("Your profile") && me.contains("Active profile") && !me.contains("Profilo attivo"),
        "{me}"
    );
    assert!(
        me.contains("href=\"/static/portal.css\"") && me.contains("class=\"skip\"") && me.contains("href=\"/\""),
        "the portal's design: {me}"
    );
    // the national document types are named in English (the filter and the list); in Italian, in Italian
    assert!(en.contains("Laboratory report") && !en.contains(">Referto di laboratorio ("), "the type filter in English");
    let (_, it_list) = giulia.get("/documenti?lang=it").await;
    assert!(it_list.contains("Referto di laboratorio") && !it_list.contains("Laboratory report"));
    // an open redirect is not possible through the language switch
    let r = no_redirects().get(format!("{}/lingua/en?next=//evil.example", app.root)).send().await.unwrap();
    assert_eq!(location(&r), "/");
    // errors read as messages for people, in the chosen language
    let r = no_redirects()
        .get(format!("{}/documenti/nope", app.root))
        .header("cookie", format!("{}; fascicolo_lang=en", giulia.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let t = r.text().await.unwrap();
    assert!(t.contains("Not found") && t.contains("does not exist or is not visible"));
}

/// The text between `start` and the next `end` after it.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// What the portal shows reads as people write it and is true: one instant everywhere, numbers
/// and units as Italians write them, statuses in words, a panel in one row, a prescription
/// that expired said so, an item once in the timeline, vaccinations numbered and in Italian.
#[tokio::test]
async fn every_item_reads_true_and_as_people_write_it() {
    let app = portal_app().await;
    let giulia = browser(&app, GIULIA, "citizen").await;

    // one instant: the time on the document page is the time inside its rendering, summer or
    // winter (the generator wrote summer documents at +01:00, an hour off)
    let (_, list) = giulia.get("/documenti?pagina=1").await;
    let mut compared = 0;
    let mut summer = 0;
    for id in doc_links(&list) {
        let (_, page) = giulia.get(&format!("/documenti/{id}")).await;
        let (Some(shown), Some(inside)) =
            (between(&page, "<dt>Data</dt><dd>", "</dd>"), between(&page, "<dt>Data del documento</dt><dd>", "</dd>"))
        else {
            continue;
        };
        assert_eq!(shown, inside, "{id}: the page and the document's own rendering say the same time");
        compared += 1;
        let month: u8 = shown.get(3..5).and_then(|m| m.parse().ok()).unwrap_or(0);
        summer += usize::from((4..=9).contains(&month));
    }
    assert!(compared >= 5 && summer >= 1, "{compared} documents compared, {summer} from summer");

    // blood pressure: one row with both values as people write them, charts that open
    let csrf = giulia.csrf().await;
    let (s, _, _) = giulia
        .post("/taccuino", &[("csrf", &csrf), ("kind", "blood-pressure"), ("value", "131"), ("value2", "84"), ("when", "2026-11-20")])
        .await;
    assert_eq!(s, 303);
    let (_, results) = giulia.get("/risultati").await;
    assert!(results.contains("href=\"/risultati/85354-9\">Pressione arteriosa</a>"), "the panel has its row and chart");
    assert!(results.contains("131/84 mmHg"), "both values, in mmHg");
    // grouped as a doctor reads a report: the pressure with the vital signs, glucose with blood sugar
    let group = |heading: &str| {
        results.split(&format!("{heading}</h2>")).nth(1).and_then(|g| g.split("</section>").next()).unwrap_or_default().to_string()
    };
    let (vitals, sugar) = (group("Parametri vitali e misure"), group("Glicemia e diabete"));
    assert!(vitals.contains("Pressione arteriosa") && !vitals.contains("Glucosio"), "{vitals}");
    assert!(sugar.contains("Glucosio") && !sugar.contains("Pressione arteriosa"), "{sugar}");
    // how each value moved since the one before (same unit), with that one's date
    assert!(
        results.contains("Rispetto al precedente") && (results.contains("↑ +") || results.contains("↓ −")) && results.contains("dal "),
        "changes shown"
    );
    assert!(!results.contains("mm[Hg]") && !results.contains("href=\"/risultati/8462-4\""), "no raw unit, no half a panel");
    let (s, systolic) = giulia.get("/risultati/8480-6").await;
    assert_eq!(s, 200, "the systolic chart opens");
    assert!(systolic.contains("<h1>Pressione sistolica</h1>") && systolic.contains("131 mmHg") && !systolic.contains("84 mmHg"));
    let (s, panel) = giulia.get("/risultati/85354-9").await;
    assert_eq!(s, 200);
    assert!(panel.contains("<h1>Pressione arteriosa</h1>") && panel.contains("131 mmHg") && panel.contains("84 mmHg"));
    // the legend names only the marks drawn: a Taccuino square, no laboratory circle
    assert!(panel.contains("Quadrato bianco") && !panel.contains("Rombo rosso") && !panel.contains("Cerchio blu"), "{panel}");
    // a strict range is written as the laboratory wrote it, with a decimal comma
    assert!(results.contains("&lt; 200") && !results.contains("≤ 200"), "cholesterol's range is < 200");
    assert!(!results.contains("laboratorio cambiato"));

    // prescriptions: statuses in words; those past their 30 days are expired, not to collect;
    // what the document says (packs, diagnosis, prescriber) is shown
    let (_, rx) = giulia.get("/prescrizioni").await;
    assert!(rx.contains("Scaduta il"), "old prescriptions are expired");
    let to_collect = rx.matches("Da ritirare entro il").count();
    assert!(to_collect <= 1, "at most the last one can still be collected: {to_collect}");
    assert!(rx.contains("Paolo Ferrari") && rx.contains("confezion") && rx.contains("Ipertensione"), "prescriber, packs, diagnosis");
    assert!(rx.contains("Principio attivo") && (rx.contains("ramipril") || rx.contains("amlodipina")), "the active ingredient");
    // her health card's code as its Code 39, for the pharmacist; then each prescription's NRE
    let card = between(&rx, "id=\"health-card\"", "</section>").expect("the health card's barcode");
    assert!(card.contains("aria-label=\"Code 39: RSSGLI85D52F205Q\"") && card.contains(">RSSGLI85D52F205Q<"), "{card}");
    let digits = between(&rx, "<figcaption class=\"digits\">", "<").expect("the NRE's digits under its barcode");
    assert!(digits.len() == 15 && digits.starts_with("030"), "{digits}");
    for raw in [">active<", ">completed<", ">Altro<"] {
        assert!(!rx.contains(raw), "{raw}");
    }

    // the timeline: a prescription is one event (the item, not also its document)
    let (_, timeline) = giulia.get("/cronologia").await;
    assert!(timeline.contains("href=\"/prescrizioni/"), "prescriptions are there");
    assert!(!timeline.contains("Prescrizione farmaceutica"), "their documents are not listed twice");

    // the text search looks inside the reports, in the words people use ("glicemia")
    let (_, found) = giulia.get("/documenti?q=glicemia").await;
    let hits = doc_links(&found);
    assert!(!hits.is_empty(), "lab reports carry the glucose value");
    assert!(found.matches("class=\"title\"").count() == hits.len() && !found.contains(">Prescrizione farmaceutica<"));
    // the type filter groups by the national type, not by the first title met
    assert!(list.contains("Referto di specialistica ambulatoriale (") || !list.contains("value=\"11488-4\""), "11488-4 named nationally");

    // the access log in plain words: who by name, which documents, a publication run as one line
    let (_, lab_list) = giulia.get("/documenti?q=laboratorio").await;
    let doctor = browser(&app, &fascicolo_load::demo::cf("FRRPLA70A01F205"), "gp").await;
    // the first he may open (an HIV screening, art. 6, is not for him)
    let mut opened = 0;
    for lab in doc_links(&lab_list) {
        if doctor.get(&format!("/documents/{lab}")).await.0 == 200 {
            opened += 1;
            break;
        }
    }
    assert_eq!(opened, 1);
    let (_, log) = giulia.get("/privacy/accessi").await;
    assert!(log.contains("Paolo Ferrari"), "the GP by name");
    let ferrari = log.split("<tr").find(|r| r.contains("Paolo Ferrari")).unwrap_or_default();
    assert!(
        ferrari.contains("Ha consultato") && ferrari.contains(": Referto di laboratorio ("),
        "which document he saw, by title and date: {ferrari}"
    );
    assert!(!ferrari.contains("elementi"), "not a count of items");
    assert!(log.contains("Ha pubblicato") && log.contains("Sistema informativo — "), "a hospital's publication run in one line");
    assert!(!log.contains("seed-asst-"), "no bare client id");

    // a report's PDF has a name that says what it is
    let published = hits.iter().find(|h| !h.starts_with("doc-")).expect("a published lab report (not a hand-made fixture)");
    let r = no_redirects().get(format!("{}/documents/{published}/pdf", app.root)).header("cookie", &giulia.cookie).send().await.unwrap();
    let disposition = r.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(disposition.contains("filename=\"referto-di-laboratorio-20") && disposition.ends_with(".pdf\""), "{disposition}");

    // an adult's own report offers no "hide from parents"
    let (_, doc) = giulia.get(&format!("/documenti/{}", doc_links(&list)[0])).await;
    assert!(doc.contains("Oscura ai medici") && !doc.contains("Oscura ai genitori"));

    // her son's vaccinations: doses counted 1, 2, … per vaccine in date order, site and route in Italian
    giulia.post("/auth/profile", &[("csrf", &csrf), ("acting_for", "bianchi-luca"), ("next", "/")]).await;
    let (_, vax) = giulia.get("/vaccinazioni").await;
    let mut doses: std::collections::HashMap<String, Vec<u32>> = std::collections::HashMap::new();
    for row in vax.split("<tr>").skip(2) {
        let name = between(row, "<th scope=\"row\">", "</a>").and_then(|a| a.split("\">").nth(1)).unwrap_or_default().to_string();
        let dose = between(row, "data-label=\"Dose\">", "<").and_then(|d| d.parse().ok()).unwrap_or(0);
        doses.entry(name).or_default().push(dose);
    }
    assert!(doses.len() >= 3, "{doses:?}");
    for (name, list) in &doses {
        // newest first on the page
        let mut asc = list.clone();
        asc.reverse();
        assert_eq!(asc, (1..=asc.len() as u32).collect::<Vec<_>>(), "{name}: {list:?}");
    }
    let first = between(&vax, "<a href=\"/vaccinazioni/", "\"").unwrap().to_string();
    let (_, one) = giulia.get(&format!("/vaccinazioni/{first}")).await;
    assert!(one.contains("Braccio sinistro") && one.contains("Intramuscolare"), "in Italian");
    assert!(!one.contains("left arm") && !one.contains("Injection"));
}

/// The pages every public site links from its footer open without signing in, in both
/// languages; an unknown address is a designed page.
#[tokio::test]
async fn the_footer_pages_open_for_everyone() {
    let app = spawn_app().await;
    for (path, it, en) in [
        ("/accessibilita", "Dichiarazione di accessibilità", "Accessibility statement"),
        ("/aiuto", "Aiuto", "Help"),
        ("/note-legali", "Note legali", "Legal notes"),
    ] {
        let page = |q: &'static str| {
            let url = format!("{}{path}{q}", app.root);
            async move {
                let r = no_redirects().get(url).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        let (s, body) = page("").await;
        assert_eq!(s, 200, "{path}");
        assert!(body.contains(&format!("<h1>{it}</h1>")) && body.contains("href=\"/accessibilita\""), "{path}");
        let (_, body) = page("?lang=en").await;
        assert!(body.contains(&format!("<h1>{en}</h1>")) && body.contains("<html lang=\"en\""), "{path} in English");
    }
    let r = no_redirects().get(format!("{}/non-esiste", app.root)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(body.contains("Pagina non trovata") && body.contains("href=\"/aiuto\""), "a designed page with the footer");
}

/// A delegate is offered only what the delegation covers, told why the rest is not there, and
/// sees its scope and end; another's record is named, not greeted as the person signed in.
#[tokio::test]
async fn a_delegate_sees_only_what_the_delegation_covers() {
    let app = portal_app().await;
    let giulia = browser(&app, GIULIA, "citizen").await;
    let csrf = giulia.csrf().await;
    let (_, family) = giulia.get("/famiglia").await;
    assert!(family.contains("Comprende: documenti, vaccinazioni, appuntamenti, registro degli accessi"), "the scope, in words");
    assert!(family.contains("Fino al 01/01/2028"), "and its end");

    giulia.post("/auth/profile", &[("csrf", &csrf), ("acting_for", "verdi-anna"), ("next", "/")]).await;
    let (s, home) = giulia.get("/").await;
    assert_eq!(s, 200);
    assert!(home.contains("Il fascicolo di Anna Verdi") && !home.contains("Ciao, Anna"), "not greeted as Anna");
    for outside in ["href=\"/risultati\"", "href=\"/prescrizioni\"", "href=\"/piano-di-cura\"", "href=\"/taccuino\"", "Prescrizioni attive"]
    {
        assert!(!home.contains(outside), "{outside}: outside the delegation, not offered");
    }
    for inside in ["href=\"/documenti\"", "href=\"/vaccinazioni\"", "href=\"/appuntamenti\"", "href=\"/privacy\""] {
        assert!(home.contains(inside), "{inside}: covered, offered");
    }
    assert!(home.contains("id=\"delegation-scope\"") && home.contains("Le altre sezioni non sono mostrate"), "says why");
    let (_, privacy) = giulia.get("/privacy").await;
    assert!(!privacy.contains("Revoca il consenso") && !privacy.contains("Do il consenso"), "no consent button the gate would refuse");
    assert!(privacy.contains("una delega non lo comprende"));

    giulia.post("/auth/profile", &[("csrf", &csrf), ("acting_for", "bianchi-luca"), ("next", "/")]).await;
    let (_, home) = giulia.get("/").await;
    assert!(home.contains("Il fascicolo di Luca Bianchi") && !home.contains("Ciao, Luca"));
    assert!(home.contains("href=\"/prescrizioni\""), "a parent sees her child's whole record");
}

/// A valid codice fiscale no one in the registry has (the check character computed by trying).
fn unknown_cf() -> String {
    ('A'..='Z')
        .map(|c| format!("ZZZZZZ80A01F205{c}"))
        .find(|s| fascicolo_domain::CodiceFiscale::try_from(s.clone()).is_ok())
        .expect("one check character fits")
}

/// Access-log entries of a record, as the platform reads them.
async fn log_of(app: &TestApp, patient: &str) -> String {
    let platform = token_for(&app.store, &platform_actor()).await;
    app.get_as(&format!("/AuditEvent?patient={patient}&_count=500"), &platform).await.body.to_string()
}

#[tokio::test]
async fn a_clinician_opens_what_the_gate_allows_and_the_citizen_sees_it_in_her_log() {
    let app = portal_app().await;
    let ferrari = browser(&app, &fascicolo_load::demo::cf("FRRPLA70A01F205"), "gp").await;

    // the professional's home is their own area
    let r = no_redirects().get(format!("{}/", app.root)).header("cookie", &ferrari.cookie).send().await.unwrap();
    assert_eq!((r.status().as_u16(), location(&r).as_str()), (303, "/professionista"));
    // the family doctor's list: the people who chose him, by surname; not the pediatrician's
    let (s, list) = ferrari.get("/professionista").await;
    assert_eq!(s, 200, "{list}");
    let rows: Vec<&str> = list.split("href=\"/professionista/assistiti/").skip(1).map(|r| r.split('"').next().unwrap()).collect();
    assert_eq!(rows, ["bianchi-marco", "rossi-giulia", "verdi-anna"], "{list}");
    assert!(list.contains("RSSGLI85D52F205Q") && list.contains("12/04/1985"), "code and birth date as Italians write it");
    assert!(!list.contains("bianchi-luca") && !list.contains("Luca"), "Luca chose the pediatrician");
    // listing reads no record: nothing in anyone's log yet
    let before = log_of(&app, "rossi-giulia").await;
    assert!(!before.contains("ferrari-paolo"), "{before}");

    // Giulia's record: consent and care; what she hid and the art. 6 test are not there
    let (s, first) = ferrari.get("/professionista/assistiti/rossi-giulia").await;
    assert_eq!(s, 200, "{first}");
    // every page of her documents (20 a page, newest first)
    let total: usize = between(&first, "<span class=\"muted\">(", ")").unwrap().parse().unwrap();
    assert!(total > 20 && first.contains("rel=\"next\""), "{total} documents, on pages");
    let mut rec = first.clone();
    for page in 2..=total.div_ceil(20) {
        rec.push_str(&ferrari.get(&format!("/professionista/assistiti/rossi-giulia?pagina={page}")).await.1);
    }
    assert_eq!(rec.matches("href=\"/professionista/documenti/").count(), total, "each document once");
    assert!(
        rec.contains("<h1>Giulia Rossi</h1>") && rec.contains("Referto di laboratorio") && rec.contains("Referto di visita cardiologica")
    );
    for absent in ["Referto di consulenza psicologica", "doc-giulia-psy", "Test HIV", "doc-giulia-hiv", "emergency-open", "record-closed"] {
        assert!(!rec.contains(absent), "{absent} must not be on the page");
    }
    // a document opens with its content; a hidden one does not exist for him
    let by_him = |log: String| {
        let v: serde_json::Value = serde_json::from_str(&log).unwrap();
        v["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["agent"].as_array().unwrap().iter().any(|a| a["who"]["reference"] == "Practitioner/ferrari-paolo"))
            .count()
    };
    let before = by_him(log_of(&app, "rossi-giulia").await);
    let (s, doc) = ferrari.get("/professionista/documenti/doc-giulia-lab").await;
    assert_eq!(s, 200);
    assert_eq!(by_him(log_of(&app, "rossi-giulia").await), before + 1, "one opening of a document, one entry in her log");
    assert!(doc.contains("Referto di laboratorio") && doc.contains("href=\"/professionista/assistiti/rossi-giulia\""));
    assert_eq!(ferrari.get("/professionista/documenti/doc-giulia-psy").await.0, 404);
    assert_eq!(ferrari.get("/professionista/documenti/doc-giulia-hiv").await.0, 404);
    for hidden in ["doc-giulia-psy", "doc-giulia-hiv"] {
        assert_eq!(ferrari.bytes(&format!("/professionista/documenti/{hidden}/file")).await.0, 404, "nor its file");
    }
    // what he opened is in her log, by him
    let log = log_of(&app, "rossi-giulia").await;
    assert!(log.contains("Practitioner/ferrari-paolo") && log.contains("DocumentReference/doc-giulia-lab"), "{log}");
    assert!(!log.contains("DocumentReference/doc-giulia-psy"), "a hidden document is never listed as seen");

    // the record's other pages, as the citizen's, through the same gate. Giulia hid a weight,
    // a vaccination and a prescription from clinicians (P99): she sees them, he sees none of
    // them, in tables, counts, charts or the timeline
    let fhir = FhirService::new(Arc::clone(&app.store));
    let hidden = json!([{"system": fascicolo_domain::privacy::labels::HIDING, "code": "P99"}]);
    for v in [
        json!({"resourceType": "Observation", "id": "obs-giulia-secret", "status": "final", "meta": {"security": hidden},
            "code": {"coding": [{"system": "http://loinc.org", "code": "39156-5", "display": "Indice di massa corporea"}]},
            "subject": {"reference": "Patient/rossi-giulia"}, "effectiveDateTime": "2026-09-09T08:00:00Z",
            "valueQuantity": {"value": 31.5, "unit": "kg/m2"}}),
        json!({"resourceType": "Immunization", "id": "imm-giulia-secret", "status": "completed", "meta": {"security": hidden},
            "vaccineCode": {"text": "Vaccino riservato"}, "patient": {"reference": "Patient/rossi-giulia"},
            "occurrenceDateTime": "2026-09-09"}),
        json!({"resourceType": "MedicationRequest", "id": "med-giulia-secret", "status": "active", "intent": "order", "meta": {"security": hidden},
            "medicationCodeableConcept": {"text": "Farmaco riservato"}, "subject": {"reference": "Patient/rossi-giulia"},
            "authoredOn": "2026-09-09"}),
    ] {
        let (rt, id) = (v["resourceType"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string());
        fhir.update(&fascicolo_app::Actor::system(), &rt, &id, v.to_string().as_bytes(), None).await.unwrap();
    }
    let giulia = browser(&app, GIULIA, "citizen").await;
    let (_, own_results) = giulia.get("/risultati").await;
    assert!(own_results.contains("Indice di massa corporea"), "she sees what she hid");
    let (_, own_timeline) = giulia.get("/cronologia").await;
    assert!(own_timeline.contains("Vaccino riservato") && own_timeline.contains("Farmaco riservato"));
    let exams = |page: &str| -> usize { between(page, "<p class=\"muted\">", " esam").unwrap().trim().parse().unwrap() };
    let (s, results) = ferrari.get("/professionista/assistiti/rossi-giulia/risultati").await;
    // (his count also leaves out her other private or art. 6 values: fewer, never more)
    assert!(exams(&results) < exams(&own_results), "his count leaves her hidden result out");
    assert_eq!(ferrari.get("/professionista/assistiti/rossi-giulia/risultati/39156-5").await.0, 404, "nor its chart");
    for sub in ["risultati", "vaccinazioni", "prescrizioni", "cronologia"] {
        let (_, page) = ferrari.get(&format!("/professionista/assistiti/rossi-giulia/{sub}")).await;
        for secret in ["Indice di massa corporea", "Vaccino riservato", "Farmaco riservato"] {
            assert!(!page.contains(secret), "{secret} must not be on his {sub} page");
        }
    }
    assert_eq!(s, 200, "{results}");
    assert!(results.contains("href=\"/professionista/assistiti/rossi-giulia/risultati/2345-7\">Glucosio</a>"), "{results}");
    assert!(results.contains("aria-current=\"page\">Risultati</a>"), "the tab is marked");
    let (s, chart) = ferrari.get("/professionista/assistiti/rossi-giulia/risultati/2345-7").await;
    assert_eq!(s, 200);
    assert!(
        chart.contains("<svg") && chart.contains("href=\"/professionista/documenti/") && !chart.contains("href=\"/documenti/"),
        "{chart}"
    );
    assert_eq!(ferrari.get("/professionista/assistiti/rossi-giulia/risultati/bad%20code").await.0, 404);
    let (s, vacc) = ferrari.get("/professionista/assistiti/rossi-giulia/vaccinazioni").await;
    assert!(s == 200 && vacc.contains("Somministrata") && vacc.contains("Lotto"), "{vacc}");
    assert!(!vacc.contains("href=\"/vaccinazioni/"), "no link into the citizen's pages");
    let (s, rx) = ferrari.get("/professionista/assistiti/rossi-giulia/prescrizioni").await;
    assert!(s == 200 && rx.contains("NRE") && rx.contains("Code 39") && rx.contains("Paolo Ferrari"), "{rx}");
    assert!(!rx.contains("href=\"/prescrizioni/"));
    let (s, timeline) = ferrari.get("/professionista/assistiti/rossi-giulia/cronologia").await;
    assert!(s == 200 && timeline.contains("href=\"/professionista/documenti/doc-giulia-lab\""), "{timeline}");
    assert!(timeline.contains("action=\"/professionista/assistiti/rossi-giulia/cronologia\""), "the filter stays in his view");
    for absent in ["doc-giulia-psy", "doc-giulia-hiv", "Referto di consulenza psicologica"] {
        assert!(!timeline.contains(absent), "{absent} must not be in the timeline");
    }
    let (_, only) = ferrari.get("/professionista/assistiti/rossi-giulia/cronologia?tipo=vaccinazioni").await;
    assert!(!only.contains("/professionista/documenti/"), "the filter keeps only vaccinations");
    let log = log_of(&app, "rossi-giulia").await;
    for searched in ["Observation", "Immunization", "MedicationRequest"] {
        assert!(log.contains(searched), "his search of {searched} is in her log");
    }

    // by codice fiscale: found, badly written, unknown
    let r = no_redirects()
        .get(format!("{}/professionista?cf=rssgli85d52f205q", app.root))
        .header("cookie", &ferrari.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), location(&r).as_str()), (303, "/professionista/assistiti/rossi-giulia"));
    let (s, bad) = ferrari.get("/professionista?cf=RSSGLI85D52F205X").await;
    assert!(s == 200 && bad.contains("non è valido") && bad.contains("aria-invalid=\"true\""), "{bad}");
    let (s, none) = ferrari.get(&format!("/professionista?cf={}", unknown_cf())).await;
    assert!(s == 200 && none.contains("Nessuna persona con questo codice fiscale"), "{none}");

    // Marco (19) gave no consent: closed, saying why, no name, no document
    // (the platform's reading of a log is itself logged: count only what the doctor did)
    let by_ferrari = |log: &str| log.matches("Practitioner/ferrari-paolo").count();
    assert_eq!(by_ferrari(&log_of(&app, "bianchi-marco").await), 0);
    let (s, closed) = ferrari.get("/professionista/assistiti/bianchi-marco").await;
    assert_eq!(s, 200);
    assert!(closed.contains("record-closed") && closed.contains("non ha dato il consenso"), "{closed}");
    assert!(!closed.contains("Marco Bianchi") && !closed.contains("BNCMRC07A10F205"), "a closed record shows nothing of the person");
    // break-glass from the page: a forged form, a reason too short: refused, nothing opened
    let (s, _, _) = ferrari
        .post("/professionista/assistiti/bianchi-marco/emergenza", &[("csrf", "forged"), ("reason", "paziente incosciente in studio")])
        .await;
    assert_eq!(s, 403);
    let csrf = csrf_of(&closed);
    let (s, loc, _) = ferrari.post("/professionista/assistiti/bianchi-marco/emergenza", &[("csrf", &csrf), ("reason", "urgente")]).await;
    assert_eq!((s, loc.as_str()), (303, "/professionista/assistiti/bianchi-marco?errore=motivo"));
    assert!(ferrari.get(&loc).await.1.contains("da 10 a 2.000 caratteri"));
    let long = "x".repeat(2001);
    let (s, loc, _) = ferrari.post("/professionista/assistiti/bianchi-marco/emergenza", &[("csrf", &csrf), ("reason", &long)]).await;
    assert_eq!((s, loc.as_str()), (303, "/professionista/assistiti/bianchi-marco?errore=motivo"), "too long: refused too");
    assert_eq!(by_ferrari(&log_of(&app, "bianchi-marco").await), 0, "a closed record and a refused opening write nothing");
    // a stated emergency opens it, logged with its reason, and the page says so
    let (s, loc, _) = ferrari
        .post("/professionista/assistiti/bianchi-marco/emergenza", &[("csrf", &csrf), ("reason", "paziente incosciente in studio")])
        .await;
    assert_eq!((s, loc.as_str()), (303, "/professionista/assistiti/bianchi-marco"));
    let (s, open) = ferrari.get(&loc).await;
    assert!(s == 200 && open.contains("emergency-open") && open.contains("<h1>Marco Bianchi</h1>"), "{open}");
    let log = log_of(&app, "bianchi-marco").await;
    assert!(log.contains("break-glass") && log.contains("paziente incosciente in studio") && log.contains("ferrari-paolo"), "{log}");
    // on a record already open, no emergency is declared
    let (s, loc, _) = ferrari
        .post("/professionista/assistiti/rossi-giulia/emergenza", &[("csrf", &csrf), ("reason", "paziente incosciente in studio")])
        .await;
    assert_eq!((s, loc.as_str()), (303, "/professionista/assistiti/rossi-giulia?aperto=1"));
    assert!(!log_of(&app, "rossi-giulia").await.contains("break-glass"));

    // the nurse caring for Anna, not for Giulia: Giulia's record is closed for her (care)
    let galli = browser(&app, &fascicolo_load::demo::cf("GLLSRA90S70F205"), "nurse").await;
    let (s, page) = galli.get("/professionista").await;
    assert!(s == 200 && page.contains("Cerca un assistito") && !page.contains("/professionista/assistiti/"), "no list for a nurse");
    assert!(page.contains("Infermiera") && !page.contains("Infermiere"), "her role in the feminine (her codice fiscale says so)");
    let (_, closed) = galli.get("/professionista/assistiti/rossi-giulia").await;
    assert!(closed.contains("record-closed") && closed.contains("Non risulti tra chi ha in cura"), "{closed}");
    assert!(!closed.contains("Referto di laboratorio"));
    // nor by the document's address, its file or its PDF
    assert_eq!(galli.get("/professionista/documenti/doc-giulia-lab").await.0, 404);
    assert_eq!(galli.bytes("/professionista/documenti/doc-giulia-lab/file").await.0, 404);
    // nor its other pages: each leads back to the record's page, which says why
    for sub in ["risultati", "risultati/2345-7", "vaccinazioni", "prescrizioni", "cronologia"] {
        let r = no_redirects()
            .get(format!("{}/professionista/assistiti/rossi-giulia/{sub}", app.root))
            .header("cookie", &galli.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), location(&r).as_str()), (303, "/professionista/assistiti/rossi-giulia"), "{sub}");
    }
    let (_, anna) = galli.get("/professionista/assistiti/verdi-anna").await;
    assert!(anna.contains("<h1>Anna Verdi</h1>") && anna.contains("Lettera di dimissione ospedaliera"), "{anna}");

    // operators and citizens: no clinical record
    let cup = browser(&app, &fascicolo_load::demo::cf("MRTLGU82C08F205"), "cup-operator").await;
    let (s, page) = cup.get("/professionista").await;
    assert!(s == 200 && page.contains("non consulta i fascicoli clinici") && !page.contains("Giulia"), "{page}");
    assert!(!page.contains("Cerca un assistito") && !page.contains("Apri il fascicolo"), "no clinical search offered to an operator");
    assert!(page.contains("Sportello CUP"), "the booking desk's search instead");
    assert_eq!(cup.get("/professionista/assistiti/rossi-giulia").await.0, 403);
    assert_eq!(cup.get("/professionista/documenti/doc-giulia-lab").await.0, 403);
    assert_eq!(cup.get("/professionista/assistiti/rossi-giulia/risultati").await.0, 403);
    assert_eq!(cup.get("/professionista/assistiti/rossi-giulia/cronologia").await.0, 403);
    let giulia = browser(&app, GIULIA, "citizen").await;
    let (s, page) = giulia.get("/professionista").await;
    assert!(s == 403 && page.contains("Area riservata ai professionisti"), "{page}");
    assert_eq!(giulia.get("/professionista/assistiti/verdi-anna").await.0, 403);
    // Marco finds the emergency opening on his home page, with who and why; Giulia finds none
    let marco = browser(&app, &fascicolo_load::demo::cf("BNCMRC07A10F205"), "citizen").await;
    let (s, home) = marco.get("/").await;
    assert_eq!(s, 200);
    let banner = home.split("id=\"recent-emergency\"").nth(1).expect("the emergency is on his home page").split("</div>").next().unwrap();
    assert!(banner.contains("Paolo Ferrari") && banner.contains("Medico di medicina generale"), "{banner}");
    assert!(banner.contains("«paziente incosciente in studio»") && banner.contains("href=\"/privacy/accessi?emergenza=1\""), "{banner}");
    let (_, own) = giulia.get("/").await;
    assert!(!own.contains("recent-emergency"), "no emergency on Giulia's record");
    let (_, only) = marco.get("/privacy/accessi?emergenza=1").await;
    assert!(only.contains("paziente incosciente in studio"), "the link shows it in the log");
    // and in English
    let (_, en) = ferrari.get("/professionista/assistiti/rossi-giulia?lang=en").await;
    assert!(en.contains("Documents") && en.contains("Date of birth") && !en.contains("Data di nascita"));
}

/// Every document listed opens with its content: a FHIR-only document carrying its PDF is
/// listed and its file opens (for the citizen and for her doctor); one that points elsewhere
/// (nothing can be fetched from here) or carries nothing is not listed.
#[tokio::test]
async fn every_listed_document_opens_with_its_content() {
    let app = portal_app().await;
    let pdf = b"%PDF-1.4\n% a FHIR-only letter\n%%EOF\n".to_vec();
    let doc = |id: &str, title: &str, attachment: Value| {
        serde_json::json!({"resourceType": "DocumentReference", "id": id, "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "34133-9", "display": title}]},
            "subject": {"reference": "Patient/rossi-giulia"}, "date": "2026-11-30T09:00:00Z", "description": title,
            "content": [{"attachment": attachment}]})
    };
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pdf);
    for (id, title, attachment) in [
        ("fhir-pdf", "Lettera del centro diabetologico", serde_json::json!({"contentType": "application/pdf", "data": b64})),
        (
            "fhir-elsewhere",
            "Referto su un altro server",
            serde_json::json!({"contentType": "application/pdf", "url": "https://ospedale.example/doc/1.pdf"}),
        ),
        ("fhir-empty", "Referto senza contenuto", serde_json::json!({"contentType": "application/pdf"})),
    ] {
        let r = app.put(&format!("/DocumentReference/{id}"), doc(id, title, attachment)).await;
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
    }
    let giulia = browser(&app, GIULIA, "citizen").await;
    let mut listed = String::new();
    for page in 1..=5 {
        listed.push_str(&giulia.get(&format!("/documenti?pagina={page}")).await.1);
    }
    assert!(listed.contains("Lettera del centro diabetologico"), "the document with its PDF is listed");
    assert!(
        !listed.contains("Referto su un altro server") && !listed.contains("Referto senza contenuto"),
        "nothing listed that cannot open"
    );
    let (s, page) = giulia.get("/documenti/fhir-pdf").await;
    assert!(s == 200 && page.contains("href=\"/documenti/fhir-pdf/file\""), "{page}");
    assert!(!page.contains("/documents/fhir-pdf/pdf"), "no PDF link to a rendering that does not exist");
    let (s, bytes) = giulia.bytes("/documenti/fhir-pdf/file").await;
    assert_eq!((s, bytes), (200, pdf.clone()));
    // nor in the PDF index, which lists what the portal lists
    let (_, index) = giulia.bytes("/documenti/indice.pdf").await;
    let text = pdf_text(&index);
    assert!(!text.contains("Referto su un altro server") && !text.contains("Referto senza contenuto"));
    // the same for her doctor
    let ferrari = browser(&app, &fascicolo_load::demo::cf("FRRPLA70A01F205"), "gp").await;
    let (_, rec) = ferrari.get("/professionista/assistiti/rossi-giulia").await;
    assert!(
        rec.contains("Lettera del centro diabetologico")
            && !rec.contains("Referto su un altro server")
            && !rec.contains("Referto senza contenuto")
    );
    let (_, page) = ferrari.get("/professionista/documenti/fhir-pdf").await;
    assert!(page.contains("href=\"/professionista/documenti/fhir-pdf/file\""), "{page}");
    assert_eq!(ferrari.bytes("/professionista/documenti/fhir-pdf/file").await, (200, pdf));
}
