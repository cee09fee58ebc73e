//! The REST API client, the request bodies, and VM name resolution.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use url::Url;
use uuid::Uuid;

use crate::cli::{JobsArgs, StartArgs, TestArgs};
use crate::config::Settings;
use crate::error::{ApiFailure, Error, chain};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
}

impl Api {
    pub fn new(settings: &Settings) -> Result<Api, Error> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &settings.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| Error::Config(format!("token: {e}")))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("failoverctl/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Config(chain(&e)))?;
        Ok(Api {
            http,
            base: settings.api_url.clone(),
        })
    }

    /// The base URL with `segments` appended, each escaped.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> (Url, RequestBuilder) {
        let url = self.url(segments);
        let builder = self.http.request(method, url.clone());
        (url, builder)
    }

    /// Sends the request; the answer's JSON on success, the error envelope otherwise.
    async fn send(&self, url: Url, request: RequestBuilder) -> Result<Value, Error> {
        let response = request
            .send()
            .await
            .map_err(|e| Error::Connection(format!("cannot reach the API: {}", chain(&e))))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            Error::Connection(format!("reading the answer of {url}: {}", chain(&e)))
        })?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        match body {
            Some(body) if status.is_success() => Ok(body),
            Some(body) if ApiFailure::parse(status.as_u16(), &body).is_some() => Err(Error::Api(
                Box::new(ApiFailure::parse(status.as_u16(), &body).expect("checked above")),
            )),
            _ => {
                let snippet: String = text.chars().take(200).collect();
                Err(Error::Connection(format!(
                    "unexpected answer from {url}: HTTP {status}: {snippet}"
                )))
            }
        }
    }

    async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, Error> {
        let (url, request) = self.request(Method::GET, segments);
        self.send(url, request.query(query)).await
    }

    async fn post(
        &self,
        segments: &[&str],
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Error> {
        let (url, mut request) = self.request(Method::POST, segments);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(url, request.json(body)).await
    }

    /// `POST /api/v1/failover/{test|live}`: the accepted answer.
    pub async fn start(
        &self,
        job_type: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Error> {
        self.post(&["api", "v1", "failover", job_type], body, idempotency_key)
            .await
    }

    /// `POST /api/v1/failover/jobs/{id}/{cleanup|cancel|retry}`.
    pub async fn act(
        &self,
        job_id: &str,
        action: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Error> {
        self.post(
            &["api", "v1", "failover", "jobs", job_id, action],
            &json!({}),
            idempotency_key,
        )
        .await
    }

    /// `GET /api/v1/failover/jobs/{id}`: `{success, data: job}`.
    pub async fn job(&self, job_id: &str) -> Result<Value, Error> {
        self.get(&["api", "v1", "failover", "jobs", job_id], &[])
            .await
    }

    /// `GET /api/v1/failover/jobs?...`: `{success, data: [job], total, limit, offset}`.
    pub async fn jobs(&self, query: &[(&str, String)]) -> Result<Value, Error> {
        self.get(&["api", "v1", "failover", "jobs"], query).await
    }

    /// `GET /api/v1/vms`: `{success, data: [vm], total}`.
    pub async fn vms(&self) -> Result<Value, Error> {
        self.get(&["api", "v1", "vms"], &[]).await
    }

    /// `GET /api/v1/vms/{vm_id}`: `{success, data: vm}`.
    pub async fn vm(&self, vm_id: &str) -> Result<Value, Error> {
        self.get(&["api", "v1", "vms", vm_id], &[]).await
    }

    /// The VM's id and name: a UUID is looked up (unless the name is
    /// given), a name is found in the inventory.
    pub async fn resolve_vm(
        &self,
        vm: &str,
        name_override: Option<&str>,
    ) -> Result<(String, String), Error> {
        match VmRef::parse(vm) {
            VmRef::Id(id) => {
                let name = match name_override {
                    Some(name) => name.to_owned(),
                    None => self.vm(&id.to_string()).await?["data"]["vm_name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                };
                Ok((id.to_string(), name))
            }
            VmRef::Name(name) => {
                let inventory = self.vms().await?;
                let records = inventory["data"].as_array().cloned().unwrap_or_default();
                let (id, found) = find_by_name(&name, &records)?;
                Ok((id, name_override.map_or(found, str::to_owned)))
            }
        }
    }
}

/// How the operator named a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmRef {
    Id(Uuid),
    Name(String),
}

impl VmRef {
    pub fn parse(text: &str) -> VmRef {
        match Uuid::parse_str(text.trim()) {
            Ok(id) => VmRef::Id(id),
            Err(_) => VmRef::Name(text.trim().to_owned()),
        }
    }
}

/// The one inventory record named `name`: an exact match, else the only
/// case-insensitive one.
pub fn find_by_name(name: &str, records: &[Value]) -> Result<(String, String), Error> {
    let named = |exact: bool| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| {
                let candidate = r["vm_name"].as_str().unwrap_or_default();
                if exact {
                    candidate == name
                } else {
                    candidate.eq_ignore_ascii_case(name)
                }
            })
            .collect()
    };
    let mut matches = named(true);
    if matches.is_empty() {
        matches = named(false);
    }
    let pair = |r: &Value| {
        (
            r["vm_id"].as_str().unwrap_or_default().to_owned(),
            r["vm_name"].as_str().unwrap_or_default().to_owned(),
        )
    };
    match matches.as_slice() {
        [one] => Ok(pair(one)),
        [] => {
            let mut known: Vec<&str> = records
                .iter()
                .filter_map(|r| r["vm_name"].as_str())
                .collect();
            known.sort_unstable();
            known.dedup();
            Err(Error::Usage(if known.is_empty() {
                format!("no VM named {name:?}: the inventory is empty")
            } else {
                format!(
                    "no VM named {name:?} in the inventory (known: {})",
                    known.join(", ")
                )
            }))
        }
        many => Err(Error::Usage(format!(
            "{} VMs are named {name:?}; give the VMware UUID instead: {}",
            many.len(),
            many.iter()
                .map(|r| pair(r).0)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The body of `POST /api/v1/failover/{test|live}`.
pub fn failover_body(
    vm_id: &str,
    vm_name: &str,
    start: &StartArgs,
    test: Option<&TestArgs>,
) -> Result<Value, Error> {
    let mut networks = BTreeMap::new();
    for (source, target) in &start.networks {
        if networks.insert(source.clone(), target.clone()).is_some() {
            return Err(Error::Usage(format!(
                "network {source:?} is mapped more than once"
            )));
        }
    }
    let mut body = json!({
        "vm_id": vm_id,
        "vm_name": vm_name,
        "skip_validation": start.skip_validation,
        "skip_snapshot": start.skip_snapshot,
        "skip_virtio_injection": start.skip_virtio_injection,
        "rollback_on_failure": !start.keep_state,
    });
    if !networks.is_empty() {
        body["network_mappings"] = json!(networks);
    }
    if let Some(test) = test {
        body["auto_cleanup"] = json!(test.auto_cleanup);
        if let Some(duration) = &test.test_duration {
            body["test_duration"] = json!(duration);
        }
    }
    Ok(body)
}

/// The query of `GET /api/v1/failover/jobs`, with the VM already resolved to its id.
pub fn jobs_query(args: &JobsArgs, vm_id: Option<String>) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    let mut add = |key, value: Option<String>| {
        if let Some(value) = value {
            query.push((key, value));
        }
    };
    add("status", args.status.clone());
    add("type", args.job_type.clone());
    add("vm_id", vm_id);
    add("correlation_id", args.correlation_id.clone());
    add("limit", args.limit.map(|l| l.to_string()));
    add("offset", args.offset.map(|o| o.to_string()));
    query
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn inventory() -> Vec<Value> {
        vec![
            json!({"vm_id": "4205a1b2-3c4d-4e6f-8a8b-9c0d1e2f3a4b", "vm_name": "win2019-app"}),
            json!({"vm_id": "420570c7-f61f-a930-77c5-1e876786cb3c", "vm_name": "pgtest1"}),
            json!({"vm_id": "4205c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "vm_name": "web01"}),
            json!({"vm_id": "4205c3d4-0000-4a7b-8c9d-0e1f2a3b4c5d", "vm_name": "WEB01"}),
            json!({"vm_id": "4205dddd-0000-4a7b-8c9d-0e1f2a3b4c5d", "vm_name": "dup"}),
            json!({"vm_id": "4205eeee-0000-4a7b-8c9d-0e1f2a3b4c5d", "vm_name": "dup"}),
        ]
    }

    #[test]
    fn a_uuid_is_an_id_and_anything_else_a_name() {
        assert_eq!(
            VmRef::parse(" 420570c7-f61f-a930-77c5-1e876786cb3c "),
            VmRef::Id(Uuid::parse_str("420570c7-f61f-a930-77c5-1e876786cb3c").unwrap())
        );
        assert_eq!(VmRef::parse("pgtest1"), VmRef::Name("pgtest1".to_owned()));
        assert_eq!(VmRef::parse("420570c7"), VmRef::Name("420570c7".to_owned()));
    }

    #[test]
    fn names_resolve_exactly_first_then_ignoring_case() {
        let records = inventory();
        assert_eq!(
            find_by_name("pgtest1", &records).unwrap(),
            (
                "420570c7-f61f-a930-77c5-1e876786cb3c".to_owned(),
                "pgtest1".to_owned()
            )
        );
        assert_eq!(
            find_by_name("PGTEST1", &records).unwrap().1,
            "pgtest1",
            "the inventory's spelling is sent"
        );
        assert_eq!(
            find_by_name("WEB01", &records).unwrap().0,
            "4205c3d4-0000-4a7b-8c9d-0e1f2a3b4c5d",
            "an exact match wins over case-insensitive ones"
        );
        let err = find_by_name("Web01", &records).unwrap_err().to_string();
        assert!(err.contains("2 VMs are named"), "{err}");
        let err = find_by_name("dup", &records).unwrap_err().to_string();
        assert!(
            err.contains("4205dddd-0000-4a7b-8c9d-0e1f2a3b4c5d")
                && err.contains("4205eeee-0000-4a7b-8c9d-0e1f2a3b4c5d"),
            "{err}"
        );
        let err = find_by_name("nope", &records).unwrap_err().to_string();
        assert!(
            err.contains("known: WEB01, dup, pgtest1, web01, win2019-app"),
            "{err}"
        );
        let err = find_by_name("nope", &[]).unwrap_err().to_string();
        assert!(err.contains("inventory is empty"), "{err}");
    }

    fn parsed(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("failoverctl").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn the_request_body_follows_the_flags() {
        let Command::Test(test) = parsed(&[
            "test",
            "pgtest1",
            "--skip-snapshot",
            "--keep-state",
            "--network",
            "VM Network=net-1",
            "--test-duration",
            "1h",
            "--auto-cleanup",
        ]) else {
            panic!("a test command")
        };
        let body = failover_body("id-1", "pgtest1", &test.start, Some(&test)).unwrap();
        assert_eq!(
            body,
            json!({
                "vm_id": "id-1", "vm_name": "pgtest1",
                "skip_validation": false, "skip_snapshot": true, "skip_virtio_injection": false,
                "rollback_on_failure": false,
                "network_mappings": {"VM Network": "net-1"},
                "auto_cleanup": true, "test_duration": "1h"
            })
        );
        let Command::Live(live) = parsed(&["live", "web01"]) else {
            panic!("a live command")
        };
        let body = failover_body("id-2", "web01", &live, None).unwrap();
        assert_eq!(
            body,
            json!({
                "vm_id": "id-2", "vm_name": "web01",
                "skip_validation": false, "skip_snapshot": false, "skip_virtio_injection": false,
                "rollback_on_failure": true
            })
        );
    }

    #[test]
    fn a_network_mapped_twice_is_refused() {
        let Command::Live(live) =
            parsed(&["live", "web01", "--network", "a=1", "--network", "a=2"])
        else {
            panic!("a live command")
        };
        assert!(matches!(
            failover_body("id", "web01", &live, None),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn the_list_query_has_only_what_was_given() {
        let Command::Jobs(jobs) = parsed(&["jobs", "--status", "failed", "--limit", "5"]) else {
            panic!("a jobs command")
        };
        assert_eq!(
            jobs_query(&jobs, Some("vm-1".into())),
            vec![
                ("status", "failed".to_owned()),
                ("vm_id", "vm-1".to_owned()),
                ("limit", "5".to_owned())
            ]
        );
    }

    /// Answers one HTTP request with `status` and `body`; returns the
    /// server's URL and the request it received.
    async fn one_shot(status: &str, body: &'static str) -> (Url, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let status = status.to_owned();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&request).contains("\r\n\r\n{}") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, server)
    }

    fn settings(api_url: Url, token: Option<&str>) -> Settings {
        Settings {
            api_url,
            grpc_url: Url::parse("http://127.0.0.1:50051").unwrap(),
            token: token.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn requests_carry_the_token_and_the_idempotency_key() {
        let (url, server) = one_shot(
            "202 Accepted",
            r#"{"success":true,"job_id":"enhanced-cleanup-x-1"}"#,
        )
        .await;
        let api = Api::new(&settings(url, Some("t0k3n"))).unwrap();
        let answer = api.act("job-1", "cleanup", Some("key-1")).await.unwrap();
        assert_eq!(answer["job_id"], "enhanced-cleanup-x-1");
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("post /api/v1/failover/jobs/job-1/cleanup http/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("\r\nauthorization: bearer t0k3n\r\n"),
            "{request}"
        );
        assert!(
            request.contains("\r\nidempotency-key: key-1\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn an_error_envelope_becomes_an_api_error() {
        let (url, _server) = one_shot(
            "404 Not Found",
            r#"{"success":false,"error":"Job x not found","error_code":"JOB_NOT_FOUND","details":{"job_id":"x"},"troubleshooting":{"suggestions":["List the jobs"]}}"#,
        )
        .await;
        let api = Api::new(&settings(url, None)).unwrap();
        match api.act("x", "retry", None).await {
            Err(Error::Api(failure)) => {
                assert_eq!(failure.http_status, 404);
                assert_eq!(failure.error_code, "JOB_NOT_FOUND");
                assert_eq!(failure.body["details"]["job_id"], "x");
            }
            other => panic!("not an API error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_answer_that_is_not_the_envelope_is_reported_as_such() {
        let (url, _server) = one_shot("502 Bad Gateway", r#"{"upstream":"down"}"#).await;
        let api = Api::new(&settings(url, None)).unwrap();
        let err = api.act("x", "cancel", None).await.unwrap_err();
        assert!(
            matches!(&err, Error::Connection(m) if m.contains("HTTP 502 Bad Gateway")),
            "{err:?}"
        );
    }

    #[test]
    fn paths_are_escaped_below_the_base() {
        let base = Url::parse("https://proxy.example/failover/").unwrap();
        let api = Api::new(&settings(base, None)).unwrap();
        assert_eq!(
            api.url(&["api", "v1", "failover", "jobs", "a/b?c"])
                .as_str(),
            "https://proxy.example/failover/api/v1/failover/jobs/a%2Fb%3Fc"
        );
    }
}
