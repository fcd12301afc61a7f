//! The pages every public-administration site links from its footer (Designers Italia):
//! the accessibility statement, help, and legal notes. Open without signing in.

use super::{finish, footer, head, header_bands, lang_of};
use crate::html::Lang;
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{html, Markup, DOCTYPE};

fn page(state: &AppState, lang: Lang, set_lang: Option<Lang>, path: &str, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(lang, title))
            body {
                (header_bands(lang, path, state.auth.demo))
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                    p { a href="/" { (lang.t("Torna alla pagina iniziale", "Back to the home page")) } }
                }
                (footer(lang))
            }
        }
    };
    finish(set_lang, StatusCode::OK, markup)
}

/// `GET /accessibilita`: the accessibility statement.
pub async fn accessibility(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Response {
    let (lang, set) = lang_of(&headers, raw.as_deref());
    let t = |it, en| lang.t(it, en);
    let body = html! {
        p.lead { (t("Il Fascicolo si impegna a rendere il proprio sito accessibile, secondo la legge 4/2004 (legge Stanca) e le linee guida AgID, che rimandano alla norma EN 301 549 e alle WCAG 2.1 livello AA.",
            "Fascicolo is committed to making its site accessible, as Italian law 4/2004 (the Stanca act) and the AgID guidelines require, which refer to EN 301 549 and WCAG 2.1 level AA.")) }
        h2 { (t("Stato di conformità", "Compliance status")) }
        p { (t("Il sito è parzialmente conforme alle WCAG 2.1 livello AA: le parti non ancora conformi sono elencate qui sotto.",
            "The site partially conforms to WCAG 2.1 level AA: the parts that do not conform yet are listed below.")) }
        h2 { (t("Contenuti non accessibili", "Content that is not accessible")) }
        ul {
            li { (t("I documenti clinici in PDF sono prodotti dalle strutture sanitarie: molti non hanno struttura accessibile. Di ogni documento strutturato (CDA2) il Fascicolo mostra anche una versione in HTML.",
                "Clinical documents in PDF are produced by the healthcare providers: many have no accessible structure. For every structured (CDA2) document Fascicolo also shows an HTML version.")) }
            li { (t("I grafici dei risultati sono immagini con una descrizione testuale; gli stessi valori sono sempre anche in una tabella.",
                "Result charts are images with a text description; the same values are always in a table too.")) }
        }
        h2 { (t("Come è stata verificata", "How it was checked")) }
        p { (t("Ogni pagina è controllata a ogni modifica del codice con axe-core in un browser reale, su schermo da computer e da telefono (360 pixel), e percorsa con la sola tastiera.",
            "Every page is checked on every change of the code with axe-core in a real browser, on a desktop screen and on a phone screen (360 pixels), and walked with the keyboard only.")) }
        h2 { (t("Segnala un problema di accessibilità", "Report an accessibility problem")) }
        p { (t("Se trovi un contenuto che non riesci a usare, scrivi all'ente che gestisce il servizio indicando la pagina e il problema: riceverai risposta entro 30 giorni. Se la risposta non arriva o non è soddisfacente puoi rivolgerti al Difensore civico per il digitale presso AgID.",
            "If you find content you cannot use, write to the organisation that runs the service naming the page and the problem: you will get an answer within 30 days. If no answer comes, or it does not satisfy you, you can turn to the Digital Ombudsman at AgID.")) }
    };
    page(&state, lang, set, "/accessibilita", t("Dichiarazione di accessibilità", "Accessibility statement"), body)
}

/// `GET /aiuto`: help, as questions people ask.
pub async fn help(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Response {
    let (lang, set) = lang_of(&headers, raw.as_deref());
    let t = |it, en| lang.t(it, en);
    let qa: [(&str, &str, &str, &str); 6] = [
        ("Che cos'è il Fascicolo Sanitario Elettronico?", "What is the Electronic Health Record?",
         "È l'insieme dei documenti e dei dati sulla tua salute prodotti dal servizio sanitario: referti, lettere di dimissione, vaccinazioni, prescrizioni. Li pubblicano ospedali, laboratori e medici; tu li consulti qui.",
         "It is the set of documents and data about your health produced by the health service: reports, discharge letters, vaccinations, prescriptions. Hospitals, laboratories and doctors publish them; you read them here."),
        ("Come accedo?", "How do I sign in?",
         "Con SPID, CIE o CNS, dal pulsante «Accedi». Non servono altre password.",
         "With SPID, CIE or CNS, from the «Sign in» button. No other password is needed."),
        ("Chi può vedere i miei documenti?", "Who can see my documents?",
         "Tu, e i professionisti che ti curano se hai dato il consenso alla consultazione. Ogni accesso è registrato e lo trovi in «Privacy» → «Chi ha consultato il fascicolo».",
         "You, and the professionals who treat you if you gave consent to consultation. Every access is recorded and you find it under «Privacy» → «Who accessed the record»."),
        ("Posso nascondere un documento?", "Can I hide a document?",
         "Sì: apri il documento, scegli «Oscura ai medici» e conferma. Un documento oscurato non è visibile ai professionisti, nemmeno in emergenza; puoi renderlo di nuovo visibile quando vuoi.",
         "Yes: open the document, choose «Hide from clinicians» and confirm. A hidden document is not visible to professionals, not even in an emergency; you can make it visible again whenever you want."),
        ("Come consulto il fascicolo di mio figlio o di una persona che mi ha delegato?", "How do I see my child's record, or the record of someone who delegated me?",
         "Dalla pagina «Famiglia e deleghe» scegli di chi consultare il fascicolo. I genitori vedono il fascicolo dei figli minorenni; un delegato vede solo ciò che la delega comprende.",
         "From the «Family and delegations» page choose whose record to see. Parents see their minor children's records; a delegate sees only what the delegation covers."),
        ("Un dato è sbagliato o manca un documento: a chi mi rivolgo?", "A value is wrong or a document is missing: whom do I ask?",
         "Alla struttura che ha prodotto il documento (il nome è scritto nel documento), o al tuo medico di famiglia. Il Fascicolo mostra i documenti come le strutture li pubblicano.",
         "The facility that produced the document (its name is written in the document), or your family doctor. Fascicolo shows documents as the facilities publish them."),
    ];
    let body = html! {
        @for (q_it, q_en, a_it, a_en) in qa {
            h2 { (t(q_it, q_en)) }
            p { (t(a_it, a_en)) }
        }
    };
    page(&state, lang, set, "/aiuto", t("Aiuto", "Help"), body)
}

/// `GET /note-legali`: legal notes.
pub async fn legal(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Response {
    let (lang, set) = lang_of(&headers, raw.as_deref());
    let t = |it, en| lang.t(it, en);
    let body = html! {
        h2 { (t("Software", "Software")) }
        p { (t("Fascicolo è software libero, distribuito con licenza GNU Affero General Public License, versione 3 o successiva (AGPL-3.0-or-later). I caratteri Titillium Web sono distribuiti con licenza SIL Open Font License 1.1.",
            "Fascicolo is free software, distributed under the GNU Affero General Public License, version 3 or later (AGPL-3.0-or-later). The Titillium Web typeface is distributed under the SIL Open Font License 1.1.")) }
        h2 { (t("Contenuti", "Content")) }
        p { (t("I documenti clinici sono pubblicati dalle strutture sanitarie che li producono e che ne rispondono. Le informazioni di questo sito non sostituiscono il parere del medico.",
            "Clinical documents are published by the healthcare providers that produce them, which are responsible for them. The information on this site does not replace a doctor's advice.")) }
        @if state.auth.demo {
            h2 { (t("Ambiente dimostrativo", "Demo environment")) }
            p { (t("In questo ambiente tutte le persone e tutti i dati sono sintetici: nessuno corrisponde a una persona reale.",
                "In this environment every person and every value is synthetic: none belongs to a real person.")) }
        }
        h2 { (t("Privacy", "Privacy")) }
        p { a href="/privacy" { (t("Informativa sul trattamento dei dati personali", "Privacy notice")) } }
    };
    page(&state, lang, set, "/note-legali", t("Note legali", "Legal notes"), body)
}
