//! The Taccuino: measurements and own documents the citizen adds, each shared with clinicians
//! or kept private.

use super::PageResult;
use super::{csrf_ok, csrf_refused, ctx, form_ctx, layout, optional, query_map, show_date, Ctx};
use crate::AppState;
use axum::extract::{Form, Multipart, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use fascicolo_app::portal::{DocFilter, FieldError, MeasureKind, Measurement, Portal};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, Deserialize, Default)]
pub struct MeasureForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    value2: String,
    #[serde(default)]
    when: String,
    #[serde(default)]
    note: String,
    share: Option<String>,
}

/// A row of the Taccuino list.
struct Item {
    when: String,
    what: String,
    value: String,
    hidden: bool,
    link: String,
    /// The Observation id of a measurement (documents switch visibility from their own page).
    measurement: Option<String>,
}

fn field_error(c: &Ctx, errors: &[FieldError], field: &str) -> Markup {
    html! { @for (f, it, en) in errors { @if *f == field { p.field-error id={ (field) "-error" } { (c.lang.pick(it, en)) } } } }
}

fn described(errors: &[FieldError], field: &str) -> Option<String> {
    errors.iter().any(|(f, _, _)| *f == field).then(|| format!("{field}-error"))
}

async fn render(
    state: &AppState,
    c: &Ctx,
    form: &MeasureForm,
    errors: &[FieldError],
    doc_errors: &[FieldError],
    done: Option<&str>,
) -> PageResult {
    let portal = Portal::new(state.fhir.clone());
    let series = optional(portal.results(c.actor(), None, false).await).map_err(c.fail())?.unwrap_or_default();
    let mut mine: Vec<Item> = Vec::new();
    for s in &series {
        for p in s.points.iter().filter(|p| p.taccuino) {
            mine.push(Item {
                when: p.when.clone(),
                what: super::records::result_name(c.lang, &s.code, &s.name),
                value: format!("{} {}", super::units::num(c.lang, p.value), super::units::unit(&p.unit)),
                hidden: p.hidden,
                link: format!("/risultati/{}", s.code),
                measurement: Some(p.id.clone()),
            });
        }
    }
    let docs = optional(portal.documents(c.actor(), &DocFilter::default()).await).map_err(c.fail())?.map(|d| d.items).unwrap_or_default();
    for d in docs.iter().filter(|d| d.taccuino) {
        mine.push(Item {
            when: d.date.clone(),
            what: d.title.clone(),
            value: c.t("Documento").to_string(),
            hidden: !d.hiding.is_empty(),
            link: format!("/documenti/{}", d.id),
            measurement: None,
        });
    }
    mine.sort_by(|a, b| b.when.cmp(&a.when).then_with(|| a.measurement.cmp(&b.measurement)));
    // blood pressure is one measurement with two values: one row, one switch
    mine.dedup_by(|a, b| a.measurement.is_some() && a.measurement == b.measurement);
    let now = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
    let when = if form.when.is_empty() { now.get(..10).unwrap_or_default().to_string() } else { form.when.clone() };
    let kind = if form.kind.is_empty() { "weight" } else { form.kind.as_str() };
    let status = if errors.is_empty() && doc_errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let body = html! {
        h1 { (c.t("Taccuino personale")) }
        p.lead { (c.t("Annota le tue misure e carica i tuoi documenti (referti di strutture private, foto di esami). Per ogni elemento decidi tu se i medici che ti curano possono vederlo.")) }
        @if let Some(d) = done { div.alert.ok role="status" { p { (d) } } }
        @if !errors.is_empty() || !doc_errors.is_empty() {
            div.alert.error role="alert" { p { (c.t("Controlla i campi indicati: nulla è stato salvato.")) } }
        }
        section aria-labelledby="add-measure" {
            h2 #add-measure { (c.t("Aggiungi una misura")) }
            form method="post" action="/taccuino" novalidate {
                input type="hidden" name="csrf" value=(c.csrf());
                div.filters {
                    div { label for="kind" { (c.t("Misura")) }
                        select #kind name="kind" { @for k in MeasureKind::ALL { @let (_, it, en, unit) = k.info(); option value=(k.slug()) selected[kind == k.slug()] { (c.lang.pick(it, en)) " (" (super::units::unit(unit)) ")" } } } }
                    div { label for="value" { (c.t("Valore (per la pressione: massima)")) }
                        input #value name="value" inputmode="decimal" value=(form.value) required aria-invalid=[described(errors, "value").map(|_| "true")] aria-describedby=[described(errors, "value")];
                        (field_error(c, errors, "value")) }
                    div { label for="value2" { (c.t("Minima (solo pressione)")) }
                        input #value2 name="value2" inputmode="decimal" value=(form.value2) aria-invalid=[described(errors, "value2").map(|_| "true")] aria-describedby=[described(errors, "value2")];
                        (field_error(c, errors, "value2")) }
                    div { label for="when" { (c.t("Data")) }
                        input #when type="date" name="when" value=(when) max=(now.get(..10).unwrap_or_default()) required aria-invalid=[described(errors, "when").map(|_| "true")] aria-describedby=[described(errors, "when")];
                        (field_error(c, errors, "when")) }
                }
                label for="note" { (c.t("Nota (facoltativa)")) }
                textarea #note name="note" rows="2" maxlength="2000" { (form.note) }
                (field_error(c, errors, "note"))
                label.check { input type="checkbox" name="share" value="1" checked[form.share.is_some() || (errors.is_empty() && form.value.is_empty())]; (c.t("I medici che mi curano possono vedere questa misura")) }
                p { button type="submit" { (c.t("Salva la misura")) } }
            }
        }
        section aria-labelledby="add-note" {
            h2 #add-note { (c.t("Scrivi una nota")) }
            form method="post" action="/taccuino/note" novalidate {
                input type="hidden" name="csrf" value=(c.csrf());
                label for="note-title" { (c.t("Titolo")) }
                input #note-title name="title" maxlength="200" required aria-describedby=[described(doc_errors, "title")];
                label for="note-text" { (c.t("Testo")) }
                textarea #note-text name="text" rows="3" maxlength="20000" required aria-describedby=[described(doc_errors, "file")] {}
                label.check { input type="checkbox" name="share" value="1"; (c.t("I medici che mi curano possono leggere questa nota")) }
                p { button type="submit" { (c.t("Salva la nota")) } }
            }
        }
        section aria-labelledby="add-doc" {
            h2 #add-doc { (c.t("Carica un documento")) }
            form method="post" action="/taccuino/documenti" enctype="multipart/form-data" novalidate {
                input type="hidden" name="csrf" value=(c.csrf());
                label for="title" { (c.t("Titolo")) }
                input #title name="title" maxlength="200" required aria-describedby=[described(doc_errors, "title")];
                (field_error(c, doc_errors, "title"))
                label for="file" { (c.t("File (PDF, PNG, JPEG o testo; al massimo 5 MB)")) }
                input #file type="file" name="file" accept="application/pdf,image/png,image/jpeg,text/plain" required aria-describedby=[described(doc_errors, "file")];
                (field_error(c, doc_errors, "file"))
                label.check { input type="checkbox" name="share" value="1"; (c.t("I medici che mi curano possono vedere questo documento")) }
                p { button type="submit" { (c.t("Carica")) } }
            }
        }
        h2 { (c.t("Nel tuo Taccuino")) }
        @if mine.is_empty() { p.muted { (c.t("Il Taccuino è vuoto.")) } } @else {
            div.scroll { table {
                thead { tr { th scope="col" { (c.t("Data")) } th scope="col" { (c.t("Elemento")) } th scope="col" { (c.t("Valore")) } th scope="col" { (c.t("Chi lo vede")) } } }
                tbody { @for Item { when, what, value, hidden, link, measurement } in mine.iter().take(200) { tr {
                    td { (show_date(c.lang, when, false)) }
                    th scope="row" { a href=(link) { (what) } }
                    td { (value) }
                    td {
                        @if *hidden { span.badge.hidden { (c.t("Solo tu")) } } @else { (c.t("Tu e i medici che ti curano")) }
                        @if let Some(id) = measurement {
                            form.inline method="post" action={ "/taccuino/misure/" (id) "/visibilita" } {
                                input type="hidden" name="csrf" value=(c.csrf());
                                input type="hidden" name="share" value=(if *hidden { "1" } else { "0" });
                                " " button.secondary type="submit" aria-label={ (what) " " (show_date(c.lang, when, false)) ": " (if *hidden { c.t("condividi con i medici") } else { c.t("rendi privata") }) } {
                                    (if *hidden { c.t("Condividi") } else { c.t("Rendi privata") }) }
                            }
                        }
                    }
                } } }
            } }
        }
    };
    let mut r = layout(c, c.t("Taccuino"), body);
    *r.status_mut() = status;
    Ok(r)
}

/// `GET /taccuino`
pub async fn page(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/taccuino", raw.as_deref()).await?;
    let q: HashMap<String, String> = query_map(raw.as_deref());
    let done = match q.get("esito").map(String::as_str) {
        Some("misura") => Some(c.t("Misura salvata. La trovi anche nei grafici dei risultati.")),
        Some("documento") => Some(c.t("Documento caricato. Lo trovi tra i documenti.")),
        _ => None,
    };
    render(&state, &c, &MeasureForm::default(), &[], &[], done).await
}

fn number(s: &str) -> f64 {
    s.trim().replace(',', ".").parse().unwrap_or(f64::NAN)
}

/// `POST /taccuino`: add a measurement; errors next to the fields, nothing stored.
pub async fn add_measurement(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<MeasureForm>) -> PageResult {
    let c = form_ctx(&state, &headers, "/taccuino", &f.csrf).await?;
    let Some(kind) = MeasureKind::parse(&f.kind) else {
        return render(&state, &c, &f, &[("kind", "Scegli una misura dall'elenco.", "Choose a measurement from the list.")], &[], None)
            .await;
    };
    let m = Measurement {
        kind,
        value: number(&f.value),
        value2: (!f.value2.trim().is_empty()).then(|| number(&f.value2)),
        when: f.when.trim().to_string(),
        note: f.note.clone(),
        share: f.share.is_some(),
    };
    match Portal::new(state.fhir.clone()).add_measurement(c.actor(), &m).await {
        Ok(_) => Ok(Redirect::to("/taccuino?esito=misura").into_response()),
        Err(Ok(errors)) => render(&state, &c, &f, &errors, &[], None).await,
        Err(Err(e)) => Err(c.fail()(e)),
    }
}

/// `POST /taccuino/documenti` (multipart): upload an own document.
pub async fn add_document(State(state): State<AppState>, headers: HeaderMap, mut mp: Multipart) -> PageResult {
    let c = ctx(&state, &headers, "/taccuino", None).await?;
    let (mut csrf, mut title, mut share, mut ct, mut bytes) = (String::new(), String::new(), false, String::new(), Vec::new());
    let mut too_big = false;
    loop {
        match mp.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                let field_ct = field.content_type().unwrap_or_default().to_string();
                match field.bytes().await {
                    Ok(b) => match name.as_str() {
                        "csrf" => csrf = String::from_utf8_lossy(&b).into_owned(),
                        "title" => title = String::from_utf8_lossy(&b).into_owned(),
                        "share" => share = true,
                        "file" => {
                            ct = field_ct;
                            bytes = b.to_vec();
                        }
                        _ => {}
                    },
                    Err(_) => {
                        too_big = true;
                        break;
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {
                too_big = true;
                break;
            }
        }
    }
    if too_big {
        let errs =
            [("file", "Il file non è arrivato per intero o supera i 5 MB.", "The file did not arrive whole or is larger than 5 MB.")];
        return render(&state, &c, &MeasureForm::default(), &[], &errs, None).await;
    }
    if !csrf_ok(&c, &csrf) {
        return Ok(csrf_refused(&state, c.lang));
    }
    match Portal::new(state.fhir.clone()).add_taccuino_document(c.actor(), &title, &ct, &bytes, share).await {
        Ok(_) => Ok(Redirect::to("/taccuino?esito=documento").into_response()),
        Err(Ok(errors)) => render(&state, &c, &MeasureForm::default(), &[], &errors, None).await,
        Err(Err(e)) => Err(c.fail()(e)),
    }
}

#[derive(Debug, Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
    share: Option<String>,
}

/// `POST /taccuino/note`: a note, kept as a text document of the Taccuino.
pub async fn add_note(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<NoteForm>) -> PageResult {
    let c = form_ctx(&state, &headers, "/taccuino", &f.csrf).await?;
    if f.text.trim().is_empty() {
        let errs = [("file", "Scrivi il testo della nota.", "Write the text of the note.")];
        return render(&state, &c, &MeasureForm::default(), &[], &errs, None).await;
    }
    match Portal::new(state.fhir.clone())
        .add_taccuino_document(c.actor(), &f.title, "text/plain", f.text.trim().as_bytes(), f.share.is_some())
        .await
    {
        Ok(_) => Ok(Redirect::to("/taccuino?esito=documento").into_response()),
        Err(Ok(errors)) => render(&state, &c, &MeasureForm::default(), &[], &errors, None).await,
        Err(Err(e)) => Err(c.fail()(e)),
    }
}

#[derive(Debug, Deserialize)]
pub struct VisibilityForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    share: String,
}

/// `POST /taccuino/misure/{id}/visibilita`: share a measurement with clinicians, or keep it private.
pub async fn visibility(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    Form(f): Form<VisibilityForm>,
) -> PageResult {
    let c = form_ctx(&state, &headers, "/taccuino", &f.csrf).await?;
    match Portal::new(state.fhir.clone()).measurement_visibility(c.actor(), &id, f.share == "1").await {
        Ok(()) => Ok(Redirect::to("/taccuino?esito=visibilita").into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}
