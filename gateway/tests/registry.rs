//! The registry: the example `configs/registry` loads and matches the example agent; every
//! validation rule rejects a broken file with `file: path: reason`; syncing files into the
//! store is idempotent, audited as `file:<path>`, keeps API-only items and writes nothing when
//! a file is invalid; API changes are validated in the context of the stored registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use shopfloor_gateway::db::Db;
use shopfloor_gateway::ingest::Trust;
use shopfloor_gateway::model::EntityKind;
use shopfloor_gateway::registry::{self, Registry, RegistryError, SyncReport};
use shopfloor_store::{AuditFilter, Store};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A valid key (what `shopfloor-agent key show` prints).
fn key() -> String {
    let sk = shopfloor_core::batch::SigningKey::from_bytes(&[7u8; 32]);
    shopfloor_core::batch::public_key_text(&sk.verifying_key())
}

const ENTITIES: &str = r#"
[[entity]]
id = "p1"
kind = "park"

[[entity]]
id = "p1/e1"
kind = "enterprise"

[[entity]]
id = "p1/e1/w1"
kind = "workshop"

[[entity]]
id = "p1/e1/w1/l1"
kind = "line"

[[entity]]
id = "p1/e1/w1/l1/cnc-01"
kind = "equipment"
equipment_kind = "cnc"
control = "cnc"
product = "shaft-a"

[[entity]]
id = "p1/e1/w1/m-main"
kind = "meter"
carrier = "electricity"
unit = "kWh"
"#;

const PRODUCTS: &str = "[[product]]\nid = \"shaft-a\"\nideal_cycle_s = 40.0\n";

fn agents() -> String {
    format!(
        "[[agent]]\nid = \"w1-agent\"\npublic_key = \"{}\"\nscope = [\"p1/e1/w1\"]\n",
        key()
    )
}

/// Writes a registry directory with the given files (None: the valid default).
fn write(
    dir: &Path,
    entities: Option<&str>,
    products: Option<&str>,
    agents_toml: Option<&str>,
) -> PathBuf {
    let reg = dir.join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    std::fs::write(reg.join("entities.toml"), entities.unwrap_or(ENTITIES)).unwrap();
    std::fs::write(reg.join("products.toml"), products.unwrap_or(PRODUCTS)).unwrap();
    std::fs::write(
        reg.join("agents.toml"),
        agents_toml.map_or_else(agents, str::to_owned),
    )
    .unwrap();
    reg
}

/// The errors of checking the files (panics if they are valid).
fn errors(
    entities: Option<&str>,
    products: Option<&str>,
    agents_toml: Option<&str>,
) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let reg = write(dir.path(), entities, products, agents_toml);
    match registry::check_files(Some(&reg), None) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// The default entities plus one more table.
fn plus(extra: &str) -> String {
    format!("{ENTITIES}\n{extra}")
}

#[track_caller]
fn assert_has(errors: &[String], want: &str) {
    assert!(
        errors.iter().any(|e| e == want),
        "expected {want:?} among {errors:#?}"
    );
}

#[test]
fn the_valid_base_loads() {
    let dir = tempfile::tempdir().unwrap();
    let reg = write(dir.path(), None, None, None);
    let snap = registry::check_files(Some(&reg), None).unwrap();
    assert_eq!(snap.entities.len(), 6);
    assert_eq!(snap.agents.len(), 1);
    assert_eq!(snap.products.len(), 1);
}

