//! Starts the OPC UA servers of a scenario on the simulator's OPC UA front end.

use std::path::Path;
use std::sync::Arc;

use crate::opcua::{OpcuaSim, OpcuaSimDevice, OpcuaSimOptions, SimError};
use crate::plant::Device;
use crate::scenario::OpcuaServerSpec;

pub(crate) type UaServer = OpcuaSim;

pub(crate) async fn start_from_spec(
    spec: &OpcuaServerSpec,
    devices: &[Arc<Device>],
    pki: Option<&Path>,
) -> Result<UaServer, SimError> {
    let addr: std::net::SocketAddr = spec
        .listen
        .parse()
        .map_err(|e| SimError::Server(format!("listen `{}`: {e}", spec.listen)))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // One certificate store per server, kept across runs so clients trust it once.
    let pki_dir = match pki {
        Some(p) => p.join(&spec.name),
        None => std::env::temp_dir()
            .join("shopfloor-sim-pki")
            .join(&spec.name),
    };
    let mut opts = OpcuaSimOptions::new(pki_dir);
    opts.host = addr.ip().to_string();
    opts.secure_endpoints = spec.secure;
    opts.users = spec
        .users
        .iter()
        .map(|u| (u.user.clone(), u.password.clone()))
        .collect();
    opts.user_certs = spec.user_certs.clone();
    let served = devices
        .iter()
        .map(|d| OpcuaSimDevice {
            name: d.spec.name.clone(),
            template: d.template.clone(),
            signals: d.signals.clone(),
        })
        .collect();
    crate::opcua::start(listener, served, opts).await
}
