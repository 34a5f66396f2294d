//! Who may talk to a udplab endpoint, checked by the driver before the session sees a byte: an
//! optional shared key (`--key`: a 16-byte HMAC-SHA256 tag on every datagram) and the
//! receiver's `--allow` list of address prefixes.
//!
//! # The tag
//!
//! With a key, every datagram udplab sends ends with a 16-byte tag: HMAC-SHA256 (RFC 2104) of
//! all the bytes before it, keyed with the key as given, truncated to its first 16 bytes
//! (RFC 4231 §4.1's 128-bit truncation, as in RFC 4868). The tag is a layer of the driver, not
//! of the wire format: the session and the parser never see it.
//!
//! - **Data** datagrams keep their size: the tag takes the last 16 bytes of the padding
//!   ([`Key::sign`]), so `--size` must leave room for it (≥ 24 + 16). A receiver hands a Data
//!   datagram to the session whole (the tag is padding to the parser), so sizes, byte counts
//!   and rates are the same with and without a key ([`Key::open`]).
//! - **Every other message** (control, echoes) gets the tag appended ([`Key::append_tag`]) and
//!   is 16 bytes longer; the receiver strips it. An Echo (24 + 16 bytes) is still no larger than
//!   the smallest keyed Data datagram (40 bytes) it answers.
//!
//! A datagram whose tag does not verify (no key, another key, altered, cut short) is counted
//! as `unauthenticated` and dropped; a receiver never answers it. The tag authenticates; it
//! does not stop replay: a copy of a genuine Data datagram counts as a duplicate, as any
//! duplicate the network makes does.
//!
//! # The key
//!
//! `--key FILE` reads the key from FILE (`-`: standard input); without `--key`, the
//! environment variable `UDPLAB_KEY` holds it; `--key` wins when both are given. Trailing line
//! ends (`\n`, `\r\n`) are not part of the key, so `echo SECRET > FILE` and
//! `UDPLAB_KEY=SECRET` give the same key. A key shorter than 16 bytes is refused.
//!
//! # The allow list
//!
//! `recv --allow CIDR` (repeatable) admits only datagrams from those prefixes; an IPv4 peer of
//! a dual-stack socket (`::ffff:a.b.c.d`) is matched as IPv4. Everything else is counted as
//! `refused_by_allow` and dropped without an answer (never amplify, never confirm).

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::wire::{self, DataHeader};

/// Bytes of the tag at the end of every datagram when a key is set.
pub const TAG_LEN: usize = 16;
/// Shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;
/// The environment variable that holds the key when `--key` is not given.
pub const KEY_ENV: &str = "UDPLAB_KEY";
/// Smallest `--size` with a key: udplab's Data header and the tag.
pub const MIN_KEYED_PAYLOAD: usize = wire::DATA_HEADER_LEN + TAG_LEN;

