//! The pages every public-administration site links from its footer (Designers Italia):
//! the accessibility statement, help, and legal notes. Open without signing in.

use super::{finish, footer, head, header_bands, lang_of};
use crate::html::Lang;
use crate::i18n::n_;
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
                    p { a href="/" { (lang.t("Torna alla pagina iniziale")) } }
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
    let body = html! {
        p.lead { (lang.t("Il Fascicolo si impegna a rendere il proprio sito accessibile, secondo la legge 4/2004 (legge Stanca) e le linee guida AgID, che rimandano alla norma EN 301 549 e alle WCAG 2.1 livello AA.")) }
        h2 { (lang.t("Stato di conformità")) }
        p { (lang.t("Il sito è parzialmente conforme alle WCAG 2.1 livello AA: le parti non ancora conformi sono elencate qui sotto.")) }
        h2 { (lang.t("Contenuti non accessibili")) }
        ul {
            li { (lang.t("I documenti clinici in PDF sono prodotti dalle strutture sanitarie: molti non hanno struttura accessibile. Di ogni documento strutturato (CDA2) il Fascicolo mostra anche una versione in HTML.")) }
            li { (lang.t("I grafici dei risultati sono immagini con una descrizione testuale; gli stessi valori sono sempre anche in una tabella.")) }
        }
        h2 { (lang.t("Come è stata verificata")) }
        p { (lang.t("Ogni pagina è controllata a ogni modifica del codice con axe-core in un browser reale, su schermo da computer e da telefono (360 pixel), e percorsa con la sola tastiera.")) }
        h2 { (lang.t("Segnala un problema di accessibilità")) }
        p { (lang.t("Se trovi un contenuto che non riesci a usare, scrivi all'ente che gestisce il servizio indicando la pagina e il problema: riceverai risposta entro 30 giorni. Se la risposta non arriva o non è soddisfacente puoi rivolgerti al Difensore civico per il digitale presso AgID.")) }
    };
    page(&state, lang, set, "/accessibilita", lang.t("Dichiarazione di accessibilità"), body)
}

/// `GET /aiuto`: help, as questions people ask.
pub async fn help(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Response {
    let (lang, set) = lang_of(&headers, raw.as_deref());
    let qa: [(&str, &str); 6] = [
        (n_("Che cos'è il Fascicolo Sanitario Elettronico?"), n_("È l'insieme dei documenti e dei dati sulla tua salute prodotti dal servizio sanitario: referti, lettere di dimissione, vaccinazioni, prescrizioni. Li pubblicano ospedali, laboratori e medici; tu li consulti qui.")),
        (n_("Come accedo?"), n_("Con SPID, CIE o CNS, dal pulsante «Accedi». Non servono altre password.")),
        (n_("Chi può vedere i miei documenti?"), n_("Tu, e i professionisti che ti curano se hai dato il consenso alla consultazione. Ogni accesso è registrato e lo trovi in «Privacy» → «Chi ha consultato il fascicolo».")),
        (n_("Posso nascondere un documento?"), n_("Sì: apri il documento, scegli «Oscura ai medici» e conferma. Un documento oscurato non è visibile ai professionisti, nemmeno in emergenza; puoi renderlo di nuovo visibile quando vuoi.")),
        (n_("Come consulto il fascicolo di mio figlio o di una persona che mi ha delegato?"), n_("Dalla pagina «Famiglia e deleghe» scegli di chi consultare il fascicolo. I genitori vedono il fascicolo dei figli minorenni; un delegato vede solo ciò che la delega comprende.")),
        (n_("Un dato è sbagliato o manca un documento: a chi mi rivolgo?"), n_("Alla struttura che ha prodotto il documento (il nome è scritto nel documento), o al tuo medico di famiglia. Il Fascicolo mostra i documenti come le strutture li pubblicano.")),
    ];
    let body = html! {
        @for (q, a) in qa {
            h2 { (lang.t(q)) }
            p { (lang.t(a)) }
        }
    };
    page(&state, lang, set, "/aiuto", lang.t("Aiuto"), body)
}

/// `GET /note-legali`: legal notes.
pub async fn legal(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Response {
    let (lang, set) = lang_of(&headers, raw.as_deref());
    let body = html! {
        h2 { (lang.t("Software")) }
        p { (lang.t("Fascicolo è software libero, distribuito con licenza GNU Affero General Public License, versione 3 o successiva (AGPL-3.0-or-later). I caratteri Titillium Web sono distribuiti con licenza SIL Open Font License 1.1.")) }
        h2 { (lang.t("Contenuti")) }
        p { (lang.t("I documenti clinici sono pubblicati dalle strutture sanitarie che li producono e che ne rispondono. Le informazioni di questo sito non sostituiscono il parere del medico.")) }
        @if state.auth.demo {
            h2 { (lang.t("Ambiente dimostrativo")) }
            p { (lang.t("In questo ambiente tutte le persone e tutti i dati sono sintetici: nessuno corrisponde a una persona reale.")) }
        }
        h2 { (lang.t("Privacy")) }
        p { a href="/privacy" { (lang.t("Informativa sul trattamento dei dati personali")) } }
    };
    page(&state, lang, set, "/note-legali", lang.t("Note legali"), body)
}
