//! Rate limits at the edge: sign-in and token endpoints per client address, tokens issued per
//! API client, and bearer-token guessing (an address that sends too many invalid tokens is
//! refused for a while before its tokens are even looked at). Limits are GCRA buckets
//! (`governor`); an over-limit request gets `429 Too Many Requests` with `Retry-After`.
//!
//! The client address is the connection's peer, unless the peer is a configured proxy: then it
//! is the right-most `X-Forwarded-For` entry that is not a proxy. Without configured proxies the
//! header is ignored (a client could write anything there).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Limits, per minute (a full minute's worth may come as one burst).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ThrottleConfig {
    /// Sign-in starts and returns (`/auth/login`, `/auth/callback`, the demo provider) per address.
    pub sign_in_per_minute: u32,
    /// OAuth requests (`/oauth/token`, authorize, introspect, revoke) per address.
    pub oauth_per_minute: u32,
    /// Access tokens issued to one API client.
    pub tokens_per_client_per_minute: u32,
    /// Invalid bearer tokens an address may send before it is refused for a while.
    pub bad_tokens_per_minute: u32,
    /// Addresses of reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            sign_in_per_minute: 60,
            oauth_per_minute: 300,
            tokens_per_client_per_minute: 600,
            bad_tokens_per_minute: 20,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Which bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    SignIn,
    OAuth,
}