/// A key could not be used: where it came from, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// A shared key, ready to tag and check datagrams. Cheap to clone (one HMAC state); its
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct Key {
    /// HMAC-SHA256 with the key already absorbed: each message clones it, so the key's two
    /// padded blocks are hashed once per run, not once per datagram.
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from its bytes as read from `origin` (named in errors): trailing line ends
    /// removed, then at least [`MIN_KEY_LEN`] bytes.
    pub fn from_secret(secret: &[u8], origin: &str) -> Result<Key, KeyError> {
        let mut end = secret.len();
        while end > 0 && matches!(secret[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let secret = &secret[..end];
        if secret.is_empty() {
            return Err(KeyError(format!("{origin}: the key is empty")));
        }
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError(format!(
                "{origin}: the key has {} bytes; use at least {MIN_KEY_LEN} (e.g. `head -c 32 \
                 /dev/urandom | base64 > udplab.key`)",
                secret.len()
            )));
        }
        Ok(Key::from_hmac_key(secret))
    }

    /// The key in `path`, or on standard input when `path` is `-`.
    pub fn from_file(path: &Path) -> Result<Key, KeyError> {
        let mut secret = Vec::new();
        if path.as_os_str() == "-" {
            std::io::stdin()
                .read_to_end(&mut secret)
                .map_err(|e| KeyError(format!("--key -: reading standard input: {e}")))?;
            return Key::from_secret(&secret, "--key - (standard input)");
        }
        let origin = format!("--key {}", path.display());
        secret = std::fs::read(path).map_err(|e| KeyError(format!("{origin}: {e}")))?;
        Key::from_secret(&secret, &origin)
    }

    /// The key in [`KEY_ENV`], `None` when the variable is not set. Set but empty is an error:
    /// unset it to run without a key.
    pub fn from_env() -> Result<Option<Key>, KeyError> {
        Key::from_env_value(std::env::var_os(KEY_ENV))
    }

    fn from_env_value(value: Option<OsString>) -> Result<Option<Key>, KeyError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let origin = format!("environment variable {KEY_ENV}");
        if value.is_empty() {
            return Err(KeyError(format!(
                "{origin}: the key is empty (unset {KEY_ENV} to run without a key)"
            )));
        }
        Key::from_secret(&os_bytes(value), &origin).map(Some)
    }

    /// The key a command runs with: `--key` (`option`) when given, else [`KEY_ENV`], else none.
    /// Every role (send, recv, loopback, proxy) resolves its key this way.
    pub fn resolve(option: Option<&Path>) -> Result<Option<Key>, KeyError> {
        match option {
            Some(path) => Key::from_file(path).map(Some),
            None => Key::from_env(),
        }
    }

    fn from_hmac_key(key: &[u8]) -> Key {
        Key {
            // HMAC takes keys of any length (longer than a block: hashed first).
            keyed: Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length"),
        }
    }

    /// The tag of `bytes`: HMAC-SHA256 truncated to [`TAG_LEN`].
    pub fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.keyed.clone();
        mac.update(bytes);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Writes the tag of everything before the last [`TAG_LEN`] bytes of `datagram` into those
    /// bytes (a Data datagram keeps its size). Panics when `datagram` is shorter than the tag:
    /// the caller sized it (config refuses a `--size` below [`MIN_KEYED_PAYLOAD`]).
    #[inline]
    pub fn sign(&self, datagram: &mut [u8]) {
        let body_len = datagram
            .len()
            .checked_sub(TAG_LEN)
            .expect("a signed datagram has room for its tag");
        let (body, tag) = datagram.split_at_mut(body_len);
        tag.copy_from_slice(&self.tag(body));
    }

    /// Appends the tag of `msg` to it (control messages and echoes grow by [`TAG_LEN`]).
    pub fn append_tag(&self, msg: &mut Vec<u8>) {
        let tag = self.tag(msg);
        msg.extend_from_slice(&tag);
    }

    /// The bytes before the tag when `datagram` ends with their valid tag (compared in
    /// constant time), else `None`. Never panics, whatever the input.
    #[inline]
    pub fn verify<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let body_len = datagram.len().checked_sub(TAG_LEN)?;
        let (body, tag) = datagram.split_at(body_len);
        let mut mac = self.keyed.clone();
        mac.update(body);
        mac.verify_truncated_left(tag).ok()?;
        Some(body)
    }

    /// What the parser should see of a received datagram, `None` when it is not authentic: a
    /// Data datagram whole (its tag sits in its padding, so the receiver counts the size the
    /// sender sent), every other message without its tag.
    #[inline]
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let body = self.verify(datagram)?;
        Some(if DataHeader::parse_data(body).is_some() {
            datagram
        } else {
            body
        })
    }
}

#[cfg(unix)]
fn os_bytes(value: OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    value.into_vec()
}

#[cfg(not(unix))]
fn os_bytes(value: OsString) -> Vec<u8> {
    value.to_string_lossy().into_owned().into_bytes()
}

