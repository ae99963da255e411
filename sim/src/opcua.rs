//! OPC UA server (async-opcua) serving simulated devices from their live [`Signals`].
//!
//! Each device is an object below Objects (browse name = device name, in [`SIM_NAMESPACE`]);
//! below it, the structure its template's points imply: for a browse path `A/B/C`, objects
//! `A` and `B` and the variable `C`, with the browse names (and namespaces) of the path; for a
//! node id point, a variable with exactly that node id. Every namespace a template uses is
//! registered, so `nsu=` node ids and `<uri>#Name` segments resolve as on a real server.
//!
//! The server does not poll: a task per device copies changes of its [`Signals`] into the
//! address space with a source timestamp (shifted by [`OpcuaSimOptions::clock_offset_ms`] to
//! mimic a device clock), which is what subscriptions report. Signals hold engineering values;
//! the server holds raw values (`(value − offset) / scale`), as the device would.
//!
//! Faults: `Silent` freezes the device's values (nothing is published any more; the session
//! itself keeps answering, since sessions are per server, not per device); `Exceptions` gives
//! every variable of the device a Bad status without a value; `Garbage` gives every variable a
//! ByteString value, which no point expects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use opcua::crypto::{CertificateStore, SecurityPolicy};
use opcua::nodes::{
    ImportedItem, NodeSetImport, NodeSetNamespaceMapper, ObjectBuilder, ReferenceDirection,
    Variable,
};
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager_imports};
use opcua::server::{
    ANONYMOUS_USER_TOKEN_ID, ServerBuilder, ServerEndpoint, ServerHandle, ServerUserToken,
};
use opcua::types::{
    ByteString, DataValue, DateTime, MessageSecurityMode, NodeId, ObjectId, ObjectTypeId,
    QualifiedName, ReferenceTypeId, StatusCode, UAString, VariableTypeId, Variant,
};
use shopfloor_devices::Value;
use shopfloor_devices::point::{NodeRef, OpcuaPoint};
use shopfloor_devices::template::Template;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::signals::{Fault, Signals};

/// Namespace of the simulator's own nodes (device objects, path-created nodes).
pub const SIM_NAMESPACE: &str = "urn:shopfloor:sim";
use shopfloor_devices::point::{UA_NAMESPACE, parse_path};
/// How often a device task looks at its fault mode (fault changes do not wake it).
const FAULT_POLL: Duration = Duration::from_millis(100);
const GARBAGE: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

/// One simulated device of an OPC UA server.
#[derive(Debug, Clone)]
pub struct OpcuaSimDevice {
    /// Browse name of the device's root object.
    pub name: String,
    /// An OPC UA template.
    pub template: Template,
    pub signals: Arc<Signals>,
}

/// How the server presents itself.
#[derive(Debug, Clone)]
pub struct OpcuaSimOptions {
    /// Certificate store; the server certificate is created here if missing, so reusing the
    /// directory across restarts keeps the certificate (as a real device does).
    pub pki_dir: PathBuf,
    /// Host name in the advertised endpoint URLs and the certificate check.
    pub host: String,
    /// User name / password logins, accepted on every endpoint.
    pub users: Vec<(String, String)>,
    /// X.509 certificates (`.der` or `.pem` files) of users who may log in with a certificate
    /// identity, on every endpoint. The server knows a user by the certificate's thumbprint and
    /// checks the token signature made with the user's private key (async-opcua asks for an
    /// RSA-SHA1 signature, its Basic128Rsa15 token policy, whatever the channel's policy).
    /// Empty: no certificate logins are offered.
    pub user_certs: Vec<PathBuf>,
    /// Accept anonymous logins.
    pub anonymous: bool,
    /// Offer Basic256Sha256 Sign and SignAndEncrypt endpoints besides None.
    pub secure_endpoints: bool,
    /// Trust any client certificate (otherwise it lands in `rejected/`).
    pub trust_client_certs: bool,
    /// Added to the source timestamps, to simulate a device clock that is off.
    pub clock_offset_ms: i64,
    /// Prefix of the string ids of path-created nodes. Change it between restarts to simulate
    /// a server that renumbers its nodes (firmware update): browse paths stay, node ids move.
    pub path_id_prefix: String,
}

