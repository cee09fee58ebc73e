//! `step-worker check`: asks every configured system whether it answers, so
//! an operator pointing the worker at a real CloudStack and LINSTOR sees at
//! once what is wrong.

use std::time::Duration;

use tokio::process::Command;

use failover_platform::Settings;

use crate::cloudstack::CloudStackClient;
use crate::linstor::LinstorClient;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub system: &'static str,
    pub ok: bool,
    pub detail: String,
}

pub async fn run(settings: &Settings) -> Vec<Check> {
    let mut checks = Vec::new();
    match CloudStackClient::new(&settings.cloudstack) {
        Ok(client) => match client.list_zones().await {
            Ok(zones) => checks.push(Check {
                system: "cloudstack",
                ok: true,
                detail: format!(
                    "{} answers; {} zone(s)",
                    settings.cloudstack.endpoint,
                    zones.len()
                ),
            }),
            Err(e) => checks.push(Check {
                system: "cloudstack",
                ok: false,
                detail: e.to_string(),
            }),
        },
        Err(e) => checks.push(Check {
            system: "cloudstack",
            ok: false,
            detail: e.to_string(),
        }),
    }
    match LinstorClient::new(&settings.linstor) {
        Ok(client) => match client.controller_version().await {
            Ok(v) => checks.push(Check {
                system: "linstor",
                ok: true,
                detail: format!(
                    "{} answers; controller {}",
                    settings.linstor.endpoint, v.version
                ),
            }),
            Err(e) => checks.push(Check {
                system: "linstor",
                ok: false,
                detail: e.to_string(),
            }),
        },
        Err(e) => checks.push(Check {
            system: "linstor",
            ok: false,
            detail: e.to_string(),
        }),
    }
    let vc = &settings.virt_customize;
    let version = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(&vc.command).arg("--version").output(),
    )
    .await;
    checks.push(match version {
        Ok(Ok(out)) if out.status.success() => Check {
            system: "virt-customize",
            ok: vc.virtio_win_path.exists(),
            detail: format!(
                "{}; virtio-win {} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                vc.virtio_win_path.display(),
                if vc.virtio_win_path.exists() {
                    "found"
                } else {
                    "MISSING"
                }
            ),
        },
        Ok(Ok(out)) => Check {
            system: "virt-customize",
            ok: false,
            detail: format!(
                "{} --version exited with {}",
                vc.command.display(),
                out.status
            ),
        },
        Ok(Err(e)) => Check {
            system: "virt-customize",
            ok: false,
            detail: format!("cannot run {}: {e}", vc.command.display()),
        },
        Err(_) => Check {
            system: "virt-customize",
            ok: false,
            detail: "no answer to --version within 30s".into(),
        },
    });
    checks
}
