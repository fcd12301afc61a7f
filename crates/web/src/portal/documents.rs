//! Documents: the list with filters, a document's page (rendering, metadata, downloads,
//! versions, hiding), Taccuino files and the PDF index of every document.

use super::PageResult;
use super::{ctx, doc_name, form_ctx, layout, optional, query_map, show_date, trusted, Ctx, Relation};
use crate::AppState;
use axum::extract::{Form, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use fascicolo_app::portal::{DocDetail, DocFilter, DocSummary, Portal};
use maud::{html, Markup};
use serde::Deserialize;

pub const PAGE_SIZE: usize = 20;

fn filter_of(q: &std::collections::HashMap<String, String>) -> DocFilter {
    let get = |k: &str| q.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    DocFilter { text: get("q"), type_code: get("tipo"), from: get("dal"), to: get("al"), organization: get("struttura") }
}

fn hiding_label(c: &Ctx, code: &str) -> String {
    match code {
        "P99" => c.t("Oscurato ai medici").into(),
        "P97" => c.t("Oscurato ai genitori").into(),
        "P98" => c.t("Oscurato al cittadino").into(),
        other => other.to_string(),
    }
}

fn doc_item(c: &Ctx, d: &DocSummary, seen: i64) -> Markup {
    let new = d.is_new(seen);
    html! {
        li.hidden[!d.hiding.is_empty()] {
            a.title href={ "/documenti/" (d.id) } { (doc_name(c.lang, &d.title)) }
            @if new { span.badge.new { (c.t("Nuovo")) } }
            @for h in &d.hiding { span.badge.hidden { (hiding_label(c, h)) } }
            @if d.taccuino { span.badge { "Taccuino" } }
            div.muted {
                (show_date(c.lang, &d.date, false))
                @if !d.type_display.is_empty() && d.type_display != d.title { " · " (doc_name(c.lang, &d.type_display)) }
                @if !d.organization.is_empty() { " · " (d.organization) }
                @if !d.author.is_empty() { " · " (d.author) }
            }
        }
    }
}

/// `GET /documenti`
pub async fn list(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/documenti", raw.as_deref()).await?;
    let q = query_map(raw.as_deref());
    let filter = filter_of(&q);
    let portal = Portal::new(state.fhir.clone());
    let seen = portal.last_seen(c.actor()).await.map_err(c.fail())?;
    let docs = portal.documents(c.actor(), &filter).await.map_err(c.fail())?;
    // the marks stay until the person leaves the list: remember this visit for the next one
    if filter.text.is_none() && !q.contains_key("pagina") {
        // at most once a minute: browsing back and forth is one visit, and a write less per page
        if fascicolo_fhir::datetime::now_ms() - seen > 60_000 {
            // the list is shown either way; the next visit marks a little more as new
            if let Err(e) = portal.mark_seen(c.actor()).await {
                tracing::warn!(error = %e, "could not remember the visit to the document list");
            }
        }
    }
    let pages = docs.items.len().div_ceil(PAGE_SIZE).max(1);
    let page: usize = q.get("pagina").and_then(|p| p.parse().ok()).unwrap_or(1).clamp(1, pages);
    let shown = &docs.items[(page - 1) * PAGE_SIZE..(page * PAGE_SIZE).min(docs.items.len())];
    let link = |p: usize| {
        let mut pairs: Vec<(String, String)> =
            q.iter().filter(|(k, _)| *k != "pagina" && *k != "lang").map(|(k, v)| (k.clone(), v.clone())).collect();
        pairs.sort();
        pairs.push(("pagina".into(), p.to_string()));
        format!("/documenti?{}", fascicolo_app::fhir::encode_query(&pairs))
    };
    let v = |k: &str| q.get(k).cloned().unwrap_or_default();
    let filtered = docs.items.len() != docs.all;
    let body = html! {
        h1 { (c.t("I tuoi documenti")) }
        p.lead { (c.t("Referti, lettere di dimissione, verbali di pronto soccorso, prescrizioni, certificati vaccinali e piani di cura, dal più recente.")) }
        form.filters method="get" action="/documenti" role="search" aria-label=(c.t("Cerca tra i documenti")) {
            div { label for="q" { (c.t("Cerca")) } input #q type="search" name="q" value=(v("q")) placeholder=(c.t("es. emocromo, glicemia, Sacco")); }
            // the other filters fold away (open when one is in use): the list stays on the first screen of a phone
            details.more open[["tipo", "struttura", "dal", "al"].iter().any(|k| !v(k).is_empty())] {
                summary { (c.t("Altri filtri: tipo, struttura, periodo")) }
                div.filters {
                    div { label for="tipo" { (c.t("Tipo di documento")) }
                        select #tipo name="tipo" {
                            option value="" { (c.t("Tutti")) }
                            @for (code, display, n) in &docs.types { option value=(code) selected[v("tipo") == *code] { (doc_name(c.lang, display)) " (" (n) ")" } }
                        } }
                    div { label for="struttura" { (c.t("Struttura")) }
                        select #struttura name="struttura" {
                            option value="" { (c.t("Tutte")) }
                            @for o in &docs.organizations { option value=(o) selected[v("struttura") == *o] { (o) } }
                        } }
                    div { label for="dal" { (c.t("Dal")) } input #dal type="date" name="dal" value=(v("dal")); }
                    div { label for="al" { (c.t("Al")) } input #al type="date" name="al" value=(v("al")); }
                }
            }
            div.actions { button type="submit" { (c.t("Filtra")) } @if filtered { a.btn.secondary href="/documenti" { (c.t("Azzera")) } } }
        }
        p role="status" #doc-count {
            @if filtered {
                (docs.items.len()) " " (c.t("documenti trovati su")) " " (docs.all)
            } @else {
                (docs.all) " " (c.t("documenti"))
            }
        }
        @if docs.items.is_empty() {
            div.alert {
                @if docs.all == 0 {
                    p { (c.t("Non ci sono ancora documenti nel fascicolo. Quando un ospedale, un laboratorio o il tuo medico pubblicano un documento, lo trovi qui e ricevi un avviso.")) }
                } @else {
                    p { (c.t("Nessun documento corrisponde ai filtri scelti. Prova con meno parole o un periodo più ampio.")) }
                }
            }
        } @else {
            ul.doclist { @for d in shown { (doc_item(&c, d, seen)) } }
            @if pages > 1 {
                nav.pager aria-label=(c.t("Pagine")) {
                    @if page > 1 { a.btn.secondary href=(link(page - 1)) rel="prev" { "‹ " (c.t("Precedenti")) } }
                    span { (c.t("Pagina")) " " (page) " " (c.t("di")) " " (pages) }
                    @if page < pages { a.btn.secondary href=(link(page + 1)) rel="next" { (c.t("Successivi")) " ›" } }
                }
            }
        }
        p { a.btn.secondary href="/documenti/indice.pdf" download { (c.t("Scarica l'indice di tutti i documenti (PDF)")) } }
    };
    Ok(layout(&c, c.t("Documenti"), body))
}

/// What a document's page shows of its content, read as the viewer: the rendering of a
/// published CDA (Taccuino files and FHIR-only documents have none; one whose original cannot
/// be rendered is shown without it, a fault is an error) and the text of an inline text file (a
/// Taccuino note).
pub(super) async fn content(state: &AppState, detail: &DocDetail) -> Result<(Option<String>, Option<String>), fascicolo_app::AppError> {
    let d = &detail.doc;
    // the page's own read of the document is its one access-log entry: nothing is read again
    let rendering = if d.has_original {
        match state.ingest.rendering_of(detail, 3).await {
            Ok(r) => Some(r),
            Err(e) if e.status >= 500 => return Err(e.into_app_error()),
            Err(_) => None,
        }
    } else {
        None
    };
    let note = if d.has_file {
        optional(Portal::file_of(detail))?.filter(|(ct, _)| ct == "text/plain").map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
    } else {
        None
    };
    Ok((rendering, note))
}

/// The content part of a document's page: the note's text, then the rendering.
pub(super) fn content_markup(lang: crate::html::Lang, note_heading: &str, note: Option<&str>, rendering: Option<String>) -> Markup {
    html! {
        @if let Some(n) = note {
            h2 { (note_heading) }
            div.rendering style="white-space:pre-wrap" { (n) }
        }
        @if let Some(r) = rendering {
            h2 { (lang.t("Contenuto")) }
            div.rendering { (trusted(r)) }
        }
    }
}

/// `GET /documenti/{id}`
pub async fn show(State(state): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let path = format!("/documenti/{id}");
    let c = ctx(&state, &headers, &path, raw.as_deref()).await?;
    let portal = Portal::new(state.fhir.clone());
    let detail = portal.document(c.actor(), &id).await.map_err(c.fail())?;
    let d = &detail.doc;
    let (rendering, note) = content(&state, &detail).await.map_err(c.fail())?;
    let q = query_map(raw.as_deref());
    let hidden_from_clinicians = d.hiding.iter().any(|h| h == "P99");
    let hidden_from_parents = d.hiding.iter().any(|h| h == "P97");
    let related_lab = rendering.is_some() && d.type_code == "11502-2";
    // hiding from parents means something only on a minor's own record
    let holder_is_minor = c.relation == Relation::Own && {
        let patient = optional(portal.patient(c.actor()).await).map_err(c.fail())?;
        patient
            .as_ref()
            .and_then(|p| p["birthDate"].as_str())
            .and_then(fascicolo_domain::rome::date_of)
            .is_some_and(|b| fascicolo_domain::privacy::is_minor(b, fascicolo_domain::rome::today()))
    };
    let body = html! {
        p { a href="/documenti" { "‹ " (c.t("Tutti i documenti")) } }
        h1 { (doc_name(c.lang, &d.title)) }
        @if let Some(m) = q.get("esito") {
            div.alert.ok role="status" { p { @match m.as_str() {
                "P99" => (c.t("Fatto: il documento ora è oscurato ai medici. Lo vedi solo tu.")),
                "P97" => (c.t("Fatto: il documento ora è oscurato ai genitori.")),
                _ => (c.t("Fatto: l'oscuramento è stato tolto. I medici autorizzati possono di nuovo vedere il documento.")),
            } } }
        }
        @for h in &d.hiding { span.badge.hidden { (hiding_label(&c, h)) } }
        dl.meta {
            dt { (c.t("Tipo")) } dd { (doc_name(c.lang, &d.type_display)) @if !d.type_code.is_empty() { span.muted { " (LOINC " (d.type_code) ")" } } }
            dt { (c.t("Data")) } dd { (show_date(c.lang, &d.date, true)) }
            @if !d.organization.is_empty() { dt { (c.t("Struttura")) } dd { (d.organization) } }
            @if !d.author.is_empty() { dt { (c.t("Autore")) } dd { (d.author) } }
            @if let Some(n) = &d.nre { dt { "NRE" } dd { (n) } }
            @if !d.identifier.is_empty() { dt { (c.t("Identificativo")) } dd { code { (d.identifier) } } }
            dt { (c.t("Stato")) } dd { @if detail.status == "current" { (c.t("Versione in vigore")) } @else { (c.t("Sostituito da una versione più recente")) } }
        }
        p {
            @if d.has_original {
                a.btn href={ "/documents/" (d.id) "/pdf" } download { (c.t("Scarica il PDF")) } " "
                a.btn.secondary href={ "/documents/" (d.id) "/original" } download { (c.t("Scarica l'originale")) } " "
            }
            @if d.has_file { a.btn href={ "/documenti/" (d.id) "/file" } { (c.t("Apri il file")) } " " }
            @if related_lab { a.btn.secondary href="/risultati" { (c.t("Vedi i risultati nei grafici")) } }
        }
        (content_markup(c.lang, c.t("Nota"), note.as_deref(), rendering))
        @if !detail.replaced.is_empty() {
            h2 { (c.t("Versioni precedenti")) }
            ul { @for (old, at) in &detail.replaced {
                li { a href={ "/documenti/" (old) } { (c.t("Versione sostituita")) } " — " (c.t("pubblicata il")) " " (show_date(c.lang, &fascicolo_fhir::datetime::format_instant(*at), true)) }
            } }
        }
        @if detail.status == "current" && c.relation != Relation::Delegator {
            h2 #oscuramento { (c.t("Oscuramento")) }
            p { (c.t("Oscurare un documento significa che i medici e gli operatori che ti hanno in cura non lo vedono, nemmeno in emergenza, e non sanno che esiste. Tu continui a vederlo. Puoi togliere l'oscuramento quando vuoi.")) }
            form.inline method="post" action={ "/documenti/" (d.id) "/oscuramento" } {
                input type="hidden" name="csrf" value=(c.csrf());
                @if hidden_from_clinicians {
                    input type="hidden" name="code" value="P00";
                    button type="submit" { (c.t("Togli l'oscuramento")) }
                } @else {
                    input type="hidden" name="code" value="P99";
                    button type="submit" { (c.t("Oscura ai medici")) }
                }
            }
            @if holder_is_minor && !hidden_from_parents && !hidden_from_clinicians {
                " "
                form.inline method="post" action={ "/documenti/" (d.id) "/oscuramento" } {
                    input type="hidden" name="csrf" value=(c.csrf());
                    input type="hidden" name="code" value="P97";
                    button.secondary type="submit" { (c.t("Oscura ai genitori")) }
                }
            }
        }
    };
    Ok(layout(&c, doc_name(c.lang, &d.title), body))
}

#[derive(Debug, Deserialize)]
pub struct HideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    /// Set by the confirmation page: hiding is applied only once the person confirmed it.
    #[serde(default)]
    confirm: String,
}