impl OpcuaSimOptions {
    pub fn new(pki_dir: impl Into<PathBuf>) -> Self {
        OpcuaSimOptions {
            pki_dir: pki_dir.into(),
            host: "127.0.0.1".into(),
            users: Vec::new(),
            user_certs: Vec::new(),
            anonymous: true,
            secure_endpoints: false,
            trust_client_certs: true,
            clock_offset_ms: 0,
            path_id_prefix: String::new(),
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("OPC UA simulator: {0}")]
    Server(String),
    #[error("OPC UA simulator, device `{device}`: {reason}")]
    Device { device: String, reason: String },
    #[error("OPC UA simulator: {0}")]
    Io(#[from] std::io::Error),
}

/// A running OPC UA simulator.
pub struct OpcuaSim {
    handle: ServerHandle,
    server: JoinHandle<Result<(), String>>,
    updaters: Vec<JoinHandle<()>>,
    addr: SocketAddr,
    endpoint: String,
    roots: BTreeMap<String, String>,
}

impl std::fmt::Debug for OpcuaSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpcuaSim")
            .field("endpoint", &self.endpoint)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl OpcuaSim {
    /// `opc.tcp://host:port/`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The listening address (bind it again to restart on the same port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Node id (`nsu=` form) of a device's root object.
    pub fn root_node(&self, device: &str) -> Option<String> {
        self.roots.get(device).cloned()
    }

    /// Closes every session and the listener, and waits until the port is free.
    pub async fn stop(self) {
        for u in &self.updaters {
            u.abort();
        }
        self.handle.cancel();
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            server.abort();
            let _ = server.await;
        }
        for u in self.updaters {
            let _ = u.await;
        }
    }
}

/// Registers namespaces without importing nodes: the simulator's node manager then owns
/// every namespace the templates use, and nodes of any of them can live in one address space.
struct Namespaces(Vec<String>);

impl NodeSetImport for Namespaces {
    fn register_namespaces(&self, map: &mut NodeSetNamespaceMapper) {
        for (i, uri) in self.0.iter().enumerate() {
            map.add_namespace(uri, u16::try_from(i + 1).unwrap_or(u16::MAX));
        }
    }
    fn get_own_namespaces(&self) -> Vec<String> {
        self.0.clone()
    }
    fn load<'a>(
        &'a self,
        _: &'a NodeSetNamespaceMapper,
    ) -> Box<dyn Iterator<Item = ImportedItem> + 'a> {
        Box::new(std::iter::empty())
    }
}

/// `nsu=<uri>;<id>` → (uri, id).
fn split_nsu(text: &str) -> Option<(&str, &str)> {
    let rest = text.trim().strip_prefix("nsu=")?;
    let split = ["i=", "s=", "g=", "b="]
        .iter()
        .filter_map(|t| rest.find(&format!(";{t}")))
        .min()?;
    Some((&rest[..split], &rest[split + 1..]))
}

/// Every namespace URI the devices use, the simulator's first.
fn namespaces(devices: &[OpcuaSimDevice]) -> Result<Vec<String>, SimError> {
    let mut uris = vec![SIM_NAMESPACE.to_string()];
    let mut add = |u: &str| {
        if u != UA_NAMESPACE && !uris.iter().any(|x| x == u) {
            uris.push(u.to_string());
        }
    };
    for d in devices {
        let (points, default_ns) = device_points(d)?;
        if let Some(ns) = &default_ns {
            add(ns);
        }
        for p in &points {
            match &p.node {
                NodeRef::Path(path) => {
                    let segs = parse_path(path, default_ns.as_deref()).map_err(|reason| {
                        SimError::Device {
                            device: d.name.clone(),
                            reason,
                        }
                    })?;
                    for s in segs {
                        if let Some(u) = &s.uri {
                            add(u);
                        }
                    }
                }
                NodeRef::Node(text) => {
                    if let Some((uri, _)) = split_nsu(text) {
                        add(uri);
                    }
                }
            }
        }
    }
    Ok(uris)
}

