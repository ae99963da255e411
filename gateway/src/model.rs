//! Registry documents: what the gateway knows about entities, agents, products and plan
//! targets. Stored as JSON documents (`shopfloor_store::RegistryItem.doc`, kind = the
//! `KIND_*` constant), loaded from `configs/registry/*.toml` and edited through the API; every
//! struct rejects unknown fields. Validation rules live in `registry.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shopfloor_core::evidence::{Baseline, Certification, Control, IndustryMode};
use shopfloor_core::targets::Target;

pub const KIND_ENTITY: &str = "entity";
pub const KIND_AGENT: &str = "agent";
pub const KIND_PRODUCT: &str = "product";
pub const KIND_TARGET: &str = "target";

/// What an entity is. Its path depth must match: park 1, enterprise 2, workshop 3, line 4,
/// equipment and meters 5 (a meter may also hang directly under an enterprise or workshop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Park,
    Enterprise,
    Workshop,
    Line,
    Equipment,
    Meter,
}

/// One node of the park → enterprise → workshop → line → equipment tree, or a meter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    /// Entity path (`p1/e1/w1/l1/cnc-01`): segments of lower-case letters, digits, `_`, `-`.
    pub id: String,
    pub kind: EntityKind,
    /// Display names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_zh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_en: Option<String>,

    // --- park, enterprise ---
    /// Administrative region (e.g. `重庆市两江新区`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Enterprise: land area (m²), used when no economic input gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub land_area_m2: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry_mode: Option<IndustryMode>,
    /// Industry key for assessment thresholds (docs/ENGINE.md §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    /// Coefficient overrides for this enterprise's meters (`natural_gas_kgce_per_m3`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub coefficient_overrides: BTreeMap<String, f64>,
    /// Enterprise or workshop certifications (digital workshop, smart factory, green factory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certifications: Vec<Certification>,
    /// Comparison values for the `_change` indicators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,

    // --- equipment ---
    /// Equipment kind (`cnc`, `robot`, `press`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equipment_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<Control>,
    /// The key process the equipment serves (`machining`, …); absent: not a key process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_process: Option<String>,
    /// Product made (its counters `produced`/`good` count this product).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Configured data points (for `data_auto_collection_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_points: Option<u64>,

    // --- meter ---
    /// Carrier (`electricity`, `natural_gas`, `water`, …) and unit of the readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub renewable: bool,
    /// The meter this one is a sub-meter of (left out of totals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// An agent allowed to publish, with its public key and the entity subtrees it may report for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Agent id (as in its configuration and MQTT topic).
    pub id: String,
    /// `ed25519:<base64>`, as printed by `shopfloor-agent key show`: the key the agent signs
    /// with now.
    pub public_key: String,
    /// Keys replaced by a rotation, each still accepted for batches *received* before its
    /// `until` (the overlap window that lets sealed batches in the agent's outbox drain). After
    /// `until` a batch signed with it is quarantined (`expired_key`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_keys: Vec<RetiredKey>,
    /// Keys withdrawn because they may be in other hands: a batch signed with one is
    /// quarantined (`revoked_key`) whenever it arrives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_keys: Vec<String>,
    /// Entity paths whose devices this agent may report (a device outside is quarantined).
    pub scope: Vec<String>,
    /// A revoked agent's batches are quarantined (`revoked_agent`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

/// A key an agent signed with before a rotation, and the end of its overlap window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredKey {
    /// `ed25519:<base64>`.
    pub public_key: String,
    /// RFC 3339 instant: batches received from then on are not accepted with this key.
    pub until: String,
}

/// A product with its ideal cycle time and value added per unit.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_zh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_en: Option<String>,
    /// Seconds per part at ideal speed (> 0).
    pub ideal_cycle_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_added_per_unit_cny: Option<f64>,
}

/// Economic inputs of one entity (enterprise, or workshop/park where meaningful) for a period;
/// the body of `POST /api/v1/inputs` and one row of a CSV/XLSX import. Every value field is
/// optional; flows (value added, output, waste, unmetered water) add up over periods, stocks
/// (employees, land) are time-weighted / latest (docs/GATEWAY.md).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EconomicInputs {
    pub entity: String,
    /// RFC 3339 with offset, `from < to`.
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_added_cny: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_output_cny: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employees_avg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub land_area_m2: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solid_waste_generated_t: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solid_waste_utilized_t: Option<f64>,
    /// Water drawn from sources without a meter (m³).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmetered_water_m3: Option<f64>,
}

/// API roles, from least to most privileged in what they may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Engineer,
    Auditor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Engineer => "engineer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Engineer, Role::Auditor, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The whole registry at one moment, as the ingest, evidence and API code read it (rebuilt
/// after every change; readers hold an `Arc` to a consistent snapshot).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub entities: BTreeMap<String, Entity>,
    pub agents: BTreeMap<String, Agent>,
    pub products: BTreeMap<String, Product>,
    pub targets: Vec<Target>,
}
