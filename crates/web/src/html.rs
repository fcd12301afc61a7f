//! Small server-rendered pages of the sign-in flow (the portal proper comes with its own
//! templates). Italian by default, English with `?lang=en`; accessible structure: language,
//! landmarks, labels, visible focus, strong contrast.

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

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
    /// Pick the Italian or the English text.
    pub fn t<'a>(self, it: &'a str, en: &'a str) -> &'a str {
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
footer{border-top:1px solid #ccc;margin-top:2rem;padding:1rem;font-size:.9rem}";

/// A whole page.
pub fn page(lang: Lang, title: &str, demo_banner: Option<&str>, body: &str) -> String {
    let banner = demo_banner.map(|b| format!("<div class=\"demo\" role=\"note\">{}</div>", esc(b))).unwrap_or_default();
    let other = match lang {
        Lang::It => "<a href=\"?lang=en\" lang=\"en\">English</a>",
        Lang::En => "<a href=\"?lang=it\" lang=\"it\">Italiano</a>",
    };
    format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} — Fascicolo</title><style>{STYLE}</style></head><body>\
         <a href=\"#main\" class=\"btn\" style=\"position:absolute;left:-999px\">{}</a>{banner}\
         <header role=\"banner\"><strong>Fascicolo Sanitario Elettronico</strong> · {other}</header>\
         <main id=\"main\" role=\"main\">{body}</main>\
         <footer role=\"contentinfo\" class=\"muted\">{}</footer></body></html>",
        lang.code(),
        esc(title),
        lang.t("Vai al contenuto", "Skip to content"),
        lang.t("Fascicolo — piattaforma regionale open source", "Fascicolo — open-source regional platform"),
    )
}

/// A page that explains an error to a person (never a stack trace).
pub fn error_page(lang: Lang, title: &str, message: &str) -> String {
    page(
        lang,
        title,
        None,
        &format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">{}</a></p>",
            esc(title),
            esc(message),
            lang.t("Torna alla pagina iniziale", "Back to the home page")
        ),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(super::esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
