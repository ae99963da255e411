//! The gateway's configuration: the TOML parse and `serde_path_to_error` deserialisation that
//! `shopfloor_gateway::config::load` does, then `config::validate` (ids, zones, URLs, CIDRs,
//! seal keys, the guard's combinations) and `store_url`. `load`'s file reads (the file itself,
//! and the TLS and users files through `guard::check_config`) are left out; the users-file
//! parser `guard::parse_users` gets the same text. Never a panic; every error names a reason.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor_gateway::config::{GatewayConfig, validate};
use shopfloor_gateway::guard::parse_users;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_users(text);
    let de = match toml::de::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let cfg = match serde_path_to_error::deserialize::<_, GatewayConfig>(de) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.path().to_string();
            let _ = e.into_inner().message().to_owned();
            return;
        }
    };
    for e in validate(&cfg, "fuzz.toml") {
        assert!(!e.reason.is_empty(), "an error without a reason: {e:?}");
    }
    let _ = cfg.store_url();
    let _ = cfg.mqtt.allow_anonymous();
});
