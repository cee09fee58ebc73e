//! Where the servers are and how to authenticate: flags, then environment
//! variables, then the config file, then the defaults.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;
use url::Url;

use crate::cli::GlobalArgs;
use crate::error::Error;

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8082";
pub const DEFAULT_GRPC_URL: &str = "http://127.0.0.1:50051";
pub const ENV_API_URL: &str = "FAILOVERCTL_API_URL";
pub const ENV_GRPC_URL: &str = "FAILOVERCTL_GRPC_URL";
pub const ENV_TOKEN: &str = "FAILOVERCTL_TOKEN";
pub const ENV_CONFIG: &str = "FAILOVERCTL_CONFIG";

/// The config file: every key optional, unknown keys refused (a typo must
/// not silently point the CLI elsewhere).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub api_url: Option<String>,
    pub grpc_url: Option<String>,
    pub token: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, Error> {
        Figment::from(Toml::file_exact(path))
            .extract()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

/// The resolved settings.
#[derive(Clone)]
pub struct Settings {
    pub api_url: Url,
    pub grpc_url: Url,
    pub token: Option<String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("api_url", &self.api_url.as_str())
            .field("grpc_url", &self.grpc_url.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The config file to read and whether it must exist: `--config`, then
/// `FAILOVERCTL_CONFIG` (both must exist), then
/// `$XDG_CONFIG_HOME/failoverctl/config.toml` or
/// `~/.config/failoverctl/config.toml` (read when present).
pub fn config_path(
    flag: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(PathBuf, bool)> {
    if let Some(path) = flag {
        return Some((path.to_owned(), true));
    }
    if let Some(path) = env(ENV_CONFIG) {
        return Some((PathBuf::from(path), true));
    }
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some((base.join("failoverctl").join("config.toml"), false))
}

impl Settings {
    /// Reads the config file (if any) and merges everything.
    pub fn load(flags: &GlobalArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let file = match config_path(flags.config.as_deref(), env) {
            Some((path, true)) => FileConfig::load(&path)?,
            Some((path, false)) if path.is_file() => FileConfig::load(&path)?,
            _ => FileConfig::default(),
        };
        Self::merge(flags, env, file)
    }

    /// Flags, then environment, then file, then defaults; empty values
    /// count as unset.
    pub fn merge(
        flags: &GlobalArgs,
        env: &dyn Fn(&str) -> Option<String>,
        file: FileConfig,
    ) -> Result<Self, Error> {
        let pick = |flag: &Option<String>, var: &str, file: Option<String>| {
            [flag.clone(), env(var), file]
                .into_iter()
                .flatten()
                .map(|v| v.trim().to_owned())
                .find(|v| !v.is_empty())
        };
        let api_url = pick(&flags.api_url, ENV_API_URL, file.api_url)
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        let grpc_url = pick(&flags.grpc_url, ENV_GRPC_URL, file.grpc_url)
            .unwrap_or_else(|| DEFAULT_GRPC_URL.to_owned());
        let token = pick(&flags.token, ENV_TOKEN, file.token);
        if let Some(token) = &token
            && !token.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(Error::Config(
                "the token must be printable ASCII without spaces".into(),
            ));
        }
        let api_url = parse_url("API URL", &api_url, &["http", "https"])?;
        let grpc_url = parse_url("gRPC URL", &grpc_url, &["http"]).map_err(|e| match e {
            Error::Config(m) if grpc_url.starts_with("https:") => Error::Config(format!(
                "{m}; the gateway serves gRPC without TLS, so use its http:// address"
            )),
            other => other,
        })?;
        Ok(Settings {
            api_url,
            grpc_url,
            token,
        })
    }
}

fn parse_url(what: &str, text: &str, schemes: &[&str]) -> Result<Url, Error> {
    let url = Url::parse(text).map_err(|e| Error::Config(format!("{what} {text:?}: {e}")))?;
    if !schemes.contains(&url.scheme()) || url.cannot_be_a_base() || url.host().is_none() {
        return Err(Error::Config(format!(
            "{what} {text:?} must be a {} URL",
            schemes.join(" or ")
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::cli::Output;

    fn flags() -> GlobalArgs {
        GlobalArgs {
            api_url: None,
            grpc_url: None,
            token: None,
            config: None,
            output: Output::Human,
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = Settings::merge(&flags(), &env(&[]), FileConfig::default()).unwrap();
        assert_eq!(s.api_url.as_str(), "http://127.0.0.1:8082/");
        assert_eq!(s.grpc_url.as_str(), "http://127.0.0.1:50051/");
        assert_eq!(s.token, None);
    }

    #[test]
    fn flags_beat_environment_beats_file() {
        let file = FileConfig {
            api_url: Some("http://file:1".into()),
            grpc_url: Some("http://file:2".into()),
            token: Some("file-token".into()),
        };
        let vars = env(&[
            (ENV_API_URL, "http://env:1"),
            (ENV_TOKEN, "env-token"),
            (ENV_GRPC_URL, ""),
        ]);
        let mut f = flags();
        f.api_url = Some("http://flag:1".into());
        let s = Settings::merge(&f, &vars, file.clone()).unwrap();
        assert_eq!(s.api_url.as_str(), "http://flag:1/");
        assert_eq!(s.token.as_deref(), Some("env-token"));
        assert_eq!(
            s.grpc_url.as_str(),
            "http://file:2/",
            "an empty variable counts as unset"
        );
        let s = Settings::merge(&flags(), &env(&[]), file).unwrap();
        assert_eq!(s.api_url.as_str(), "http://file:1/");
        assert_eq!(s.token.as_deref(), Some("file-token"));
    }

    #[test]
    fn bad_urls_and_tokens_are_refused() {
        let mut f = flags();
        f.api_url = Some("gw:8082".into());
        assert!(Settings::merge(&f, &env(&[]), FileConfig::default()).is_err());
        let mut f = flags();
        f.grpc_url = Some("https://gw:50051".into());
        let err = Settings::merge(&f, &env(&[]), FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("without TLS"), "{err}");
        let mut f = flags();
        f.token = Some("two words".into());
        assert!(Settings::merge(&f, &env(&[]), FileConfig::default()).is_err());
    }

    #[test]
    fn the_token_is_never_shown() {
        let mut f = flags();
        f.token = Some("s3cret".into());
        let s = Settings::merge(&f, &env(&[]), FileConfig::default()).unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn the_config_file_is_found_in_order() {
        let explicit = Path::new("/etc/f.toml");
        assert_eq!(
            config_path(Some(explicit), &env(&[(ENV_CONFIG, "/x.toml")])),
            Some((explicit.to_owned(), true))
        );
        assert_eq!(
            config_path(None, &env(&[(ENV_CONFIG, "/x.toml"), ("HOME", "/home/op")])),
            Some((PathBuf::from("/x.toml"), true))
        );
        assert_eq!(
            config_path(
                None,
                &env(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/op")])
            ),
            Some((PathBuf::from("/xdg/failoverctl/config.toml"), false))
        );
        assert_eq!(
            config_path(None, &env(&[("HOME", "/home/op")])),
            Some((
                PathBuf::from("/home/op/.config/failoverctl/config.toml"),
                false
            ))
        );
        assert_eq!(config_path(None, &env(&[])), None);
    }

    #[test]
    fn the_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "api_url = \"https://failover.example:8082\"\ntoken = \"t0k\"\n",
        )
        .unwrap();
        let mut f = flags();
        f.config = Some(path.clone());
        let s = Settings::load(&f, &env(&[])).unwrap();
        assert_eq!(s.api_url.as_str(), "https://failover.example:8082/");
        assert_eq!(s.token.as_deref(), Some("t0k"));
        assert_eq!(s.grpc_url.as_str(), "http://127.0.0.1:50051/");

        std::fs::write(&path, "api-url = \"http://typo\"\n").unwrap();
        let err = Settings::load(&f, &env(&[])).unwrap_err();
        assert!(err.to_string().contains("api-url"), "{err}");

        f.config = Some(dir.path().join("missing.toml"));
        assert!(Settings::load(&f, &env(&[])).is_err());
        // The default file is optional.
        let home = dir.path().display().to_string();
        assert!(Settings::load(&flags(), &env(&[("HOME", &home)])).is_ok());
    }
}