fn device_points(d: &OpcuaSimDevice) -> Result<(Vec<OpcuaPoint>, Option<String>), SimError> {
    let r = d
        .template
        .resolve_opcua(&Default::default())
        .map_err(|e| SimError::Device {
            device: d.name.clone(),
            reason: e.to_string(),
        })?;
    Ok((r.points, r.namespace))
}

/// The raw value the device holds for an engineering value.
fn raw(p: &OpcuaPoint, v: Value) -> Value {
    if p.scale == 1.0 && p.offset == 0.0 {
        return v;
    }
    let Some(x) = v.as_f64().filter(|_| !matches!(v, Value::Bool(_))) else {
        return v;
    };
    let r = (x - p.offset) / p.scale;
    match v {
        Value::Int(_) if r.fract() == 0.0 && r.abs() < 9.0e18 => Value::Int(r as i64),
        Value::UInt(_) if r.fract() == 0.0 && (0.0..1.8e19).contains(&r) => Value::UInt(r as u64),
        _ => Value::Float(r),
    }
}

fn variant(v: &Value) -> Variant {
    match v {
        Value::Bool(b) => Variant::Boolean(*b),
        Value::Int(i) => Variant::Int64(*i),
        Value::UInt(u) => Variant::UInt64(*u),
        Value::Float(f) => Variant::Double(*f),
        Value::Text(s) => Variant::String(UAString::from(s.as_str())),
    }
}

/// One served variable: which device point feeds it.
#[derive(Debug, Clone)]
struct Served {
    node: NodeId,
    point: OpcuaPoint,
    /// The value the variable was created with.
    initial: Variant,
}

/// Now on the process clock ([`shopfloor_clock::now`], simulated in the demo), as OPC UA time.
fn clock_now() -> DateTime {
    let real = jiff::Timestamp::now();
    let lag_ms = shopfloor_clock::now()
        .duration_since(real)
        .as_millis()
        .clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    DateTime::from(
        DateTime::now()
            .ticks()
            .saturating_add(lag_ms.saturating_mul(10_000)),
    )
}

fn source_time(offset_ms: i64) -> DateTime {
    DateTime::from(
        clock_now()
            .ticks()
            .saturating_add(offset_ms.saturating_mul(10_000)),
    )
}

/// Each device's served variables, and root node ids by device name.
type AddressSpacePlan = (Vec<Vec<Served>>, BTreeMap<String, String>);

