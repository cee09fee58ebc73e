//! The wire format: signed parameter strings going out, the one-key JSON
//! envelope and the error shape coming back.

use chrono::{DateTime, Utc};
use failover_platform::cloudstack_signature::{self, EXPIRES_FORMAT, java_url_encode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::CloudStackError;

/// The parameters of one command, names as sent (lower case, except the
/// `details[0].cpuNumber`-style map keys the server reads verbatim).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.push(name, value);
        self
    }

    pub fn with_opt(mut self, name: &str, value: Option<impl Into<String>>) -> Self {
        if let Some(v) = value {
            self.push(name, v);
        }
        self
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Params {
    fn from_iter<T: IntoIterator<Item = (&'a str, &'a str)>>(iter: T) -> Self {
        Self(
            iter.into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

/// Signs requests with one API key pair (signature version 3).
pub(crate) struct Signer {
    api_key: String,
    secret_key: SecretString,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("api_key", &"[redacted]")
            .field("secret_key", &"[redacted]")
            .finish()
    }
}

impl Signer {
    pub(crate) fn new(api_key: String, secret_key: SecretString) -> Self {
        Self {
            api_key,
            secret_key,
        }
    }

    /// The encoded `name=value&...` string of `command` with `params`, the
    /// fixed parameters (`apikey`, `command`, `response=json`,
    /// `signatureversion=3`, `expires`) and the percent-encoded `signature`:
    /// a URL query or a form body.
    pub(crate) fn signed_query(
        &self,
        command: &str,
        params: &Params,
        expires: DateTime<Utc>,
    ) -> String {
        let expires = expires.format(EXPIRES_FORMAT).to_string();
        let mut all: Vec<(&str, &str)> = params.iter().filter(|(n, _)| !is_reserved(n)).collect();
        all.extend([
            ("apikey", self.api_key.as_str()),
            ("command", command),
            ("response", "json"),
            ("signatureversion", "3"),
            ("expires", expires.as_str()),
        ]);
        all.sort_by(|a, b| a.0.cmp(b.0));
        let signature =
            cloudstack_signature::sign(all.iter().copied(), self.secret_key.expose_secret());
        let mut query = all
            .iter()
            .map(|(n, v)| format!("{n}={}", java_url_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        query.push_str("&signature=");
        query.push_str(&java_url_encode(&signature));
        query
    }
}

fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        "apikey" | "command" | "response" | "signatureversion" | "expires" | "signature"
    )
}

/// Looks a key up case-insensitively (the server is not consistent about
/// the case of array keys such as `vmSnapshot`).
pub(crate) fn get_ci<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn as_u64(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Decodes one answer of the API: the object under its single top-level
/// key (`<command>response`, matched case-insensitively; recorded answers
/// also use the bare command name), or the typed error it carries. Any
/// status other than 200 is an error; so is an object with an `errorcode`.
pub fn decode_response(
    command: &str,
    http_status: u16,
    body: &[u8],
) -> Result<Value, CloudStackError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let inner = parsed.as_ref().and_then(|v| envelope(command, v));
    let ok = (200..300).contains(&http_status);
    match inner {
        Some(Value::Object(obj)) if !ok || obj.contains_key("errorcode") => {
            let error_code = as_u64(obj.get("errorcode"))
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(http_status);
            Err(CloudStackError::Api {
                command: command.to_owned(),
                http_status,
                error_code,
                cs_error_code: as_u64(obj.get("cserrorcode")).and_then(|c| u32::try_from(c).ok()),
                error_text: obj
                    .get("errortext")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
        }
        Some(value) if ok => Ok(value.clone()),
        _ if !ok => Err(CloudStackError::Api {
            command: command.to_owned(),
            http_status,
            error_code: http_status,
            cs_error_code: None,
            error_text: snippet(body),
        }),
        _ => Err(CloudStackError::Decode {
            command: command.to_owned(),
            reason: format!(
                "expected a JSON object under {}response",
                command.to_ascii_lowercase()
            ),
        }),
    }
}

fn envelope<'a>(command: &str, value: &'a Value) -> Option<&'a Value> {
    let object = value.as_object()?;
    let wanted = format!("{command}response");
    object
        .iter()
        .find(|(k, _)| {
            k.eq_ignore_ascii_case(&wanted)
                || k.eq_ignore_ascii_case(command)
                || k.as_str() == "errorresponse"
        })
        .map(|(_, v)| v)
        .or_else(|| match object.len() {
            1 => object.values().next(),
            _ => None,
        })
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The entries of a list answer under `key` (matched case-insensitively);
/// an empty list is answered as `{}`.
pub fn decode_list<T: DeserializeOwned>(
    command: &str,
    inner: &Value,
    key: &str,
) -> Result<Vec<T>, CloudStackError> {
    let Some(object) = inner.as_object() else {
        return Err(decode_error(command, "the answer is not an object"));
    };
    match get_ci(object, key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(items) => serde_json::from_value(items.clone())
            .map_err(|e| decode_error(command, &format!("{key}: {e}"))),
    }
}

/// The object under `key` (matched case-insensitively) of an answer,
/// such as `serviceoffering` of `createServiceOffering`.
pub fn decode_entity<T: DeserializeOwned>(
    command: &str,
    inner: &Value,
    key: &str,
) -> Result<T, CloudStackError> {
    let entity = inner
        .as_object()
        .and_then(|o| get_ci(o, key))
        .ok_or_else(|| decode_error(command, &format!("no {key} in the answer")))?;
    serde_json::from_value(entity.clone())
        .map_err(|e| decode_error(command, &format!("{key}: {e}")))
}

/// A field of an answer as a string (`jobid`, `id`).
pub(crate) fn string_field(
    command: &str,
    inner: &Value,
    key: &str,
) -> Result<String, CloudStackError> {
    inner
        .as_object()
        .and_then(|o| get_ci(o, key))
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .ok_or_else(|| decode_error(command, &format!("no {key} in the answer")))
}

pub(crate) fn decode_error(command: &str, reason: &str) -> CloudStackError {
    CloudStackError::Decode {
        command: command.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn signed_query_matches_the_wire_test_vector() {
        let signer = Signer::new("AK".to_owned(), SecretString::from("SECRET".to_owned()));
        let params = Params::new()
            .with("zoneid", "z-1")
            .with("displayname", "My VM~1")
            .with("serviceofferingid", "s-1")
            .with("templateid", "t-1");
        let expires = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let query = signer.signed_query("deployVirtualMachine", &params, expires);
        assert_eq!(
            query,
            "apikey=AK&command=deployVirtualMachine&displayname=My%20VM%7E1\
             &expires=2030-01-01T00%3A00%3A00%2B0000&response=json&serviceofferingid=s-1\
             &signatureversion=3&templateid=t-1&zoneid=z-1\
             &signature=xJw0lDum%2FrOtgo02jCDG9tV4gF8%3D"
        );
        assert!(!format!("{signer:?}").contains("SECRET"));
    }

    #[test]
    fn reserved_parameters_cannot_be_overridden() {
        let signer = Signer::new("AK".to_owned(), SecretString::from("S".to_owned()));
        let params = Params::new()
            .with("response", "xml")
            .with("apikey", "other");
        let expires = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let query = signer.signed_query("listZones", &params, expires);
        assert!(query.contains("response=json") && !query.contains("xml"));
        assert!(query.contains("apikey=AK") && !query.contains("other"));
    }

    #[test]
    fn envelope_keys_match_case_insensitively() {
        let inner = decode_response(
            "listVMSnapshot",
            200,
            br#"{"listvmsnapshotresponse":{"count":1,"vmSnapshot":[{"id":"s"}]}}"#,
        )
        .unwrap();
        let snaps: Vec<Value> = decode_list("listVMSnapshot", &inner, "vmsnapshot").unwrap();
        assert_eq!(snaps.len(), 1);
        let err = decode_response(
            "nope",
            432,
            br#"{"errorresponse":{"uuidList":[],"errorcode":432,"cserrorcode":9999,"errortext":"The given command does not exist"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.error_code(), Some(432));
        let two_keys = decode_response("listZones", 200, br#"{"a":{},"b":{}}"#).unwrap_err();
        assert!(matches!(two_keys, CloudStackError::Decode { .. }));
    }
}
