//! RFC 7231 HTTP dates for `Last-Modified`.

/// An instant (milliseconds since the epoch; earlier ones are shown as the epoch) as an HTTP date.
pub fn http_date(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    httpdate::fmt_http_date(at)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::http_date(784_887_151_000), "Tue, 15 Nov 1994 08:12:31 GMT");
    }
}
