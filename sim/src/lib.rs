//! `shopfloor-sim`: a plant simulator serving Modbus TCP, Modbus RTU over a pseudo-terminal
//! and OPC UA from scripted scenarios. Tests, benchmarks and the demo use it.
//!
//! Layout: [`scenario`] (the file format, validated), [`plant`] (values as a pure function of
//! simulated time), [`signals`] (live values shared with the protocol front ends),
//! [`modbus`] and [`opcua`] (the servers, tokio-modbus and async-opcua).

pub mod modbus;
pub mod opcua;
pub mod plant;
pub mod scenario;
pub mod signals;
mod ua_glue;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use plant::Device;
pub use scenario::{Loaded, Scenario, ScenarioError};
pub use signals::{Fault, Signals};

/// Why the plant could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{server}: {reason}")]
    Server { server: String, reason: String },
    #[error("device `{device}`: {reason}")]
    Device { device: String, reason: String },
}

/// Options that do not belong in a scenario file.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Where OPC UA servers keep their certificates (a temp dir when absent).
    pub pki_dir: Option<PathBuf>,
    /// Simulated time zero on the process clock ([`shopfloor_clock::now`]): when set, the
    /// devices' time is `now − epoch` (the clock's own speed applies, the scenario's
    /// `time_scale` does not), so machine programs follow the time of day and continue across
    /// restarts. When absent, time starts at 0 when the plant starts and runs `time_scale` ×.
    pub epoch: Option<jiff::Timestamp>,
}

/// A running plant.
#[derive(Debug)]
pub struct Plant {
    pub devices: Vec<Arc<Device>>,
    /// Modbus TCP servers: name → bound address.
    pub tcp: Vec<(String, SocketAddr)>,
    /// RTU lines: name → the path clients open.
    pub rtu: Vec<(String, String)>,
    /// OPC UA servers: name → endpoint URL.
    pub opcua: Vec<(String, String)>,
    /// OPC UA devices: name → node id of the device's root object (the agent's `root`).
    pub opcua_roots: Vec<(String, String)>,
    modbus: Vec<modbus::Running>,
    opcua_servers: Vec<ua_glue::UaServer>,
    stop_tick: watch::Sender<bool>,
    ticker: JoinHandle<()>,
}