#[test]
fn the_example_registry_loads_and_matches_the_example_agent() {
    let root = repo();
    let snap = registry::check_files(
        Some(&root.join("configs/registry")),
        Some(&root.join("configs/targets.toml")),
    )
    .unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(!snap.targets.is_empty());
    // Every device of the example agent is an equipment or a meter of the registry, with the
    // agent's product and key process; every product has the agent's ideal cycle.
    let text = std::fs::read_to_string(root.join("configs/agent.example.toml")).unwrap();
    let agent: toml::Value = toml::from_str(&text).unwrap();
    let devices = agent["device"].as_array().unwrap();
    assert_eq!(devices.len(), 8);
    for d in devices {
        let id = d["id"].as_str().unwrap();
        let e = snap
            .entities
            .get(id)
            .unwrap_or_else(|| panic!("device {id} is not an entity"));
        assert!(
            matches!(e.kind, EntityKind::Equipment | EntityKind::Meter),
            "{id}"
        );
        assert_eq!(
            e.product.as_deref(),
            d.get("product").and_then(|v| v.as_str()),
            "{id} product"
        );
        assert_eq!(
            e.key_process.as_deref(),
            d.get("key_process").and_then(|v| v.as_str()),
            "{id} key process"
        );
    }
    for p in agent["product"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        let reg = &snap.products[id];
        assert_eq!(
            reg.ideal_cycle_s,
            p["ideal_cycle_s"].as_float().unwrap(),
            "{id}"
        );
        assert_eq!(
            reg.value_added_per_unit_cny,
            p.get("value_added_per_unit_cny").and_then(|v| v.as_float())
        );
    }
    // The agents file documents how to register the agent but trusts nobody by default.
    assert!(snap.agents.is_empty());
    let agents = std::fs::read_to_string(root.join("configs/registry/agents.toml")).unwrap();
    assert!(agents.contains("shopfloor-agent key show --config configs/agent.example.toml"));
    // The scope the commented block names exists.
    assert!(
        snap.entities
            .contains_key(agent["agent"]["workshop"].as_str().unwrap())
    );
}

#[test]
fn paths_and_depths() {
    let e = errors(
        Some(&plus("[[entity]]\nid = \"p1/E1\"\nkind = \"enterprise\"\n")),
        None,
        None,
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[6].id: \"p1/E1\": segments are made of a-z, 0-9, _ and -"]
    );
    let e = errors(
        Some(&plus("[[entity]]\nid = \"p1//x\"\nkind = \"enterprise\"\n")),
        None,
        None,
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[6].id: \"p1//x\": empty path segment"]
    );
    let e = errors(
        Some(&plus("[[entity]]\nid = \"p1/e2\"\nkind = \"workshop\"\n")),
        None,
        None,
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[6].kind: A workshop has a path of 3 segments; \"p1/e2\" has 2"]
    );
    let e = errors(
        Some(&plus(
            "[[entity]]\nid = \"p1/e1/w1/l1/cnc-01/x\"\nkind = \"equipment\"\n",
        )),
        None,
        None,
    );
    assert!(
        e[0].starts_with("entities.toml: entity[6].id: \"p1/e1/w1/l1/cnc-01/x\" has 6 segments"),
        "{e:?}"
    );
    // A meter under a park (depth 2).
    let e = errors(
        Some(&plus(
            "[[entity]]\nid = \"p1/m\"\nkind = \"meter\"\ncarrier = \"water\"\nunit = \"m3\"\n",
        )),
        None,
        None,
    );
    assert_eq!(
        e,
        vec![
            "entities.toml: entity[6].kind: A meter has a path of 3 to 5 segments (under an enterprise, workshop or line); \"p1/m\" has 2"
        ]
    );
}

#[test]
fn parents_and_duplicates() {
    let e = errors(
        Some(
            "[[entity]]\nid = \"p1\"\nkind = \"park\"\n\n[[entity]]\nid = \"p1/e1\"\nkind = \"enterprise\"\n\n\
             [[entity]]\nid = \"p1/e1/w1\"\nkind = \"workshop\"\n\n[[entity]]\nid = \"p1/e9/w2\"\nkind = \"workshop\"\n",
        ),
        Some(""),
        Some(""),
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[3].id: parent p1/e9 is not an entity"]
    );
    // A child of a meter.
    let e = errors(
        Some(&plus(
            "[[entity]]\nid = \"p1/e1/w1/m-main/x\"\nkind = \"equipment\"\nequipment_kind = \"cnc\"\ncontrol = \"cnc\"\n",
        )),
        None,
        None,
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[6].id: parent p1/e1/w1/m-main is a meter, not a line"]
    );
    let e = errors(
        Some(&plus("[[entity]]\nid = \"p1/e1\"\nkind = \"enterprise\"\n")),
        None,
        None,
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[6].id: duplicate id \"p1/e1\" (also entities.toml: entity[1])"]
    );
    let e = errors(None, Some(&format!("{PRODUCTS}{PRODUCTS}")), None);
    assert_eq!(
        e,
        vec![
            "products.toml: product[1].id: duplicate id \"shaft-a\" (also products.toml: product[0])"
        ]
    );
}

