//! What a request tells us, believing forwarded headers only from trusted proxies.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::Cidr;
use crate::store::SessionKey;

/// Whether `peer` may speak for the client through `X-Forwarded-*` / `X-Original-*`.
pub fn is_trusted(peer: &SocketAddr, trusted: &[Cidr]) -> bool {
    let ip = peer.ip().to_canonical();
    trusted.iter().any(|c| c.contains(&ip))
}

pub fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The client address: walk `X-Forwarded-For` from the right, skipping trusted proxies,
/// when the peer itself is trusted; otherwise the TCP peer.
pub fn client_ip(peer: &SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !is_trusted(peer, trusted) {
        return peer_ip;
    }
    let mut last_trusted = peer_ip;
    // Several headers count as one list, in order; walked from the end without collecting
    // (forward auth calls this on every request).
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','))
        .map(str::trim)
        .filter(|s| !s.is_empty());
    for hop in hops {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            return last_trusted;
        };
        let ip = ip.to_canonical();
        if !trusted.iter().any(|c| c.contains(&ip)) {
            return ip;
        }
        last_trusted = ip;
    }
    last_trusted
}

/// The host the browser used for this request: `X-Forwarded-Host` from a trusted proxy,
/// else `Host`. Lower-case, without port.
pub fn request_host(peer: &SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> Option<String> {
    let raw = if is_trusted(peer, trusted) {
        header(headers, "x-forwarded-host").or_else(|| header(headers, "host"))
    } else {
        header(headers, "host")
    }?;
    let raw = raw.split(',').next()?.trim();
    Some(strip_port(raw).to_ascii_lowercase())
}

/// `https` unless a trusted proxy says otherwise.
pub fn request_scheme(peer: &SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> &'static str {
    if is_trusted(peer, trusted)
        && header(headers, "x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("http"))
    {
        "http"
    } else {
        "https"
    }
}

pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Values of every cookie called `name` (a browser may send several).
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(axum::http::header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(move |v| CookieValues { rest: v, name })
}

/// The values of cookie `name` in one `Cookie` header (`a=1; name=v; b=2`), read with a
/// plain byte scan (forward auth does this on every request).
struct CookieValues<'a> {
    rest: &'a str,
    name: &'a str,
}

impl<'a> Iterator for CookieValues<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        while !self.rest.is_empty() {
            let end = self
                .rest
                .bytes()
                .position(|b| b == b';')
                .unwrap_or(self.rest.len());
            let pair = self.rest[..end].trim();
            self.rest = self.rest.get(end + 1..).unwrap_or("");
            if let Some(value) = pair
                .strip_prefix(self.name)
                .and_then(|r| r.strip_prefix('='))
            {
                return Some(value.trim_matches('"'));
            }
        }
        None
    }
}

/// A session id is 43 base64url characters (256 bits); anything else is ignored.
pub fn session_key(cookie_value: &str) -> Option<SessionKey> {
    is_session_id(cookie_value).then(|| Sha256::digest(cookie_value.as_bytes()).into())
}

fn is_session_id(cookie_value: &str) -> bool {
    cookie_value.len() == SESSION_ID_LEN
        && cookie_value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

const SESSION_ID_LEN: usize = 43;
const MEMO_SLOTS: usize = 1024;

/// [`session_key`] with a memory of recently seen ids, for forward auth.
///
/// The stores know a session only by the SHA-256 of its id, so that their contents (the
/// SQLite file, Redis) do not hand out live sessions. Hashing on every forward-auth check is
/// the largest part of its cost on a Raspberry Pi 4 (no SHA instructions), and a browser
/// sends the same id with every sub-request: this remembers the key of the last valid id
/// seen in each of [`MEMO_SLOTS`] slots and compares the whole id in constant time before
/// using the key. The slot comes from the id's last bytes mixed with a random seed; a
/// client that fills slots on purpose only makes others hash again. The key of an id never
/// changes, so nothing needs invalidating; but an id is kept only while it is in use, like
/// the requests that carry it: [`Self::forget_idle`] wipes the ones unused for
/// [`MEMO_IDLE_SECS`], and a logout wipes its own ([`Self::forget`]).
pub struct SessionKeyMemo {
    seed: u64,
    slots: Box<[std::sync::Mutex<Option<MemoEntry>>]>,
}

/// How long an id unused by forward auth stays in [`SessionKeyMemo`].
pub const MEMO_IDLE_SECS: i64 = 120;

/// A remembered id (padded with zeros to whole words), its key, and when it was last used.
struct MemoEntry {
    id: [u64; 6],
    key: SessionKey,
    used: i64,
}

impl MemoEntry {
    fn wipe(slot: &mut Option<MemoEntry>) {
        use zeroize::Zeroize;
        if let Some(e) = slot.as_mut() {
            e.id.zeroize();
            e.key.zeroize();
        }
        *slot = None;
    }
}

fn id_words(id: &[u8; SESSION_ID_LEN]) -> [u64; 6] {
    let mut padded = [0u8; 48];
    padded[..SESSION_ID_LEN].copy_from_slice(id);
    std::array::from_fn(|i| {
        u64::from_le_bytes(padded[i * 8..i * 8 + 8].try_into().unwrap_or_default())
    })
}

impl Default for SessionKeyMemo {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        crate::users::hash::random_bytes(&mut seed);
        SessionKeyMemo {
            seed: u64::from_le_bytes(seed),
            slots: (0..MEMO_SLOTS)
                .map(|_| std::sync::Mutex::new(None))
                .collect(),
        }
    }
}