/// `POST /documenti/{id}/oscuramento`
pub async fn hide(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, Form(f): Form<HideForm>) -> PageResult {
    let path = format!("/documenti/{id}");
    let c = form_ctx(&state, &headers, &path, &f.csrf).await?;
    if !matches!(f.code.as_str(), "P99" | "P97" | "P00") {
        return Err(c.fail()(fascicolo_app::AppError::BadRequest(format!(
            "'{}' is not a hiding choice here: P99 (from clinicians), P97 (from parents) or P00 (lift)",
            f.code
        ))));
    }
    if f.code != "P00" && f.confirm != "1" {
        // hiding changes who can help in an emergency: ask first, say what it means
        let d = Portal::new(state.fhir.clone()).document(c.actor(), &id).await.map_err(c.fail())?.doc;
        let body = html! {
            h1 { (c.t("Vuoi oscurare questo documento?")) }
            p.lead { strong { (doc_name(c.lang, &d.title)) } " — " (show_date(c.lang, &d.date, false)) }
            div.alert.warn role="note" { p { @if f.code == "P97" {
                (c.t("I tuoi genitori non vedranno più il documento né sapranno che esiste. I medici che ti curano continuano a vederlo."))
            } @else {
                (c.t("I medici e gli operatori che ti hanno in cura non vedranno più il documento, nemmeno in un'emergenza, e non sapranno che esiste. Potrebbero non avere un'informazione utile per curarti. Tu continui a vederlo e puoi togliere l'oscuramento quando vuoi."))
            } } }
            form.inline method="post" action={ "/documenti/" (id) "/oscuramento" } {
                input type="hidden" name="csrf" value=(c.csrf());
                input type="hidden" name="code" value=(f.code);
                input type="hidden" name="confirm" value="1";
                button type="submit" { (c.t("Sì, oscura il documento")) }
            }
            " "
            a.btn.secondary href={ "/documenti/" (id) } { (c.t("No, torna al documento")) }
        };
        return Ok(layout(&c, c.t("Conferma l'oscuramento"), body));
    }
    match Portal::new(state.fhir.clone()).hide(c.actor(), &id, &f.code).await {
        Ok(()) => Ok(Redirect::to(&format!("/documenti/{id}?esito={}", f.code)).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// `GET /documenti/{id}/file`: a Taccuino upload.
pub async fn file(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> PageResult {
    let c = match ctx(&state, &headers, &format!("/documenti/{id}/file"), None).await {
        Ok(c) => c,
        Err(r) => return Ok(r),
    };
    match Portal::new(state.fhir.clone()).document_file(c.actor(), &id).await {
        Ok((ct, bytes)) => Ok(file_response(&id, ct, bytes)),
        Err(e) => Err(c.fail()(e)),
    }
}

/// A document's inline file: shown in the browser when it is a PDF or an image, else
/// downloaded; never run (no script, no sniffing).
pub(super) fn file_response(id: &str, ct: String, bytes: Vec<u8>) -> axum::response::Response {
    let inline = matches!(ct.as_str(), "application/pdf" | "image/png" | "image/jpeg");
    let disp = if inline { "inline" } else { "attachment" };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CONTENT_DISPOSITION, format!("{disp}; filename=\"documento-{id}\"")),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'".into()),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /documenti/indice.pdf`: every document of the record the person may see, as a PDF.
pub async fn index_pdf(State(state): State<AppState>, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/documenti/indice.pdf", None).await?;
    let portal = Portal::new(state.fhir.clone());
    let docs = portal.documents(c.actor(), &DocFilter::default()).await.map_err(c.fail())?;
    let patient = optional(portal.patient(c.actor()).await).map_err(c.fail())?;
    let cf = patient.as_ref().and_then(fascicolo_app::auth::cf_of).unwrap_or_default().to_string();
    let now = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
    let rows: Vec<super::pdf::Row> = docs
        .items
        .iter()
        .map(|d| super::pdf::Row {
            date: show_date(c.lang, &d.date, false),
            title: d.title.clone(),
            kind: d.type_display.clone(),
            organization: d.organization.clone(),
            identifier: d
                .nre
                .clone()
                .map(|n| format!("NRE {n}"))
                .unwrap_or_else(|| d.identifier.trim_start_matches("urn:fascicolo:cda:").to_string()),
        })
        .collect();
    let title = c.t("Indice dei documenti del Fascicolo Sanitario Elettronico");
    let subtitle = format!(
        "{} {}{} — {} {} — {} {}",
        c.t("Fascicolo di"),
        c.record_name,
        if cf.is_empty() { String::new() } else { format!(" ({cf})") },
        rows.len(),
        c.t("documenti"),
        c.t("generato il"),
        show_date(c.lang, &now, true)
    );
    let headings = [c.t("Data"), c.t("Documento"), c.t("Struttura"), c.t("Identificativo")];
    match super::pdf::index(title, &subtitle, headings, &rows) {
        Ok(bytes) => Ok((
            [
                (header::CONTENT_TYPE, "application/pdf".to_string()),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"indice-documenti.pdf\"".to_string()),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            bytes,
        )
            .into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "document index PDF failed");
            Ok(super::message(
                &state,
                c.lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                c.t("PDF non disponibile"),
                c.t("Non è stato possibile creare il PDF. Riprova più tardi."),
                None,
            ))
        }
    }
}