#[test]
fn equipment_rules() {
    let e = errors(
        Some(&ENTITIES.replace("product = \"shaft-a\"", "product = \"nope\"")),
        None,
        None,
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[4].product: \"nope\" is not a product"]
    );
    let e = errors(
        Some(&ENTITIES.replace("equipment_kind = \"cnc\"\ncontrol = \"cnc\"\n", "")),
        None,
        None,
    );
    assert_eq!(
        e,
        vec![
            "entities.toml: entity[4].equipment_kind: required for equipment (cnc, robot, press, …)",
            "entities.toml: entity[4].control: required for equipment: cnc, plc, dcs, robot or manual",
        ]
    );
    // Attributes of another kind.
    let e = errors(
        Some(&ENTITIES.replace(
            "control = \"cnc\"",
            "control = \"cnc\"\ncarrier = \"water\"",
        )),
        None,
        None,
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[4].carrier: only meter entities have it, this is an equipment"]
    );
    let e = errors(
        Some(&ENTITIES.replace("kind = \"line\"", "kind = \"line\"\nland_area_m2 = 5.0")),
        None,
        None,
    );
    assert_eq!(
        e,
        vec![
            "entities.toml: entity[3].land_area_m2: only enterprise entities have it, this is a line"
        ]
    );
}

#[test]
fn meter_rules() {
    let meter = |body: &str| {
        plus(&format!(
            "[[entity]]\nid = \"p1/e1/w1/l1/m2\"\nkind = \"meter\"\n{body}"
        ))
    };
    let e = errors(
        Some(&meter("carrier = \"plasma\"\nunit = \"kWh\"\n")),
        None,
        None,
    );
    assert!(
        e[0].starts_with(
            "entities.toml: entity[6].carrier: \"plasma\" is not a known carrier (known: "
        ),
        "{e:?}"
    );
    assert_eq!(e.len(), 1);
    let e = errors(
        Some(&meter("carrier = \"electricity\"\nunit = \"m3\"\n")),
        None,
        None,
    );
    assert_eq!(
        e,
        vec![
            "entities.toml: entity[6].unit: \"m3\" cannot be converted to kWh (the unit of electricity)"
        ]
    );
    let e = errors(Some(&meter("carrier = \"electricity\"\n")), None, None);
    assert_eq!(
        e,
        vec![
            "entities.toml: entity[6].unit: required for a meter: the unit of its readings (e.g. kWh, Wh, m3, t, GJ)"
        ]
    );
    // Units the engine converts are accepted (MWh, Wh).
    let dir = tempfile::tempdir().unwrap();
    let reg = write(
        dir.path(),
        Some(&meter(
            "carrier = \"electricity\"\nunit = \"MWh\"\nparent = \"p1/e1/w1/m-main\"\n",
        )),
        None,
        None,
    );
    registry::check_files(Some(&reg), None).unwrap();
    // Sub-meters.
    let e = errors(
        Some(&meter(
            "carrier = \"electricity\"\nunit = \"Wh\"\nparent = \"p1/e1/w1/l1\"\n",
        )),
        None,
        None,
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[6].parent: \"p1/e1/w1/l1\" is not a meter"]
    );
    let e = errors(
        Some(&meter(
            "carrier = \"water\"\nunit = \"m3\"\nparent = \"p1/e1/w1/m-main\"\n",
        )),
        None,
        None,
    );
    assert_eq!(
        e,
        vec![
            "entities.toml: entity[6].parent: p1/e1/w1/m-main measures electricity, this meter water: a sub-meter measures its parent's carrier"
        ]
    );
    let e = errors(
        Some(&meter(
            "carrier = \"water\"\nunit = \"m3\"\nparent = \"p1/e1/w1/l1/m2\"\n",
        )),
        None,
        None,
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[6].parent: a meter cannot be its own parent"]
    );
    let cycle = ENTITIES.replace(
        "unit = \"kWh\"",
        "unit = \"kWh\"\nparent = \"p1/e1/w1/l1/m2\"",
    );
    let e = errors(
        Some(&format!(
            "{cycle}\n[[entity]]\nid = \"p1/e1/w1/l1/m2\"\nkind = \"meter\"\ncarrier = \"electricity\"\nunit = \"kWh\"\nparent = \"p1/e1/w1/m-main\"\n"
        )),
        None,
        None,
    );
    assert_has(
        &e,
        "entities.toml: entity[5].parent: the chain of parent meters from p1/e1/w1/l1/m2 comes back here",
    );
    assert_has(
        &e,
        "entities.toml: entity[6].parent: the chain of parent meters from p1/e1/w1/m-main comes back here",
    );
}

