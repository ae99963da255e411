//! `shopfloor-gateway`: verified ingest of agents' signed batches, storage (SQLite or
//! PostgreSQL), roll-ups, indicators and assessments through the shared engine, the REST API and
//! Prometheus metrics. Map and invariants: docs/ARCHITECTURE.md.
//!
//! - [`config`]: the configuration file, validated before anything binds;
//! - [`model`], [`registry`]: entities, agents, products, targets (files and API, audited);
//! - [`db`]: the two concrete stores behind one enum;
//! - [`ingest`], [`mqtt`], [`broker`]: verify, dedupe, commit, then acknowledge; [`guard`]:
//!   TLS, authentication and per-agent ACL in front of the embedded broker;
//! - [`rollup`]: dirty ranges → minute/hour/day/month buckets, recomputed on late data;
//! - [`evidence`], [`indicators`]: evidence files from roll-ups, and the engine on them;
//! - [`inputs`]: economic inputs (API, CSV, XLSX);
//! - [`api`], [`auth`]: the REST API with roles, OpenAPI; [`session`], [`users`]: dashboard
//!   users, password sign-in, sessions, CSRF, login rate limiting; [`metrics`]: /metrics;
//! - [`run`]: wiring; [`calc`]: the auditor's recompute command; [`report`]: auditor reports;
//! - [`seal`]: sealed days (tamper evidence); [`verify`]: the auditor's re-check of batches,
//!   rows and seals.

pub mod agents;
pub mod api;
pub mod auth;
pub mod broker;
pub mod calc;
mod cli;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod demo;
pub mod evidence;
pub mod guard;
pub mod indicators;
pub mod ingest;
pub mod inputs;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod registry;
pub mod report;
pub mod rollup;
pub mod run;
pub mod seal;
pub mod session;
pub mod users;
pub mod verify;