/// One `--allow` entry: an address prefix, IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    /// The network address, host bits zero.
    addr: IpAddr,
    /// Leading bits that must match: ≤ 32 for IPv4, ≤ 128 for IPv6.
    len: u8,
}

impl IpPrefix {
    /// Whether `ip` lies inside this prefix; an IPv4-mapped IPv6 address is matched as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; every other address unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for IpPrefix {
    type Err = String;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single host: /32 or /128). Host
    /// bits set under the mask are refused (they usually mean a mistyped prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let expected = || {
            format!(
                "\"{s}\" is not an address prefix: expected CIDR such as 10.0.0.0/8, \
                 192.0.2.7/32, 2001:db8::/32 or a single address"
            )
        };
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| expected())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("\"{s}\": the prefix length must be 0..={max}"))?,
        };
        // An IPv4-mapped prefix is an IPv4 prefix: peers are matched as IPv4.
        let (addr, len) = match addr {
            IpAddr::V6(v6) if len >= 96 && v6.to_ipv4_mapped().is_some() => {
                (canonical(addr), len - 96)
            }
            other => (other, len),
        };
        let network = match addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        if network != addr {
            return Err(format!(
                "\"{s}\" has host bits set under its /{len} mask: did you mean {network}/{len}?"
            ));
        }
        Ok(IpPrefix { addr, len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The prefixes of `recv --allow`; an address inside any of them is admitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    prefixes: Vec<IpPrefix>,
}

impl AllowList {
    /// `None` for an empty list: everyone is admitted and the receive loop checks nothing.
    pub fn new(prefixes: Vec<IpPrefix>) -> Option<AllowList> {
        (!prefixes.is_empty()).then_some(AllowList { prefixes })
    }

    /// Whether datagrams from `peer` are admitted.
    pub fn admits(&self, peer: SocketAddr) -> bool {
        self.prefixes.iter().any(|p| p.contains(peer.ip()))
    }

    pub fn prefixes(&self) -> &[IpPrefix] {
        &self.prefixes
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::Kind;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn key() -> Key {
        Key::from_secret(b"0123456789abcdef-test-key", "test").unwrap()
    }

    /// RFC 4231 §4.2–4.8: HMAC-SHA-256 test cases 1–7 (case 5 is the 128-bit truncation).
    #[test]
    fn the_primitive_matches_rfc_4231() {
        let long_key = vec![0xaa; 131];
        let cases: [(Vec<u8>, Vec<u8>, &str); 7] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                (1..=25).collect(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0x0c; 20],
                b"Test With Truncation".to_vec(),
                "a3b6167473100ee06e0c796c2955552b",
            ),
            (
                long_key.clone(),
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                long_key,
                b"This is a test using a larger than block-size key and a larger than \
                  block-size data. The key needs to be hashed before being used by the HMAC \
                  algorithm."
                    .to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (i, (k, data, expected)) in cases.iter().enumerate() {
            let expected = hex(expected);
            let key = Key::from_hmac_key(k);
            // Our tag is the RFC's output truncated to its first 16 bytes.
            assert_eq!(
                key.tag(data)[..],
                expected[..TAG_LEN],
                "test case {}",
                i + 1
            );
            let mut signed = data.clone();
            signed.extend_from_slice(&expected[..TAG_LEN]);
            assert_eq!(key.verify(&signed), Some(&data[..]), "test case {}", i + 1);
        }
    }

    #[test]
    fn a_signed_data_datagram_keeps_its_size_and_opens_whole() {
        let key = key();
        let mut datagram = vec![0u8; MIN_KEYED_PAYLOAD];
        DataHeader {
            session_id: 7,
            seq: 9,
            send_ns: 11,
        }
        .write(Kind::Data, &mut datagram);
        key.sign(&mut datagram);
        assert_eq!(datagram.len(), MIN_KEYED_PAYLOAD);
        assert_eq!(
            key.verify(&datagram),
            Some(&datagram[..wire::DATA_HEADER_LEN])
        );
        // The session counts the bytes the sender sent.
        assert_eq!(key.open(&datagram), Some(&datagram[..]));
    }

    #[test]
    fn a_control_message_grows_by_the_tag_and_opens_without_it() {
        let key = key();
        let mut msg = Vec::new();
        wire::Message::ResultReq {
            session_id: 3,
            secret: 9,
        }
        .emit(&mut msg);
        let original = msg.clone();
        key.append_tag(&mut msg);
        assert_eq!(msg.len(), original.len() + TAG_LEN);
        assert_eq!(key.open(&msg), Some(&original[..]));
        // An echo (24 bytes + tag) is no larger than the smallest keyed Data datagram.
        let mut echo = vec![0u8; wire::DATA_HEADER_LEN];
        DataHeader {
            session_id: 3,
            seq: 1,
            send_ns: 2,
        }
        .write(Kind::Echo, &mut echo);
        key.append_tag(&mut echo);
        assert!(echo.len() <= MIN_KEYED_PAYLOAD);
        assert_eq!(key.open(&echo), Some(&echo[..wire::DATA_HEADER_LEN]));
    }

    #[test]
    fn any_flipped_bit_cut_or_other_key_is_refused() {
        let key = key();
        let mut msg = b"a udplab control message".to_vec();
        key.append_tag(&mut msg);
        for byte in 0..msg.len() {
            for bit in 0..8 {
                let mut bad = msg.clone();
                bad[byte] ^= 1 << bit;
                assert_eq!(key.verify(&bad), None, "byte {byte} bit {bit}");
            }
        }
        for cut in 0..msg.len() {
            assert_eq!(key.verify(&msg[..cut]), None, "cut to {cut}");
        }
        let mut longer = msg.clone();
        longer.push(0);
        assert_eq!(key.verify(&longer), None);
        let other = Key::from_secret(b"0123456789abcdef-other-key", "test").unwrap();
        assert_eq!(other.verify(&msg), None);
        // Without a tag at all.
        assert_eq!(key.verify(b"a udplab control message"), None);
    }

    #[test]
    fn short_empty_and_line_ended_keys() {
        let e = Key::from_secret(b"", "--key k").unwrap_err();
        assert!(e.0.contains("--key k: the key is empty"), "{e}");
        let e = Key::from_secret(b"\n", "--key k").unwrap_err();
        assert!(e.0.contains("empty"), "{e}");
        let e = Key::from_secret(b"fifteen-bytes!!\n", "--key k").unwrap_err();
        assert!(e.0.contains("the key has 15 bytes; use at least 16"), "{e}");
        // A trailing line end is not part of the key: file and variable agree.
        let file = Key::from_secret(b"sixteen-bytes-ok\r\n", "file").unwrap();
        let var = Key::from_secret(b"sixteen-bytes-ok", "env").unwrap();
        let mut msg = b"hello".to_vec();
        file.append_tag(&mut msg);
        assert_eq!(var.verify(&msg), Some(&b"hello"[..]));
        assert_eq!(format!("{file:?}"), "Key(..)");
    }

    #[test]
    fn key_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("udplab.key");
        std::fs::write(&path, "a key of more than sixteen bytes\n").unwrap();
        let from_file = Key::resolve(Some(&path)).unwrap().expect("a key");
        let from_env =
            Key::from_env_value(Some("a key of more than sixteen bytes".into())).unwrap();
        let mut msg = b"x".to_vec();
        from_file.append_tag(&mut msg);
        assert!(from_env.expect("a key").verify(&msg).is_some());
        assert_eq!(Key::from_env_value(None).unwrap().map(|_| ()), None);
        let e = Key::from_env_value(Some("".into())).unwrap_err();
        assert!(e.0.contains("UDPLAB_KEY") && e.0.contains("empty"), "{e}");
        let missing = dir.path().join("missing.key");
        let e = Key::from_file(&missing).unwrap_err();
        assert!(
            e.0.starts_with("--key ") && e.0.contains("missing.key"),
            "{e}"
        );
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p = |s: &str| s.parse::<IpPrefix>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!p("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(!p("10.0.0.0/8").contains(ip("127.0.0.1")));
        assert!(p("127.0.0.0/8").contains(ip("127.0.0.1")));
        // A dual-stack socket reports IPv4 peers v4-mapped: they match IPv4 prefixes.
        assert!(p("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(!p("10.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(p("::ffff:127.0.0.0/104").contains(ip("127.9.9.9")));
        assert_eq!(p("::ffff:127.0.0.0/104"), p("127.0.0.0/8"));
        assert!(p("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!p("2001:db8::/32").contains(ip("2001:db9::5")));
        assert!(!p("2001:db8::/32").contains(ip("10.0.0.1")));
        assert!(p("::1").contains(ip("::1")));
        assert!(p("[::1]/128").contains(ip("::1")));
        assert!(p("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!p("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(p("0.0.0.0/0").contains(ip("203.0.113.1")));
        assert!(!p("0.0.0.0/0").contains(ip("::2")));
        assert!(p("::/0").contains(ip("::2")));
        assert_eq!(p("10.0.0.0/8").to_string(), "10.0.0.0/8");
        for (bad, needle) in [
            ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
            ("10.0.0.0/33", "0..=32"),
            ("::/129", "0..=128"),
            ("10.0.0.0/x", "0..=32"),
            ("example.com", "not an address prefix"),
            ("", "not an address prefix"),
        ] {
            let e = bad.parse::<IpPrefix>().unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn an_allow_list_admits_only_its_prefixes() {
        assert_eq!(AllowList::new(Vec::new()), None);
        let list = AllowList::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ])
        .unwrap();
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(list.admits(sa("10.1.2.3:5000")));
        assert!(list.admits(sa("[::ffff:10.1.2.3]:5000")));
        assert!(list.admits(sa("[2001:db8::1]:5000")));
        assert!(!list.admits(sa("127.0.0.1:5000")));
        assert!(!list.admits(sa("[::1]:5000")));
    }

    proptest! {
        #[test]
        fn verify_undoes_sign_and_append(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let key = key();
            let mut appended = body.clone();
            key.append_tag(&mut appended);
            prop_assert_eq!(key.verify(&appended), Some(&body[..]));
            let mut in_place = body.clone();
            in_place.extend_from_slice(&[0u8; TAG_LEN]);
            key.sign(&mut in_place);
            prop_assert_eq!(&in_place, &appended);
        }

        #[test]
        fn no_input_panics_or_passes_unsigned(
            datagram in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let key = key();
            // A random 16-byte tag matches with probability 2^-128: never in a test run.
            prop_assert_eq!(key.verify(&datagram), None);
            prop_assert_eq!(key.open(&datagram), None);
        }

        #[test]
        fn an_authentic_data_datagram_is_never_smaller_than_its_echo(
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // Bodies that start like Data, of every length around the 24-byte header.
            let mut body = vec![0u8; wire::DATA_HEADER_LEN];
            DataHeader { session_id: 1, seq: 2, send_ns: 3 }.write(Kind::Data, &mut body);
            body.truncate(4);
            body.extend_from_slice(&tail);
            let key = key();
            let mut datagram = body.clone();
            key.append_tag(&mut datagram);
            let opened = key.open(&datagram).expect("authentic");
            // What the session may echo (24 + 16 bytes) is never larger than what came in.
            if DataHeader::parse_data(opened).is_some() {
                prop_assert!(opened.len() >= MIN_KEYED_PAYLOAD);
                prop_assert!(wire::DATA_HEADER_LEN + TAG_LEN <= opened.len());
            }
        }

        #[test]
        fn prefix_parsing_never_panics(s in "\\PC{0,48}") {
            let _ = s.parse::<IpPrefix>();
        }
    }
}