#[test]
fn number_rules() {
    let e = errors(
        None,
        Some(
            "[[product]]\nid = \"shaft-a\"\nideal_cycle_s = 0.0\nvalue_added_per_unit_cny = -1.0\n",
        ),
        None,
    );
    assert_eq!(
        e,
        vec![
            "products.toml: product[0].ideal_cycle_s: must be a finite number > 0, got 0",
            "products.toml: product[0].value_added_per_unit_cny: must be ≥ 0, got -1",
        ]
    );
    let e = errors(
        None,
        Some("[[product]]\nid = \"shaft-a\"\nideal_cycle_s = nan\n"),
        None,
    );
    assert_eq!(
        e,
        vec!["products.toml: product[0].ideal_cycle_s: must be a finite number > 0, got NaN"]
    );
    let e = errors(
        Some(&ENTITIES.replace(
            "kind = \"enterprise\"",
            "kind = \"enterprise\"\nland_area_m2 = inf",
        )),
        None,
        None,
    );
    assert_eq!(
        e,
        vec!["entities.toml: entity[1].land_area_m2: must be a finite number, got inf"]
    );
    let e = errors(
        Some(&ENTITIES.replace("kind = \"enterprise\"", "kind = \"enterprise\"\ncoefficient_overrides = { natural_gas_kgce_per_m3 = -1.0, steam_per_t = 1.0 }")),
        None,
        None,
    );
    assert_eq!(
        e,
        vec![
            "entities.toml: entity[1].coefficient_overrides.natural_gas_kgce_per_m3: must be a finite number > 0, got -1",
            "entities.toml: entity[1].coefficient_overrides.steam_per_t: unknown override key; expected <carrier>_kgce_per_<unit> or <carrier>_kgco2_per_<unit>, e.g. natural_gas_kgce_per_m3",
        ]
    );
    let e = errors(
        Some(&ENTITIES.replace("kind = \"workshop\"", "kind = \"workshop\"\nbaseline = { defect_rate = -0.1 }\ncertifications = [{ kind = \"digital_workshop\", since = \"last year\" }]")),
        None,
        None,
    );
    assert_eq!(
        e,
        vec![
            "entities.toml: entity[2].baseline.defect_rate: must be ≥ 0, got -0.1",
            "entities.toml: entity[2].certifications[0].since: \"last year\" is neither a date (YYYY-MM-DD) nor an RFC 3339 time with offset",
        ]
    );
}

#[test]
fn agent_rules() {
    let e = errors(
        None,
        None,
        Some("[[agent]]\nid = \"a1\"\npublic_key = \"ed25519:AAAA\"\nscope = [\"p1/e9\"]\n"),
    );
    assert_eq!(
        e,
        vec![
            "agents.toml: agent[0].public_key: must be 32 bytes, got 3",
            "agents.toml: agent[0].scope[0]: p1/e9 is not an entity",
        ]
    );
    let e = errors(
        None,
        None,
        Some(&format!(
            "[[agent]]\nid = \"a/1\"\npublic_key = \"{}\"\nscope = []\n",
            key()
        )),
    );
    assert_eq!(
        e,
        vec![
            "agents.toml: agent[0].id: '/' is not allowed in an agent id (it is an MQTT topic level)",
            "agents.toml: agent[0].scope: name at least one entity whose devices the agent reports",
        ]
    );
    // Rotation and revocation lists: keys parse, no key twice, `until` is an instant, the
    // current key is never revoked.
    let other = {
        let sk = shopfloor_core::batch::SigningKey::from_bytes(&[8u8; 32]);
        shopfloor_core::batch::public_key_text(&sk.verifying_key())
    };
    let e = errors(
        None,
        None,
        Some(&format!(
            "[[agent]]\nid = \"a1\"\npublic_key = \"{k}\"\nscope = [\"p1/e1/w1\"]\n\
             revoked_keys = [\"{k}\", \"ed25519:AAAA\"]\n\
             [[agent.previous_keys]]\npublic_key = \"{k}\"\nuntil = \"tomorrow\"\n\
             [[agent.previous_keys]]\npublic_key = \"{o}\"\nuntil = \"2026-11-22T08:00:00+08:00\"\n",
            k = key(),
            o = other
        )),
    );
    assert_eq!(
        e,
        vec![
            "agents.toml: agent[0].previous_keys[0].public_key: listed twice, or equal to the current public_key",
            "agents.toml: agent[0].previous_keys[0].until: tomorrow is not an RFC 3339 instant with offset (failed to parse four digit integer as year: invalid digit, expected 0-9 but got t)",
            "agents.toml: agent[0].revoked_keys[0]: is the current public_key: rotate to a new key first (shopfloor-gateway agents rotate --revoke-old)",
            "agents.toml: agent[0].revoked_keys[1]: must be 32 bytes, got 3",
        ]
    );
    let e = errors(None, None, Some(&format!("{}{}", agents(), agents())));
    assert_eq!(
        e,
        vec!["agents.toml: agent[1].id: duplicate id \"w1-agent\" (also agents.toml: agent[0])"]
    );
}

