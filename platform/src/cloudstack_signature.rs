//! CloudStack request signing, exactly as the management server checks it
//! (`ApiServer.verifyRequest`), so the worker's client and the simulator agree
//! with the real server:
//!
//! 1. every parameter but `signature`, sorted by name in Java string order
//!    (case-sensitive, UTF-16 code units; for the ASCII names used here that
//!    is byte order);
//! 2. each value encoded like Java's `URLEncoder` with `+` turned into `%20`;
//! 3. `name=value` joined with `&`, the whole string lower-cased;
//! 4. HMAC-SHA1 with the secret key, standard base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The timestamp format of the `expires` parameter: `2030-01-01T00:00:00+0000`.
pub const EXPIRES_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%z";

/// Encodes a value like `java.net.URLEncoder.encode(value, "UTF-8")` followed
/// by `replaceAll("\\+", "%20")`: unreserved are `A-Z a-z 0-9 . - * _`, a
/// space becomes `%20`, every other byte of the UTF-8 form becomes `%XX`
/// (upper-case hex, which the lower-casing of step 3 folds anyway).
pub fn java_url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0x0f) as usize] as char);
            }
        }
    }
    out
}

/// Compares two names the way `java.lang.String.compareTo` does: by UTF-16
/// code units.
fn java_string_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The canonical, lower-cased string that is signed. `signature` itself is
/// left out wherever it appears.
pub fn string_to_sign<'a, I>(params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("signature"))
        .collect();
    pairs.sort_by(|a, b| java_string_order(a.0, b.0).then_with(|| a.1.cmp(b.1)));
    let joined = pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", java_url_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    joined.to_lowercase()
}

/// The base64 HMAC-SHA1 signature of `params` under `secret_key`.
pub fn sign<'a, I>(params: I, secret_key: &str) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let canonical = string_to_sign(params);
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret_key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(canonical.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a received signature in constant time.
pub fn verify<'a, I>(params: I, secret_key: &str, signature: &str) -> bool
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let Ok(received) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let canonical = string_to_sign(params);
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret_key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(canonical.as_bytes());
    mac.verify_slice(&received).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: [(&str, &str); 9] = [
        ("apikey", "AK"),
        ("command", "deployVirtualMachine"),
        ("displayname", "My VM~1"),
        ("expires", "2030-01-01T00:00:00+0000"),
        ("response", "json"),
        ("serviceofferingid", "s-1"),
        ("signatureversion", "3"),
        ("templateid", "t-1"),
        ("zoneid", "z-1"),
    ];

    #[test]
    fn wire_test_vector_string_to_sign() {
        assert_eq!(
            string_to_sign(VECTOR.iter().rev().copied()),
            "apikey=ak&command=deployvirtualmachine&displayname=my%20vm%7e1&expires=2030-01-01t00%3a00%3a00%2b0000&response=json&serviceofferingid=s-1&signatureversion=3&templateid=t-1&zoneid=z-1"
        );
    }

    #[test]
    fn wire_test_vector_signature() {
        assert_eq!(sign(VECTOR, "SECRET"), "xJw0lDum/rOtgo02jCDG9tV4gF8=");
        assert!(verify(VECTOR, "SECRET", "xJw0lDum/rOtgo02jCDG9tV4gF8="));
        assert!(!verify(VECTOR, "secret", "xJw0lDum/rOtgo02jCDG9tV4gF8="));
        assert!(!verify(VECTOR, "SECRET", "not base64!"));
    }

    #[test]
    fn signature_parameter_is_not_signed() {
        let mut with_sig = VECTOR.to_vec();
        with_sig.push(("signature", "whatever"));
        assert_eq!(sign(with_sig, "SECRET"), sign(VECTOR, "SECRET"));
    }

    #[test]
    fn java_encoding_of_awkward_characters() {
        assert_eq!(java_url_encode("a b+c~d*e.f-g_h"), "a%20b%2Bc%7Ed*e.f-g_h");
        assert_eq!(java_url_encode("é,"), "%C3%A9%2C");
        assert_eq!(java_url_encode("n1,n2"), "n1%2Cn2");
    }

    #[test]
    fn names_sort_case_sensitively_like_java() {
        // Upper-case letters sort before lower-case ones in Java order.
        let s = string_to_sign([("b", "1"), ("A", "2"), ("a", "3")]);
        assert_eq!(s, "a=2&a=3&b=1");
    }
}