/// Builds the address space of all devices.
fn build_address_space(
    nm: &SimpleNodeManager,
    handle: &ServerHandle,
    devices: &[OpcuaSimDevice],
    opts: &OpcuaSimOptions,
) -> Result<AddressSpacePlan, SimError> {
    let index = |uri: &str| -> Result<u16, String> {
        if uri == UA_NAMESPACE {
            return Ok(0);
        }
        handle
            .get_namespace_index(uri)
            .ok_or_else(|| format!("namespace {uri} is not registered"))
    };
    let sim_ns = index(SIM_NAMESPACE).map_err(SimError::Server)?;
    let owned: BTreeSet<u16> = nm.namespaces().keys().copied().collect();
    let mut space = nm.address_space().write();
    let mut served_all = Vec::new();
    let mut roots = BTreeMap::new();
    let comp: NodeId = ReferenceTypeId::HasComponent.into();
    let typedef: NodeId = ReferenceTypeId::HasTypeDefinition.into();
    let data_var: NodeId = VariableTypeId::BaseDataVariableType.into();

    for d in devices {
        let fail = |reason: String| SimError::Device {
            device: d.name.clone(),
            reason,
        };
        if roots.contains_key(&d.name) {
            return Err(fail("two devices with this name".into()));
        }
        let (points, default_ns) = device_points(d)?;
        let root = NodeId::new(sim_ns, d.name.as_str());
        ObjectBuilder::new(
            &root,
            QualifiedName::new(sim_ns, d.name.as_str()),
            d.name.as_str(),
        )
        .organized_by(ObjectId::ObjectsFolder)
        .has_type_definition(ObjectTypeId::BaseObjectType)
        .insert(&mut *space);
        roots.insert(d.name.clone(), format!("nsu={SIM_NAMESPACE};s={}", d.name));

        // Resolve every point to (node id, browse name, parent); parents come first.
        struct Plan {
            node: NodeId,
            browse: QualifiedName,
            parent: NodeId,
            point: Option<usize>,
        }
        let mut plan: Vec<Plan> = Vec::new();
        let mut planned: HashMap<NodeId, usize> = HashMap::new();
        for (k, p) in points.iter().enumerate() {
            match &p.node {
                NodeRef::Path(path) => {
                    let segs = parse_path(path, default_ns.as_deref()).map_err(fail)?;
                    let mut parent = root.clone();
                    let mut key = format!("{}{}", opts.path_id_prefix, d.name);
                    for (j, s) in segs.iter().enumerate() {
                        let ns = match &s.uri {
                            None => 0,
                            Some(u) => index(u).map_err(fail)?,
                        };
                        // Readable, deterministic ids: the same template gives the same ids
                        // on every start, as a real server's do.
                        if s.uri.as_deref() == default_ns.as_deref() {
                            key = format!("{key}/{}", s.name);
                        } else {
                            key = format!("{key}/{ns}:{}", s.name);
                        }
                        let node = NodeId::new(sim_ns, key.as_str());
                        let last = j + 1 == segs.len();
                        match planned.get(&node) {
                            Some(&at) => {
                                if last && plan[at].point.is_none() {
                                    plan[at].point = Some(k);
                                }
                            }
                            None => {
                                planned.insert(node.clone(), plan.len());
                                plan.push(Plan {
                                    node: node.clone(),
                                    browse: QualifiedName::new(ns, s.name.as_str()),
                                    parent: parent.clone(),
                                    point: last.then_some(k),
                                });
                            }
                        }
                        parent = node;
                    }
                }
                NodeRef::Node(text) => {
                    let node = match split_nsu(text) {
                        Some((uri, id)) => {
                            let ns = index(uri).map_err(fail)?;
                            NodeId::from_str(&format!("ns={ns};{id}"))
                        }
                        None => NodeId::from_str(text),
                    }
                    .map_err(|_| fail(format!("point `{}`: invalid node id `{text}`", p.name)))?;
                    if !owned.contains(&node.namespace) {
                        return Err(fail(format!(
                            "point `{}`: node {node} is in namespace {} which the simulator does not serve \
                             (use nsu=<uri>; or one of the indexes {owned:?})",
                            p.name, node.namespace
                        )));
                    }
                    let browse_ns = match &default_ns {
                        Some(u) => index(u).map_err(fail)?,
                        None => sim_ns,
                    };
                    if let Some(&at) = planned.get(&node) {
                        plan[at].point.get_or_insert(k);
                    } else {
                        planned.insert(node.clone(), plan.len());
                        plan.push(Plan {
                            node,
                            browse: QualifiedName::new(browse_ns, p.name.as_str()),
                            parent: root.clone(),
                            point: Some(k),
                        });
                    }
                }
            }
        }

        let mut served = Vec::new();
        for item in &plan {
            let display = item.browse.name.as_ref().to_string();
            match item.point {
                None => {
                    ObjectBuilder::new(&item.node, item.browse.clone(), display.as_str())
                        .component_of(item.parent.clone())
                        .has_type_definition(ObjectTypeId::BaseObjectType)
                        .insert(&mut *space);
                }
                Some(k) => {
                    let p = &points[k];
                    let value = variant(&raw(p, d.signals.get(&p.name).unwrap_or(Value::Int(0))));
                    let mut var = Variable::new(
                        &item.node,
                        item.browse.clone(),
                        display.as_str(),
                        value.clone(),
                    );
                    let now = clock_now();
                    var.set_data_value(DataValue {
                        value: Some(value.clone()),
                        status: Some(StatusCode::Good),
                        source_timestamp: Some(source_time(opts.clock_offset_ms)),
                        server_timestamp: Some(now),
                        ..Default::default()
                    });
                    space.insert(
                        var,
                        Some(&[
                            (&item.parent, &comp, ReferenceDirection::Inverse),
                            (&data_var, &typedef, ReferenceDirection::Forward),
                        ]),
                    );
                    served.push(Served {
                        node: item.node.clone(),
                        point: p.clone(),
                        initial: value,
                    });
                }
            }
        }
        served_all.push(served);
    }
    Ok((served_all, roots))
}

