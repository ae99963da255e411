//! Where points live: node id texts (with `nsu=` namespace URIs) and browse paths, resolved
//! against the server's namespace array on every connect (indexes are not stable across
//! server versions or restarts; URIs are).

use std::str::FromStr;

use opcua::types::{
    BrowsePath, NamespaceMap, NodeId, QualifiedName, ReferenceTypeId, RelativePath,
    RelativePathElement, StatusCode,
};

pub(crate) use shopfloor_devices::point::{Segment, UA_NAMESPACE, parse_path};

/// Parses `ns=2;s=Machine.Run`, `i=2258` or `nsu=<uri>;i=1002` against `ns`.
pub(crate) fn parse_node_id(text: &str, ns: &NamespaceMap) -> Result<NodeId, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("nsu=") {
        // The URI ends at the `;` that starts the identifier; URIs may contain `;` themselves,
        // identifiers always start with one of i= s= g= b=.
        let split = ["i=", "s=", "g=", "b="]
            .iter()
            .filter_map(|t| rest.find(&format!(";{t}")))
            .min()
            .ok_or_else(|| format!("node id `{text}`: expected nsu=<uri>;i=…, s=…, g=… or b=…"))?;
        let (uri, id) = (&rest[..split], &rest[split + 1..]);
        let index = namespace_index(uri, ns)?;
        NodeId::from_str(&format!("ns={index};{id}"))
            .map_err(|_| format!("node id `{text}`: invalid identifier `{id}`"))
    } else {
        NodeId::from_str(text).map_err(|_| {
            format!("node id `{text}`: expected ns=<index>;i=<number> / s=<text> / g=<guid> / b=<base64>, or nsu=<uri>;…")
        })
    }
}

fn namespace_index(uri: &str, ns: &NamespaceMap) -> Result<u16, String> {
    if uri == UA_NAMESPACE {
        return Ok(0);
    }
    ns.get_index(uri)
        .ok_or_else(|| format!("namespace {uri} is not in the server's namespace array"))
}

/// A TranslateBrowsePathsToNodeIds request for `segments` below `start`, following any
/// hierarchical reference (HasComponent, HasProperty, Organizes, …).
pub(crate) fn browse_path(
    start: &NodeId,
    segments: &[Segment],
    ns: &NamespaceMap,
) -> Result<BrowsePath, String> {
    let mut elements = Vec::with_capacity(segments.len());
    for s in segments {
        let index = match &s.uri {
            None => 0,
            Some(uri) => namespace_index(uri, ns)?,
        };
        elements.push(RelativePathElement {
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            is_inverse: false,
            include_subtypes: true,
            target_name: QualifiedName::new(index, s.name.as_str()),
        });
    }
    Ok(BrowsePath {
        starting_node: start.clone(),
        relative_path: RelativePath {
            elements: Some(elements),
        },
    })
}

/// Explains the status codes of a failed translation in plant terms.
pub(crate) fn path_error(status: StatusCode) -> String {
    if status == StatusCode::BadNoMatch {
        "no node at this browse path (check names and namespaces with `browse`)".into()
    } else if status == StatusCode::BadNodeIdUnknown {
        "the root node does not exist".into()
    } else {
        format!("browse path not resolved: {status}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(uri: Option<&str>, name: &str) -> Segment {
        Segment {
            uri: uri.map(str::to_string),
            name: name.into(),
        }
    }

    #[test]
    fn paths_with_uris_containing_slashes() {
        let mt = "http://opcfoundation.org/UA/MachineTool/";
        let p = parse_path(
            "Monitoring/MachineTool/http://opcfoundation.org/UA/Machinery/#MachineryItemState/http://opcfoundation.org/UA/#CurrentState/Number",
            Some(mt),
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                seg(Some(mt), "Monitoring"),
                seg(Some(mt), "MachineTool"),
                seg(
                    Some("http://opcfoundation.org/UA/Machinery/"),
                    "MachineryItemState"
                ),
                seg(None, "CurrentState"),
                seg(Some(mt), "Number"),
            ]
        );
        assert_eq!(
            parse_path("<urn:a/b>#X/Y", None).unwrap(),
            vec![seg(Some("urn:a/b"), "X"), seg(None, "Y")]
        );
        assert_eq!(
            parse_path("urn:vendor:plc#Run", None).unwrap(),
            vec![seg(Some("urn:vendor:plc"), "Run")]
        );
        assert_eq!(
            parse_path("Channel:1/Feed", None).unwrap(),
            vec![seg(None, "Channel:1"), seg(None, "Feed")]
        );
        assert!(parse_path("A//B", None).is_ok());
        assert!(parse_path("", None).is_err());
        assert!(parse_path("http://x/#", None).is_err());
    }

    #[test]
    fn node_ids_with_namespace_uris() {
        let mut ns = NamespaceMap::new();
        ns.add_namespace("urn:x");
        ns.add_namespace("http://opcfoundation.org/UA/Machinery/");
        assert_eq!(
            parse_node_id("ns=1;s=Run", &ns).unwrap(),
            NodeId::new(1, "Run")
        );
        assert_eq!(
            parse_node_id("i=2258", &ns).unwrap(),
            NodeId::new(0, 2258u32)
        );
        assert_eq!(
            parse_node_id("nsu=http://opcfoundation.org/UA/Machinery/;i=1002", &ns).unwrap(),
            NodeId::new(2, 1002u32)
        );
        assert_eq!(
            parse_node_id("nsu=urn:x;s=a;b", &ns).unwrap(),
            NodeId::new(1, "a;b")
        );
        assert!(
            parse_node_id("nsu=urn:missing;i=1", &ns)
                .unwrap_err()
                .contains("urn:missing")
        );
        assert!(parse_node_id("Run", &ns).is_err());
    }
}