impl SessionKeyMemo {
    fn slot(&self, words: &[u64; 6]) -> &std::sync::Mutex<Option<MemoEntry>> {
        let mixed = (words[4] ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        &self.slots[(mixed >> 32) as usize % MEMO_SLOTS]
    }

    /// Whether `entry` holds exactly `words`: branch-free over all six words, only the final
    /// answer is compared.
    fn holds(entry: &MemoEntry, words: &[u64; 6]) -> bool {
        use subtle::ConstantTimeEq;
        let diff = entry
            .id
            .iter()
            .zip(words)
            .fold(0u64, |d, (a, b)| d | (a ^ b));
        bool::from(diff.ct_eq(&0))
    }

    /// The store key of session id `cookie_value`, as [`session_key`] gives it; `now` in
    /// seconds (the clock's).
    pub fn key(&self, cookie_value: &str, now: i64) -> Option<SessionKey> {
        let id: &[u8; SESSION_ID_LEN] = cookie_value.as_bytes().try_into().ok()?;
        let words = id_words(id);
        let slot = self.slot(&words);
        if let Ok(mut entry) = slot.lock()
            && let Some(e) = entry.as_mut()
            && Self::holds(e, &words)
        {
            e.used = now;
            return Some(e.key);
        }
        // Only valid ids are remembered, so a remembered one needs no second check.
        let key = session_key(cookie_value)?;
        if let Ok(mut entry) = slot.lock() {
            MemoEntry::wipe(&mut entry);
            *entry = Some(MemoEntry {
                id: words,
                key,
                used: now,
            });
        }
        Some(key)
    }

    /// Wipes session id `cookie_value` if it is remembered (at logout).
    pub fn forget(&self, cookie_value: &str) {
        let Ok(id) = <&[u8; SESSION_ID_LEN]>::try_from(cookie_value.as_bytes()) else {
            return;
        };
        let words = id_words(id);
        if let Ok(mut entry) = self.slot(&words).lock()
            && entry.as_ref().is_some_and(|e| Self::holds(e, &words))
        {
            MemoEntry::wipe(&mut entry);
        }
    }

    /// Wipes every id not used since `now - MEMO_IDLE_SECS`; returns how many were left.
    pub fn forget_idle(&self, now: i64) -> usize {
        let mut left = 0;
        for slot in &self.slots {
            if let Ok(mut entry) = slot.lock() {
                match entry.as_ref() {
                    Some(e) if now - e.used > MEMO_IDLE_SECS => MemoEntry::wipe(&mut entry),
                    Some(_) => left += 1,
                    None => {}
                }
            }
        }
        left
    }
}

/// A new 256-bit session id, base64url.
pub fn new_session_id() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    crate::users::hash::random_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Browsers get redirects; scripts and API clients get 401.
pub fn is_browser(headers: &HeaderMap) -> bool {
    is_browser_request(
        header(headers, "accept"),
        header(headers, "x-requested-with"),
    )
}

/// [`is_browser`] from the two header values it reads.
pub fn is_browser_request(accept: Option<&str>, requested_with: Option<&str>) -> bool {
    if requested_with.is_some_and(|v| v.eq_ignore_ascii_case("XMLHttpRequest")) {
        return false;
    }
    match accept {
        Some(a) => {
            a.contains("text/html")
                || a.split(',')
                    .next()
                    .is_some_and(|f| f.trim().starts_with("*/*"))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trusted() -> Vec<Cidr> {
        vec![
            Cidr::parse("127.0.0.0/8").unwrap(),
            Cidr::parse("172.18.0.0/16").unwrap(),
        ]
    }

    #[test]
    fn client_ip_believes_only_trusted_hops() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.1.1.1, 172.18.0.5"),
        );
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            client_ip(&proxy, &h, &trusted()),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        let stranger: SocketAddr = "192.168.1.50:5000".parse().unwrap();
        assert_eq!(
            client_ip(&stranger, &h, &trusted()),
            "192.168.1.50".parse::<IpAddr>().unwrap()
        );
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert!(is_trusted(&mapped, &trusted()));
    }

    #[test]
    fn cookie_and_session_key_parsing() {
        let mut h = HeaderMap::new();
        let id = new_session_id();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("a=1; halos_session={id}; b=2")).unwrap(),
        );
        let got: Vec<_> = cookies(&h, "halos_session").collect();
        assert_eq!(got, vec![id.as_str()]);
        assert!(session_key(&id).is_some());
        assert!(session_key("short").is_none());
        assert!(session_key(&"a".repeat(42).add_char('!')).is_none());
        // Quoted values, spaces around pairs, a cookie whose name only starts with ours.
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!(
                "halos_session_x=1;halos_session=\"{id}\" ;halos_session =2"
            ))
            .unwrap(),
        );
        h.append(
            "cookie",
            HeaderValue::from_static("x=1; halos_session=second"),
        );
        let got: Vec<_> = cookies(&h, "halos_session").collect();
        assert_eq!(got, vec![id.as_str(), "second"]);
    }

    #[test]
    fn the_memo_gives_the_keys_session_key_gives() {
        let memo = SessionKeyMemo::default();
        let ids: Vec<String> = (0..3 * MEMO_SLOTS).map(|_| new_session_id()).collect();
        for _ in 0..2 {
            for id in &ids {
                assert_eq!(memo.key(id, 0), session_key(id));
            }
        }
        assert_eq!(memo.key("short", 0), None);
        assert_eq!(memo.key(&"a".repeat(42).add_char('!'), 0), None);
        // An id that differs from a remembered one in one character gets its own key.
        let id = &ids[0];
        let mut other = id.clone();
        other.replace_range(42.., if id.ends_with('A') { "B" } else { "A" });
        assert_eq!(memo.key(id, 0), session_key(id));
        assert_eq!(memo.key(&other, 0), session_key(&other));
        assert_ne!(memo.key(id, 0), memo.key(&other, 0));
    }

    #[test]
    fn the_memo_keeps_ids_only_while_they_are_used() {
        let memo = SessionKeyMemo::default();
        let (a, b) = (new_session_id(), new_session_id());
        memo.key(&a, 100);
        memo.key(&b, 100);
        assert_eq!(memo.forget_idle(100 + MEMO_IDLE_SECS), 2);
        memo.key(&a, 150);
        assert_eq!(
            memo.forget_idle(101 + MEMO_IDLE_SECS),
            1,
            "b was idle, a used at 150"
        );
        memo.forget(&a);
        assert_eq!(memo.forget_idle(0), 0, "a logged out");
        assert_eq!(memo.key(&a, 200), session_key(&a));
    }

    trait AddChar {
        fn add_char(self, c: char) -> String;
    }
    impl AddChar for String {
        fn add_char(mut self, c: char) -> String {
            self.push(c);
            self
        }
    }

    #[test]
    fn browser_detection_follows_authelia() {
        let mut h = HeaderMap::new();
        h.insert(
            "accept",
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert!(is_browser(&h));
        h.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert!(!is_browser(&h));
        let mut h = HeaderMap::new();
        h.insert("accept", HeaderValue::from_static("application/json"));
        assert!(!is_browser(&h));
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert!(is_browser(&h));
        assert!(!is_browser(&HeaderMap::new()));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("halos.local:443"), "halos.local");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("halos.local"), "halos.local");
    }
}