#[test]
fn syntax_and_unknown_fields() {
    let e = errors(
        Some(&ENTITIES.replace("kind = \"line\"", "kind = \"line\"\ncolour = \"red\"")),
        None,
        None,
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("entities.toml: entity[3]"), "{e:?}");
    assert!(e[0].contains("unknown field `colour`"), "{e:?}");
    let e = errors(
        Some(&ENTITIES.replace("kind = \"line\"", "kind = \"lane\"")),
        None,
        None,
    );
    assert!(
        e[0].starts_with("entities.toml: entity[3].kind: unknown variant `lane`"),
        "{e:?}"
    );
    let e = errors(Some("[[entity]\n"), None, None);
    assert!(e[0].starts_with("entities.toml: "), "{e:?}");
    // Targets file problems carry the targets file's name.
    let dir = tempfile::tempdir().unwrap();
    let reg = write(dir.path(), None, None, None);
    let targets = dir.path().join("targets.toml");
    std::fs::write(
        &targets,
        "[[target]]\nid = \"t\"\nindicator = \"key_process_nc_rate\"\nscope = \"region\"\ncomparison = \"ge\"\n\
         value = 0.55\nunit = \"%\"\nyear = 2020\nseed = \"001:131\"\nname_zh = \"x\"\n",
    )
    .unwrap();
    let e: Vec<String> = registry::check_files(Some(&reg), Some(&targets))
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        e,
        vec!["targets.toml: target[0].unit: \"%\" is not the unit of key_process_nc_rate (ratio)"]
    );
    // A missing registry directory.
    let e = registry::check_files(Some(&dir.path().join("nope")), None).unwrap_err();
    assert_eq!(e[0].reason, "registry directory does not exist");
}

// ---------------------------------------------------------------------------------------------
// With a store
// ---------------------------------------------------------------------------------------------

async fn open(dir: &Path) -> Db {
    Db::open(
        &format!("sqlite://{}", dir.join("gateway.db").display()),
        None,
    )
    .await
    .unwrap()
}

async fn audit_count(db: &Db) -> usize {
    db.audit(&AuditFilter {
        kind_prefix: Some("registry".into()),
        item: None,
        since: None,
        limit: 10_000,
    })
    .await
    .unwrap()
    .len()
}