/// Starts an OPC UA server for `devices` on `listener`.
pub async fn start(
    listener: TcpListener,
    devices: Vec<OpcuaSimDevice>,
    opts: OpcuaSimOptions,
) -> Result<OpcuaSim, SimError> {
    let addr = listener.local_addr()?;
    let uris = namespaces(&devices)?;
    // async-opcua skips a user certificate it cannot read (every login with it is then
    // rejected), so read each one here and fail with its path instead.
    let mut cert_users = Vec::with_capacity(opts.user_certs.len());
    for (k, path) in opts.user_certs.iter().enumerate() {
        let cert = CertificateStore::read_cert(path)
            .map_err(|e| SimError::Server(format!("user certificate {}: {e}", path.display())))?;
        let user = cert
            .common_name()
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("certificate user {k}"));
        cert_users.push((user, path.clone()));
    }
    let endpoint = format!("opc.tcp://{}:{}/", opts.host, addr.port());
    let build_opts = opts.clone();
    let discovery = endpoint.clone();
    // Creating the server certificate (first start in a pki dir) is seconds of RSA work.
    let (server, handle) = tokio::task::spawn_blocking(move || {
        let opts = build_opts;
        let mut tokens: Vec<String> = Vec::new();
        if opts.anonymous {
            tokens.push(ANONYMOUS_USER_TOKEN_ID.to_string());
        }
        let mut builder = ServerBuilder::new()
            .application_name("Shopfloor simulator")
            // Not SIM_NAMESPACE: the application URI is namespace 1, owned by the server itself.
            .application_uri("urn:shopfloor:sim:server")
            .product_uri("urn:shopfloor:sim:server")
            .host(opts.host.clone())
            .port(addr.port())
            .pki_dir(&opts.pki_dir)
            .create_sample_keypair(true)
            .trust_client_certs(opts.trust_client_certs)
            .discovery_urls(vec![discovery])
            .with_node_manager(simple_node_manager_imports(
                vec![Box::new(Namespaces(uris))],
                "shopfloor-sim",
            ));
        for (k, (user, pass)) in opts.users.iter().enumerate() {
            let id = format!("user{k}");
            builder = builder.add_user_token(
                &id,
                ServerUserToken::user_pass(user.as_str(), pass.as_str()),
            );
            tokens.push(id);
        }
        for (k, (user, path)) in cert_users.iter().enumerate() {
            let id = format!("cert{k}");
            builder = builder.add_user_token(&id, ServerUserToken::x509(user.as_str(), path));
            tokens.push(id);
        }
        builder = builder.add_endpoint("none", ServerEndpoint::new_none("/", &tokens));
        if opts.secure_endpoints {
            builder = builder
                .add_endpoint(
                    "basic256sha256_sign",
                    ServerEndpoint::new(
                        "/",
                        SecurityPolicy::Basic256Sha256,
                        MessageSecurityMode::Sign,
                        &tokens,
                    ),
                )
                .add_endpoint(
                    "basic256sha256_sign_encrypt",
                    ServerEndpoint::new(
                        "/",
                        SecurityPolicy::Basic256Sha256,
                        MessageSecurityMode::SignAndEncrypt,
                        &tokens,
                    ),
                );
        }
        builder.build()
    })
    .await
    .map_err(|e| SimError::Server(e.to_string()))?
    .map_err(SimError::Server)?;

    let nm = handle
        .node_managers()
        .get_of_type::<SimpleNodeManager>()
        .ok_or_else(|| SimError::Server("no simple node manager".into()))?;
    let (served, roots) = build_address_space(&nm, &handle, &devices, &opts)?;

    let mut updaters = Vec::new();
    for (d, served) in devices.iter().zip(served) {
        updaters.push(tokio::spawn(update_device(
            nm.clone(),
            handle.clone(),
            d.signals.clone(),
            served,
            opts.clock_offset_ms,
        )));
    }
    let server = tokio::spawn(server.run_with(listener));
    Ok(OpcuaSim {
        handle,
        server,
        updaters,
        addr,
        endpoint,
        roots,
    })
}

