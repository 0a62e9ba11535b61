//! daeda's integration tests: the real binary against a real redis-server and
//! real Parquet / DuckDB / DuckLake files.

mod auth;
mod gateway;
mod cluster;
mod config;
mod http;
mod materialize;
mod readme;
mod registry;
mod ops;
mod production;
mod skew;
mod sql;
mod support;