/// How long until a request would be let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, at least one (the `Retry-After` header's unit).
    pub fn secs(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

pub struct Throttle {
    cfg: ThrottleConfig,
    sign_in: DefaultKeyedRateLimiter<IpAddr>,
    oauth: DefaultKeyedRateLimiter<IpAddr>,
    clients: DefaultKeyedRateLimiter<String>,
    bad_tokens: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses refused for guessing, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    checks: AtomicU64,
    clock: DefaultClock,
}

fn quota(per_minute: u32) -> Quota {
    let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(n)
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig) -> Self {
        Self {
            sign_in: DefaultKeyedRateLimiter::keyed(quota(cfg.sign_in_per_minute)),
            oauth: DefaultKeyedRateLimiter::keyed(quota(cfg.oauth_per_minute)),
            clients: DefaultKeyedRateLimiter::keyed(quota(cfg.tokens_per_client_per_minute)),
            bad_tokens: DefaultKeyedRateLimiter::keyed(quota(cfg.bad_tokens_per_minute)),
            blocked: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
            clock: DefaultClock::default(),
            cfg,
        }
    }

    /// The address a request comes from (see the module's note on proxies).
    pub fn client_address(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.cfg.trusted_proxies.contains(&peer) {
            return peer;
        }
        let Some(list) = forwarded_for else { return peer };
        // the right-most hop a trusted proxy did not add is the client; a malformed entry ends
        // the chain (everything left of it is the client's own claim)
        let mut client = peer;
        for hop in list.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.cfg.trusted_proxies.contains(&ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }

    fn tidy(&self) {
        // keyed buckets forget idle keys now and then, so memory follows active addresses only
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.sign_in.retain_recent();
            self.oauth.retain_recent();
            self.clients.retain_recent();
            self.bad_tokens.retain_recent();
            let now = Instant::now();
            self.blocked.lock().retain(|_, until| *until > now);
        }
    }

    fn wait(&self, nu: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> RetryAfter {
        RetryAfter(nu.wait_time_from(self.clock.now()))
    }

    /// One request from `addr` to a limited endpoint.
    pub fn admit(&self, bucket: Bucket, addr: IpAddr) -> Result<(), RetryAfter> {
        self.tidy();
        let limiter = match bucket {
            Bucket::SignIn => &self.sign_in,
            Bucket::OAuth => &self.oauth,
        };
        limiter.check_key(&addr).map_err(|nu| self.wait(&nu))
    }

    /// One access token for an (authenticated) API client.
    pub fn admit_client(&self, client_id: &str) -> Result<(), RetryAfter> {
        self.tidy();
        self.clients.check_key(&client_id.to_string()).map_err(|nu| self.wait(&nu))
    }

    /// Whether `addr` is refused for guessing tokens, and for how long.
    pub fn guessing(&self, addr: IpAddr) -> Option<RetryAfter> {
        let mut blocked = self.blocked.lock();
        let until = *blocked.get(&addr)?;
        let now = Instant::now();
        if until <= now {
            blocked.remove(&addr);
            return None;
        }
        Some(RetryAfter(until - now))
    }

    /// `addr` sent a token that was refused; past the limit it is blocked until its bucket refills.
    pub fn bad_token(&self, addr: IpAddr) {
        self.tidy();
        if let Err(nu) = self.bad_tokens.check_key(&addr) {
            // blocked for as long as a whole burst takes to come back, not just the next cell
            let per_cell = Duration::from_secs(60) / self.cfg.bad_tokens_per_minute.max(1);
            let wait = self.wait(&nu).0.max(per_cell * self.cfg.bad_tokens_per_minute.clamp(1, 60));
            self.blocked.lock().insert(addr, Instant::now() + wait);
            tracing::warn!(wait_s = wait.as_secs(), "an address sent too many invalid access tokens; refused for a while");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn a_burst_then_refusal_with_a_wait() {
        let t = Throttle::new(ThrottleConfig { sign_in_per_minute: 3, ..Default::default() });
        for _ in 0..3 {
            assert!(t.admit(Bucket::SignIn, ip("10.0.0.1")).is_ok());
        }
        let wait = t.admit(Bucket::SignIn, ip("10.0.0.1")).err().map(RetryAfter::secs);
        assert!(matches!(wait, Some(1..=20)), "{wait:?}");
        // another address has its own bucket; another bucket is separate
        assert!(t.admit(Bucket::SignIn, ip("10.0.0.2")).is_ok());
        assert!(t.admit(Bucket::OAuth, ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_configured_proxy() {
        let open = Throttle::new(ThrottleConfig::default());
        assert_eq!(open.client_address(ip("203.0.113.9"), Some("1.2.3.4")), ip("203.0.113.9"));
        let proxied = Throttle::new(ThrottleConfig { trusted_proxies: vec![ip("10.0.0.10"), ip("10.0.0.11")], ..Default::default() });
        // client, then two proxies of ours: the client
        assert_eq!(proxied.client_address(ip("10.0.0.10"), Some("198.51.100.7, 10.0.0.11")), ip("198.51.100.7"));
        // a spoofed left-most entry does not win over the hop our proxy saw
        assert_eq!(proxied.client_address(ip("10.0.0.10"), Some("1.1.1.1, 198.51.100.7")), ip("198.51.100.7"));
        // garbage: the proxy's own address, never the garbage
        assert_eq!(proxied.client_address(ip("10.0.0.10"), Some("javascript:x")), ip("10.0.0.10"));
        assert_eq!(proxied.client_address(ip("10.0.0.10"), None), ip("10.0.0.10"));
    }

    #[test]
    fn guessing_blocks_an_address_and_only_that_one() {
        let t = Throttle::new(ThrottleConfig { bad_tokens_per_minute: 2, ..Default::default() });
        let a = ip("192.0.2.1");
        t.bad_token(a);
        t.bad_token(a);
        assert!(t.guessing(a).is_none(), "within the allowance");
        t.bad_token(a);
        let wait = t.guessing(a).map(RetryAfter::secs);
        assert!(matches!(wait, Some(30..=61)), "{wait:?}");
        assert!(t.guessing(ip("192.0.2.2")).is_none());
    }

    #[test]
    fn clients_have_their_own_allowance() {
        let t = Throttle::new(ThrottleConfig { tokens_per_client_per_minute: 1, ..Default::default() });
        assert!(t.admit_client("a").is_ok());
        assert!(t.admit_client("a").is_err());
        assert!(t.admit_client("b").is_ok());
    }
}
