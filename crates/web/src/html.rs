//! Small server-rendered pages of the sign-in flow (the portal proper comes with its own
//! templates). Italian by default, English with `?lang=en`; accessible structure: language,
//! landmarks, labels, visible focus, strong contrast.

use maud::{html, Markup, PreEscaped, DOCTYPE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    It,
    En,
}

impl Lang {
    pub fn from_query(q: Option<&str>) -> Lang {
        match q.map(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "lang" && v == "en")) {
            Some(true) => Lang::En,
            _ => Lang::It,
        }
    }
    pub fn code(self) -> &'static str {
        match self {
            Lang::It => "it",
            Lang::En => "en",
        }
    }
    /// A page text in this language: the Italian source text, or its English translation from
    /// `locales/en.json` (gettext's way: the source text is the key). A text missing from the
    /// catalogue shows in Italian; the test `every_text_is_translated` keeps that from happening.
    pub fn t(self, it: &'static str) -> &'static str {
        match self {
            Lang::It => it,
            Lang::En => crate::i18n::english(it),
        }
    }
    /// Pick between two names a code list carries as data (a domain label, a unit's long name),
    /// not for page text, which is in the catalogue.
    pub fn pick<'a>(self, it: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::It => it,
            Lang::En => en,
        }
    }
}

const STYLE: &str = "body{margin:0;font-family:'Titillium Web',system-ui,sans-serif;color:#1a1a1a;background:#fff;line-height:1.5}\
header{background:#0066cc;color:#fff;padding:.75rem 1rem}header a{color:#fff}\
.demo{background:#ffe08a;color:#1a1a1a;padding:.5rem 1rem;font-weight:700;border-bottom:2px solid #8a6d00}\
main{max-width:56rem;margin:0 auto;padding:1rem}h1{font-size:1.6rem;margin:.5rem 0 1rem}\
button,.btn{font:inherit;background:#0066cc;color:#fff;border:0;border-radius:4px;padding:.5rem 1rem;cursor:pointer;text-decoration:none;display:inline-block}\
button.secondary{background:#fff;color:#0066cc;border:2px solid #0066cc}\
:focus-visible{outline:3px solid #ff9900;outline-offset:2px}\
ul.cards{list-style:none;padding:0;display:grid;gap:.75rem;grid-template-columns:repeat(auto-fill,minmax(16rem,1fr))}\
ul.cards li{border:1px solid #5c6f82;border-radius:6px;padding:.75rem}\
.muted{color:#5c6f82}.error{border-left:4px solid #d9364f;padding:.5rem 1rem;background:#fbe9ec}\
label{display:block;font-weight:600;margin:.5rem 0 .25rem}select,input{font:inherit;padding:.4rem;max-width:100%}\
footer{border-top:1px solid #ccc;margin-top:2rem;padding:1rem;font-size:.9rem}\
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:.5rem;z-index:10}";

/// Text escaped for HTML or SVG content and double-quoted attributes, by maud's escaper (for the
/// few SVG fragments written as strings: charts and barcodes).
pub fn esc(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    // writing into a String cannot fail
    let _ = maud::Escaper::new(&mut out).write_str(s);
    out
}

/// A whole page (maud escapes every value put in it).
pub fn page(lang: Lang, title: &str, demo_banner: Option<&str>, body: Markup) -> String {
    page_with_head(lang, title, demo_banner, html! {}, body)
}

/// A whole page with more in its `head` (a style sheet, a script of our own).
pub fn page_with_head(lang: Lang, title: &str, demo_banner: Option<&str>, head: Markup, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Fascicolo" }
                style { (PreEscaped(STYLE)) }
                (head)
            }
            body {
                a href="#main" class="btn skip" { (lang.t("Vai al contenuto")) }
                @if let Some(b) = demo_banner { div.demo role="note" { (b) } }
                header role="banner" {
                    strong { "Fascicolo Sanitario Elettronico" } " · "
                    @match lang {
                        Lang::It => a href="?lang=en" lang="en" { "English" },
                        Lang::En => a href="?lang=it" lang="it" { "Italiano" },
                    }
                }
                main #main role="main" { (body) }
                footer role="contentinfo" .muted { (lang.t("Fascicolo — piattaforma regionale open source")) }
            }
        }
    }
    .into_string()
}

/// A page that explains an error to a person (never a stack trace).
pub fn error_page(lang: Lang, title: &str, message: &str) -> String {
    let body = html! {
        h1 { (title) }
        p.error role="alert" { (message) }
        p { a href="/" { (lang.t("Torna alla pagina iniziale")) } }
    };
    page(lang, title, None, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let p = error_page(Lang::It, "<script>x</script>", "a \"quoted\" & <b>bold</b>");
        assert!(p.contains("&lt;script&gt;x&lt;/script&gt;") && !p.contains("<script>"), "{p}");
        assert!(p.contains("&quot;quoted&quot; &amp; &lt;b&gt;"), "{p}");
        assert!(p.starts_with("<!DOCTYPE html><html lang=\"it\">"), "{p}");
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
