//! `browse`: the commissioning engineer's view of a server, to find the node ids and browse
//! names a template or override needs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, ByteString, NodeClass,
    NodeId, ObjectId, QualifiedName, ReadValueId, ReferenceDescription, ReferenceTypeId,
    TimestampsToReturn, Variant,
};

use super::address::parse_node_id;
use super::config::{OpcuaConfig, OpcuaError};
use super::convert;
use super::session;

/// Nodes listed at most, so that browsing a huge server from its root stays bounded.
const MAX_ENTRIES: usize = 10_000;
const READS_PER_REQUEST: usize = 500;

/// One node of a browse listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowseEntry {
    /// 0 for the start node, 1 for its children, …
    pub depth: usize,
    /// `nsu=<uri>;…` for nodes outside namespace 0 (stable across servers, usable in
    /// templates as is), `i=…` for namespace 0.
    pub node_id: String,
    /// `Name`, or `<ns index>:Name` outside namespace 0.
    pub browse_name: String,
    pub display_name: String,
    /// `Object`, `Variable`, `Method`, …
    pub node_class: String,
    /// The Value attribute of variables, as text.
    pub value: Option<String>,
}

/// Lists the nodes below `start` (default: the Objects folder) down to `depth` levels,
/// following hierarchical references forward, with the values of variables.
pub async fn browse(
    cfg: &OpcuaConfig,
    start: Option<&str>,
    depth: usize,
) -> Result<Vec<BrowseEntry>, OpcuaError> {
    let conn = session::connect(cfg, "shopfloor browse").await?;
    let result = walk(&conn.session, start, depth).await;
    conn.close(cfg.request_timeout).await;
    result
}

fn service(service: &'static str) -> impl Fn(opcua::types::Error) -> OpcuaError {
    move |e| OpcuaError::Service {
        service,
        status: e.status().to_string(),
    }
}