impl Plant {
    /// Starts every server of the scenario and the clock that drives the devices.
    pub async fn start(loaded: Loaded, opts: StartOptions) -> Result<Plant, StartError> {
        let Loaded {
            scenario,
            templates,
        } = loaded;
        let devices: Vec<Arc<Device>> = scenario
            .devices
            .iter()
            .cloned()
            .zip(templates)
            .map(|(spec, t)| Arc::new(Device::new(spec, t)))
            .collect();
        let epoch = opts.epoch;
        let sim_time = move |t0: tokio::time::Instant, scale: f64| -> f64 {
            match epoch {
                Some(e) => shopfloor_clock::now()
                    .duration_since(e)
                    .as_secs_f64()
                    .max(0.0),
                None => t0.elapsed().as_secs_f64() * scale,
            }
        };
        let t_start = sim_time(tokio::time::Instant::now(), 0.0);
        for d in &devices {
            d.update(t_start);
        }
        let modbus_units = |server: &str| -> Result<modbus::Units, StartError> {
            let mut units = HashMap::new();
            for d in devices.iter().filter(|d| d.spec.server == server) {
                let resolved = d
                    .template
                    .resolve_modbus(&shopfloor_devices::Overrides::default())
                    .map_err(|e| StartError::Device {
                        device: d.spec.name.clone(),
                        reason: e.to_string(),
                    })?;
                units.insert(
                    d.spec.unit,
                    Arc::new(modbus::Unit::new(
                        d.signals.clone(),
                        resolved.points,
                        d.spec.holes,
                    )),
                );
            }
            Ok(modbus::Units::new(units))
        };
        let mut running = Vec::new();
        let mut tcp = Vec::new();
        for s in &scenario.modbus_tcp {
            let err = |reason: String| StartError::Server {
                server: s.name.clone(),
                reason,
            };
            let addr: SocketAddr = s
                .listen
                .parse()
                .map_err(|e| err(format!("listen `{}`: {e}", s.listen)))?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| err(format!("bind {addr}: {e}")))?;
            let r = modbus::serve_tcp(listener, modbus_units(&s.name)?)
                .map_err(|e| err(e.to_string()))?;
            tcp.push((s.name.clone(), r.addr.unwrap_or(addr)));
            running.push(r);
        }
        let mut rtu = Vec::new();
        for s in &scenario.modbus_rtu {
            let err = |reason: String| StartError::Server {
                server: s.name.clone(),
                reason,
            };
            #[cfg(unix)]
            {
                let r = modbus::serve_rtu_pty(modbus_units(&s.name)?, s.link.as_deref())
                    .map_err(|e| err(e.to_string()))?;
                rtu.push((s.name.clone(), r.path.clone().unwrap_or_default()));
                running.push(r);
            }
            #[cfg(not(unix))]
            return Err(err(
                "RTU lines on pseudo-terminals need a Unix system".into()
            ));
        }
        let mut opcua_servers = Vec::new();
        let mut opcua_eps = Vec::new();
        let mut opcua_roots = Vec::new();
        for s in &scenario.opcua {
            let server_devices: Vec<Arc<Device>> = devices
                .iter()
                .filter(|d| d.spec.server == s.name)
                .cloned()
                .collect();
            let sim = ua_glue::start_from_spec(s, &server_devices, opts.pki_dir.as_deref())
                .await
                .map_err(|e| StartError::Server {
                    server: s.name.clone(),
                    reason: e.to_string(),
                })?;
            opcua_eps.push((s.name.clone(), sim.endpoint()));
            for d in &server_devices {
                if let Some(root) = sim.root_node(&d.spec.name) {
                    opcua_roots.push((d.spec.name.clone(), root));
                }
            }
            opcua_servers.push(sim);
        }
        let (stop_tick, mut stop_rx) = watch::channel(false);
        let tick = Duration::from_millis(scenario.tick_ms);
        let scale = scenario.time_scale;
        let ticking = devices.clone();
        let ticker = tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop_rx.changed() => return,
                }
                let t = sim_time(t0, scale);
                for d in &ticking {
                    d.update(t);
                }
            }
        });
        Ok(Plant {
            devices,
            tcp,
            rtu,
            opcua: opcua_eps,
            opcua_roots,
            modbus: running,
            opcua_servers,
            stop_tick,
            ticker,
        })
    }

    /// The live signals of a device by name.
    pub fn signals(&self, device: &str) -> Option<Arc<Signals>> {
        self.devices
            .iter()
            .find(|d| d.spec.name == device)
            .map(|d| d.signals.clone())
    }

    /// The bound address of a Modbus TCP server by name.
    pub fn tcp_addr(&self, server: &str) -> Option<SocketAddr> {
        self.tcp.iter().find(|(n, _)| n == server).map(|(_, a)| *a)
    }

    /// The path of an RTU line by name.
    pub fn rtu_path(&self, line: &str) -> Option<String> {
        self.rtu
            .iter()
            .find(|(n, _)| n == line)
            .map(|(_, p)| p.clone())
    }

    /// The endpoint of an OPC UA server by name.
    pub fn opcua_endpoint(&self, server: &str) -> Option<String> {
        self.opcua
            .iter()
            .find(|(n, _)| n == server)
            .map(|(_, e)| e.clone())
    }

    /// Stops every server and the clock.
    pub async fn stop(self) {
        let _ = self.stop_tick.send(true);
        let _ = self.ticker.await;
        for r in self.modbus {
            r.stop().await;
        }
        for s in self.opcua_servers {
            s.stop().await;
        }
    }
}