#[tokio::test]
async fn sync_is_idempotent_audited_and_keeps_api_items() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path()).await;
    let reg_dir = write(dir.path(), None, None, None);
    let reg = Registry::load(db.clone(), Arc::new(Trust::new()))
        .await
        .unwrap();
    assert!(reg.snapshot().entities.is_empty());

    let r = reg.sync_files(Some(&reg_dir), None, 1_000).await.unwrap();
    assert_eq!(
        r,
        SyncReport {
            added: 8,
            changed: 0,
            unchanged: 0,
            kept: 0
        }
    );
    assert_eq!(reg.snapshot().entities.len(), 6);
    assert_eq!(reg.snapshot().agents.len(), 1);
    assert_eq!(audit_count(&db).await, 8);
    let item = db
        .registry_get("entity", "p1/e1/w1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        item.updated_by,
        format!("file:{}", reg_dir.join("entities.toml").display())
    );

    // Again: nothing written.
    let r = reg.sync_files(Some(&reg_dir), None, 2_000).await.unwrap();
    assert_eq!(
        r,
        SyncReport {
            added: 0,
            changed: 0,
            unchanged: 8,
            kept: 0
        }
    );
    assert_eq!(audit_count(&db).await, 8);

    // An item added through the API is kept by the next sync.
    reg.put(
        "product",
        json!({"id": "flange-b", "ideal_cycle_s": 60.0}),
        "token:admin",
    )
    .await
    .unwrap();
    // One changed item: one audit entry with before and after.
    std::fs::write(
        reg_dir.join("products.toml"),
        PRODUCTS.replace("40.0", "42.0"),
    )
    .unwrap();
    let r = reg.sync_files(Some(&reg_dir), None, 3_000).await.unwrap();
    assert_eq!(
        r,
        SyncReport {
            added: 0,
            changed: 1,
            unchanged: 7,
            kept: 1
        }
    );
    assert!(reg.snapshot().products.contains_key("flange-b"));
    assert_eq!(reg.snapshot().products["shaft-a"].ideal_cycle_s, 42.0);
    let entries = db
        .audit(&AuditFilter {
            kind_prefix: Some("registry.product".into()),
            item: Some("shaft-a".into()),
            since: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let newest = &entries[0];
    assert_eq!(newest.before["ideal_cycle_s"], json!(40.0));
    assert_eq!(newest.after["ideal_cycle_s"], json!(42.0));
    assert_eq!(
        newest.actor,
        format!("file:{}", reg_dir.join("products.toml").display())
    );

    // An invalid file: nothing written, every problem reported.
    std::fs::write(
        reg_dir.join("products.toml"),
        "[[product]]\nid = \"shaft-a\"\nideal_cycle_s = -1.0\n",
    )
    .unwrap();
    std::fs::write(
        reg_dir.join("entities.toml"),
        ENTITIES.replace("kind = \"line\"", "kind = \"line\"\nname_en = \"renamed\""),
    )
    .unwrap();
    let e = reg
        .sync_files(Some(&reg_dir), None, 4_000)
        .await
        .unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        e[0].to_string(),
        "products.toml: product[0].ideal_cycle_s: must be a finite number > 0, got -1"
    );
    assert_eq!(audit_count(&db).await, 10);
    assert!(reg.snapshot().entities["p1/e1/w1/l1"].name_en.is_none());

    // A file item that needs an API-only item: the merged registry is what counts.
    std::fs::write(reg_dir.join("products.toml"), PRODUCTS).unwrap();
    std::fs::write(
        reg_dir.join("entities.toml"),
        ENTITIES.replace("product = \"shaft-a\"", "product = \"flange-b\""),
    )
    .unwrap();
    reg.sync_files(Some(&reg_dir), None, 5_000).await.unwrap();

    // A fresh registry over the same store sees the same items.
    let again = Registry::load(db.clone(), Arc::new(Trust::new()))
        .await
        .unwrap();
    assert_eq!(again.snapshot().entities.len(), 6);
    assert_eq!(again.snapshot().products.len(), 2);
}