/// Copies a device's Signals (and fault mode) into the address space whenever they change.
async fn update_device(
    nm: Arc<SimpleNodeManager>,
    handle: ServerHandle,
    signals: Arc<Signals>,
    served: Vec<Served>,
    offset_ms: i64,
) {
    let mut changed = signals.subscribe();
    // What the address space holds now, to publish changes only.
    let mut last: Vec<(Option<Variant>, StatusCode)> = served
        .iter()
        .map(|s| (Some(s.initial.clone()), StatusCode::Good))
        .collect();
    loop {
        let fault = signals.fault();
        if fault != Fault::Silent {
            let now = clock_now();
            let mut batch: Vec<(usize, DataValue)> = Vec::new();
            for (k, s) in served.iter().enumerate() {
                let (value, status) = match fault {
                    // async-opcua drops the status of a variable without a value: use Empty.
                    Fault::Exceptions => (Some(Variant::Empty), StatusCode::BadDeviceFailure),
                    Fault::Garbage => (
                        Some(Variant::ByteString(ByteString::from(GARBAGE.to_vec()))),
                        StatusCode::Good,
                    ),
                    Fault::None | Fault::Silent => {
                        let v = signals.get(&s.point.name).unwrap_or(Value::Int(0));
                        (Some(variant(&raw(&s.point, v))), StatusCode::Good)
                    }
                };
                let now_state = (value, status);
                if last[k] != now_state {
                    let (value, status) = now_state.clone();
                    last[k] = now_state;
                    batch.push((
                        k,
                        DataValue {
                            value,
                            status: Some(status),
                            source_timestamp: Some(source_time(offset_ms)),
                            server_timestamp: Some(now),
                            ..Default::default()
                        },
                    ));
                }
            }
            if !batch.is_empty() {
                for _ in &batch {
                    signals.count_request();
                }
                let updates = batch.into_iter().map(|(k, dv)| (&served[k].node, None, dv));
                if let Err(status) = nm.set_values(handle.subscriptions(), updates) {
                    tracing::warn!(%status, "opc ua sim: cannot update values");
                }
            }
        }
        tokio::select! {
            r = changed.changed() => {
                if r.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep(FAULT_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopfloor_devices::point::Segment;

    #[test]
    fn paths_match_the_agent_syntax() {
        let p = parse_path(
            "Monitoring/http://opcfoundation.org/UA/Machinery/#MachineryItemState/Number",
            Some("urn:a"),
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                Segment {
                    uri: Some("urn:a".into()),
                    name: "Monitoring".into()
                },
                Segment {
                    uri: Some("http://opcfoundation.org/UA/Machinery/".into()),
                    name: "MachineryItemState".into()
                },
                Segment {
                    uri: Some("urn:a".into()),
                    name: "Number".into()
                },
            ]
        );
        assert_eq!(split_nsu("nsu=urn:x;s=a;b"), Some(("urn:x", "s=a;b")));
    }

    #[test]
    fn raw_values_undo_scale_and_offset() {
        let p = OpcuaPoint {
            name: "t".into(),
            node: NodeRef::Node("ns=2;s=t".into()),
            sampling_ms: 0.0,
            queue_size: 1,
            deadband: Default::default(),
            scale: 0.1,
            offset: 0.0,
            unit: None,
        };
        assert_eq!(raw(&p, Value::Float(12.5)), Value::Float(125.0));
        assert_eq!(raw(&p, Value::UInt(12)), Value::UInt(120));
        assert_eq!(raw(&p, Value::Bool(true)), Value::Bool(true));
    }
}