async fn walk(
    session: &Arc<Session>,
    start: Option<&str>,
    depth: usize,
) -> Result<Vec<BrowseEntry>, OpcuaError> {
    let ns = session
        .read_namespace_array()
        .await
        .map_err(service("Read(NamespaceArray)"))?;
    let uris: HashMap<u16, String> = ns
        .known_namespaces()
        .iter()
        .map(|(u, i)| (*i, u.clone()))
        .collect();
    let start_id: NodeId = match start {
        None => ObjectId::ObjectsFolder.into(),
        Some(text) => parse_node_id(text, &ns).map_err(|reason| OpcuaError::Node {
            node: text.to_string(),
            reason,
        })?,
    };
    let first = start_entry(session, &start_id, &uris, start.unwrap_or("Objects")).await?;
    let mut entries = Vec::new();
    let mut ids = Vec::new();
    let mut seen: HashSet<NodeId> = HashSet::from([start_id.clone()]);
    // Depth-first, pre-order: a node is listed when popped, then its children are pushed in
    // reverse, so that the listing reads as a tree.
    let mut stack = vec![(start_id, first)];
    while let Some((id, entry)) = stack.pop() {
        let child_depth = entry.depth + 1;
        entries.push(entry);
        ids.push(id.clone());
        if child_depth > depth || entries.len() + stack.len() >= MAX_ENTRIES {
            continue;
        }
        let refs = match browse_children(session, &id).await {
            Ok(refs) => refs,
            // A node below the start that this user may not browse: list it without children.
            Err(OpcuaError::Node { reason, .. }) if entries.len() > 1 => {
                tracing::debug!(node = %id, %reason, "browse: skipping children");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let mut children = Vec::new();
        for r in refs {
            let Some(child) = r.node_id.try_resolve(&ns).map(|c| c.into_owned()) else {
                continue;
            };
            // References may form cycles (Organizes back up the tree); list each node once.
            if !seen.insert(child.clone()) {
                continue;
            }
            let entry = BrowseEntry {
                depth: child_depth,
                node_id: node_id_text(&child, &uris),
                browse_name: qualified(&r.browse_name),
                display_name: r.display_name.text.value().clone().unwrap_or_default(),
                node_class: format!("{:?}", r.node_class),
                value: None,
            };
            children.push((child, entry));
        }
        stack.extend(children.into_iter().rev());
    }
    read_values(session, &ids, &mut entries).await?;
    Ok(entries)
}

async fn browse_children(
    session: &Arc<Session>,
    node: &NodeId,
) -> Result<Vec<ReferenceDescription>, OpcuaError> {
    let desc = BrowseDescription {
        node_id: node.clone(),
        browse_direction: BrowseDirection::Forward,
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        include_subtypes: true,
        node_class_mask: 0,
        result_mask: BrowseResultMask::All as u32,
    };
    let mut out = Vec::new();
    let mut results = session
        .browse(&[desc], 1000, None)
        .await
        .map_err(service("Browse"))?;
    while let Some(r) = results.pop() {
        if r.status_code.is_bad() {
            return Err(OpcuaError::Node {
                node: node.to_string(),
                reason: format!("cannot browse: {}", r.status_code),
            });
        }
        out.extend(r.references.unwrap_or_default());
        let cp: ByteString = r.continuation_point;
        if cp.is_null() || cp.value.as_ref().is_none_or(Vec::is_empty) {
            break;
        }
        results = session
            .browse_next(false, &[cp])
            .await
            .map_err(service("BrowseNext"))?;
    }
    Ok(out)
}

async fn start_entry(
    session: &Arc<Session>,
    id: &NodeId,
    uris: &HashMap<u16, String>,
    label: &str,
) -> Result<BrowseEntry, OpcuaError> {
    let attrs = [
        AttributeId::BrowseName,
        AttributeId::DisplayName,
        AttributeId::NodeClass,
    ];
    let reads: Vec<ReadValueId> = attrs
        .iter()
        .map(|a| ReadValueId::new(id.clone(), *a))
        .collect();
    let values = session
        .read(&reads, TimestampsToReturn::Neither, 0.0)
        .await
        .map_err(service("Read"))?;
    let get = |k: usize| values.get(k).and_then(|dv| dv.value.clone());
    if values
        .first()
        .and_then(|dv| dv.status)
        .is_some_and(|s| s.is_bad())
    {
        let status = values
            .first()
            .and_then(|dv| dv.status)
            .map(|s| s.to_string())
            .unwrap_or_default();
        return Err(OpcuaError::Node {
            node: label.to_string(),
            reason: format!("cannot read it: {status}"),
        });
    }
    Ok(BrowseEntry {
        depth: 0,
        node_id: node_id_text(id, uris),
        browse_name: match get(0) {
            Some(Variant::QualifiedName(q)) => qualified(&q),
            _ => String::new(),
        },
        display_name: match get(1) {
            Some(Variant::LocalizedText(t)) => t.text.value().clone().unwrap_or_default(),
            _ => String::new(),
        },
        node_class: match get(2) {
            Some(Variant::Int32(c)) => node_class_name(c),
            _ => String::new(),
        },
        value: None,
    })
}

fn node_class_name(c: i32) -> String {
    let class = match c {
        1 => NodeClass::Object,
        2 => NodeClass::Variable,
        4 => NodeClass::Method,
        8 => NodeClass::ObjectType,
        16 => NodeClass::VariableType,
        32 => NodeClass::ReferenceType,
        64 => NodeClass::DataType,
        128 => NodeClass::View,
        _ => NodeClass::Unspecified,
    };
    format!("{class:?}")
}

async fn read_values(
    session: &Arc<Session>,
    ids: &[NodeId],
    entries: &mut [BrowseEntry],
) -> Result<(), OpcuaError> {
    let variables: Vec<usize> = (0..entries.len())
        .filter(|&k| entries[k].node_class == "Variable")
        .collect();
    for chunk in variables.chunks(READS_PER_REQUEST) {
        let reads: Vec<ReadValueId> = chunk
            .iter()
            .map(|&k| ReadValueId::new(ids[k].clone(), AttributeId::Value))
            .collect();
        let values = session
            .read(&reads, TimestampsToReturn::Neither, 0.0)
            .await
            .map_err(service("Read"))?;
        for (&k, dv) in chunk.iter().zip(values.iter()) {
            entries[k].value = Some(match (&dv.value, dv.status) {
                (_, Some(s)) if s.is_bad() => format!("<{s}>"),
                (Some(v), _) => convert::display(v),
                (None, _) => String::new(),
            });
        }
    }
    Ok(())
}

fn qualified(q: &QualifiedName) -> String {
    q.to_string()
}

fn node_id_text(id: &NodeId, uris: &HashMap<u16, String>) -> String {
    match uris.get(&id.namespace) {
        Some(uri) if id.namespace != 0 => format!("nsu={uri};{}", id.identifier),
        _ => id.to_string(),
    }
}