#[tokio::test]
async fn api_changes_are_validated_in_context() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path()).await;
    let reg_dir = write(dir.path(), None, None, None);
    let reg = Registry::load(db.clone(), Arc::new(Trust::new()))
        .await
        .unwrap();
    reg.sync_files(Some(&reg_dir), None, 1_000).await.unwrap();

    let invalid = |r: Result<_, RegistryError>| match r {
        Err(RegistryError::Invalid(m)) => m,
        other => panic!("expected invalid, got {other:?}"),
    };
    // A new equipment needs its parent and its product.
    let m = invalid(
        reg.put(
            "entity",
            json!({"id": "p1/e1/w1/l9/cnc-09", "kind": "equipment", "equipment_kind": "cnc", "control": "cnc", "product": "x"}),
            "t",
        )
        .await,
    );
    assert_eq!(
        m,
        vec![
            "id: parent p1/e1/w1/l9 is not an entity",
            "product: \"x\" is not a product"
        ]
    );
    // Unknown fields and wrong types name the field.
    let m = invalid(
        reg.put("product", json!({"id": "p", "ideal_cycle_s": "fast"}), "t")
            .await,
    );
    assert_eq!(m.len(), 1);
    assert!(m[0].starts_with("ideal_cycle_s: invalid type"), "{m:?}");
    let m = invalid(
        reg.put(
            "product",
            json!({"id": "p", "ideal_cycle_s": 1.0, "colour": 1}),
            "t",
        )
        .await,
    );
    assert!(
        m[0].starts_with("colour: unknown field") || m[0].contains("unknown field `colour`"),
        "{m:?}"
    );
    // A change that breaks another item is refused and names it.
    let m = invalid(
        reg.put(
            "entity",
            json!({"id": "p1/e1/w1/l1", "kind": "workshop"}),
            "t",
        )
        .await,
    );
    assert!(
        m.contains(&"kind: A workshop has a path of 3 segments; \"p1/e1/w1/l1\" has 4".to_owned()),
        "{m:?}"
    );
    assert!(
        m.contains(
            &"entity \"p1/e1/w1/l1/cnc-01\".id: parent p1/e1/w1/l1 is a workshop, not a line"
                .to_owned()
        ),
        "{m:?}"
    );
    // An agent with a bad key or an unknown kind.
    let m = invalid(
        reg.put(
            "agent",
            json!({"id": "a2", "public_key": "rsa:xyz", "scope": ["p1"]}),
            "t",
        )
        .await,
    );
    assert!(m[0].starts_with("public_key: must start with"), "{m:?}");
    assert!(matches!(
        reg.put("gadget", json!({}), "t").await,
        Err(RegistryError::UnknownKind(_))
    ));

    // A valid change is stored, audited with before and after, and in the snapshot.
    let change = reg
        .put(
            "entity",
            json!({"id": "p1/e1/w1/l1", "kind": "line", "name_en": "Line 1"}),
            "token:admin",
        )
        .await
        .unwrap();
    assert_eq!(
        change.before,
        Some(json!({"id": "p1/e1/w1/l1", "kind": "line"}))
    );
    assert_eq!(
        change.after,
        json!({"id": "p1/e1/w1/l1", "kind": "line", "name_en": "Line 1"})
    );
    assert_eq!(
        reg.snapshot().entities["p1/e1/w1/l1"].name_en.as_deref(),
        Some("Line 1")
    );
    let a = db
        .audit(&AuditFilter {
            kind_prefix: Some("registry.entity".into()),
            item: Some("p1/e1/w1/l1".into()),
            since: None,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(a[0].actor, "token:admin");
    assert_eq!(a[0].before, json!({"id": "p1/e1/w1/l1", "kind": "line"}));

    // Deletes that would leave references dangling are refused.
    let in_use = |r: Result<_, RegistryError>| match r {
        Err(RegistryError::InUse(m)) => m,
        other => panic!("expected in use, got {other:?}"),
    };
    assert!(in_use(reg.delete("entity", "p1/e1/w1/l1", "t").await).contains("has children"));
    assert!(in_use(reg.delete("entity", "p1/e1/w1", "t").await).contains("children"));
    assert!(
        in_use(reg.delete("product", "shaft-a", "t").await)
            .contains("equipment p1/e1/w1/l1/cnc-01 makes product shaft-a")
    );
    reg.put(
        "entity",
        json!({"id": "p1/e1/w1/m-sub", "kind": "meter", "carrier": "electricity", "unit": "Wh", "parent": "p1/e1/w1/m-main"}),
        "t",
    )
    .await
    .unwrap();
    assert!(in_use(reg.delete("entity", "p1/e1/w1/m-main", "t").await).contains("sub-meter"));
    assert!(matches!(
        reg.delete("entity", "p1/e9", "t").await,
        Err(RegistryError::NotFound { .. })
    ));
    // A leaf goes, audited; the snapshot follows.
    let deleted = reg
        .delete("entity", "p1/e1/w1/m-sub", "token:admin")
        .await
        .unwrap();
    assert_eq!(deleted["parent"], json!("p1/e1/w1/m-main"));
    assert!(!reg.snapshot().entities.contains_key("p1/e1/w1/m-sub"));
    assert!(
        db.registry_get("entity", "p1/e1/w1/m-sub")
            .await
            .unwrap()
            .is_none()
    );
    // Plan targets follow the rules of the targets file.
    let target = json!({"id": "nc-2030", "indicator": "key_process_nc_rate", "scope": "park", "comparison": "ge",
                        "value": 0.8, "unit": "ratio", "year": 2030, "seed": "002:170", "name_zh": "关键工序数控化率"});
    reg.put("target", target.clone(), "t").await.unwrap();
    assert_eq!(reg.snapshot().targets.len(), 1);
    let mut bad = target;
    bad["comparison"] = json!("change_le");
    bad["indicator"] = json!("happiness");
    let m = invalid(reg.put("target", bad, "t").await);
    assert_eq!(
        m,
        vec![
            "indicator: \"happiness\" is not a catalog indicator id",
            "baseline_year: a change target needs its baseline year"
        ]
    );
    // After the agent goes, its scope no longer holds the workshop.
    reg.delete("agent", "w1-agent", "t").await.unwrap();
    assert!(reg.snapshot().agents.is_empty());
}
