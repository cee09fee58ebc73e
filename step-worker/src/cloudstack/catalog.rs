//! What a VM is deployed from and into: zones, compute offerings,
//! templates, networks. All sync reads.

use super::client::CloudStackClient;
use super::error::CloudStackError;
use super::types::{Network, ServiceOffering, Template, Zone};
use super::wire::{Params, decode_list};

impl CloudStackClient {
    /// `listZones`.
    pub async fn list_zones(&self) -> Result<Vec<Zone>, CloudStackError> {
        const CMD: &str = "listZones";
        let inner = self.send_retried(CMD, &Params::new()).await?;
        decode_list(CMD, &inner, "zone")
    }

    /// `listServiceOfferings`.
    pub async fn list_service_offerings(&self) -> Result<Vec<ServiceOffering>, CloudStackError> {
        const CMD: &str = "listServiceOfferings";
        let inner = self.send_retried(CMD, &Params::new()).await?;
        decode_list(CMD, &inner, "serviceoffering")
    }

    /// `listTemplates`; `template_filter` is required by the server
    /// (`featured`, `self`, `executable`, `all`, ...).
    pub async fn list_templates(
        &self,
        template_filter: &str,
        id: Option<&str>,
    ) -> Result<Vec<Template>, CloudStackError> {
        const CMD: &str = "listTemplates";
        let params = Params::new()
            .with("templatefilter", template_filter)
            .with_opt("id", id);
        let inner = self.send_retried(CMD, &params).await?;
        decode_list(CMD, &inner, "template")
    }

    /// `listNetworks` (`listall=true`), optionally of one zone.
    pub async fn list_networks(
        &self,
        zone_id: Option<&str>,
    ) -> Result<Vec<Network>, CloudStackError> {
        const CMD: &str = "listNetworks";
        let params = Params::new()
            .with("listall", "true")
            .with_opt("zoneid", zone_id);
        let inner = self.send_retried(CMD, &params).await?;
        decode_list(CMD, &inner, "network")
    }
}
