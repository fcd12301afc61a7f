//! The English catalogue of the pages' texts. Italian is the source language: a page writes its
//! Italian text, `Lang::t` looks its English up here (gettext's way, with the source text as the
//! key). The catalogue is `locales/en.json`, compiled into the binary and read once.

use std::collections::HashMap;
use std::sync::LazyLock;

static EN: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    // a broken catalogue is caught by the tests below; at run time it degrades to Italian
    serde_json::from_str(include_str!("../locales/en.json")).unwrap_or_default()
});

/// Marks a page text kept in a table (a menu, a list of choices) for the catalogue; the page
/// shows it through `Lang::t` (gettext's `N_`).
pub const fn n_(it: &'static str) -> &'static str {
    it
}

/// The English of an Italian page text, or the Italian when the catalogue lacks it.
pub fn english(it: &'static str) -> &'static str {
    EN.get(it).map_or(it, String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Every text literal given to `t` or `n_` in the crate's sources, unescaped as Rust reads it.
    fn texts_in_sources() -> BTreeSet<String> {
        fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).expect("read src").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out)
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p)
                }
            }
        }
        let mut files = Vec::new();
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let mut texts = BTreeSet::new();
        for f in files {
            let src = std::fs::read_to_string(&f).expect("read source");
            let mut rest = src.as_str();
            while let Some(at) = [".t(\"", "n_(\""].iter().filter_map(|m| rest.find(m)).min() {
                let body = &rest[at + 4..];
                let mut text = String::new();
                let mut chars = body.char_indices();
                let mut end = body.len();
                while let Some((i, ch)) = chars.next() {
                    match ch {
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => text.push('\n'),
                            Some('u') => {
                                let hex: String = chars.by_ref().skip(1).map(|(_, c)| c).take_while(|c| *c != '}').collect();
                                text.push(char::from_u32(u32::from_str_radix(&hex, 16).expect("hex")).expect("char"));
                            }
                            Some('\n') => {
                                while chars.clone().next().is_some_and(|(_, c)| c.is_whitespace()) {
                                    chars.next();
                                }
                            }
                            Some(other) => text.push(other),
                            None => break,
                        },
                        other => text.push(other),
                    }
                }
                texts.insert(text);
                rest = &body[end..];
            }
        }
        texts
    }

    #[test]
    fn the_catalogue_parses() {
        let parsed: HashMap<String, String> =
            serde_json::from_str(include_str!("../locales/en.json")).expect("locales/en.json is a JSON object of strings");
        assert!(parsed.len() > 400, "{} texts", parsed.len());
        assert!(parsed.values().all(|v| !v.trim().is_empty()), "an empty translation");
    }

    #[test]
    fn every_text_is_translated_and_every_translation_used() {
        let used = texts_in_sources();
        assert!(used.contains("Documenti") && used.len() > 400, "the scan found {} texts", used.len());
        let missing: Vec<_> = used.iter().filter(|t| !EN.contains_key(*t)).collect();
        assert!(missing.is_empty(), "texts without English in locales/en.json: {missing:#?}");
        let unused: Vec<_> = EN.keys().filter(|k| !used.contains(*k)).collect();
        assert!(unused.is_empty(), "translations no page uses: {unused:#?}");
    }

    #[test]
    fn english_is_looked_up_and_italian_is_the_fallback() {
        assert_eq!(english("Documenti"), "Documents");
        assert_eq!(english("una frase che nessuna pagina scrive"), "una frase che nessuna pagina scrive");
    }
}
