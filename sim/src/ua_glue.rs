//! Starts the OPC UA servers of a scenario (temporary until the OPC UA front end lands).

use std::path::Path;
use std::sync::Arc;

use crate::plant::Device;
use crate::scenario::OpcuaServerSpec;

#[derive(Debug)]
pub(crate) struct UaServer;

impl UaServer {
    pub(crate) fn endpoint(&self) -> String {
        String::new()
    }
    pub(crate) async fn stop(self) {}
}

pub(crate) async fn start_from_spec(
    _spec: &OpcuaServerSpec,
    _devices: &[Arc<Device>],
    _pki: Option<&Path>,
) -> Result<UaServer, String> {
    Err("OPC UA servers are not wired yet".into())
}
