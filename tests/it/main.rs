//! daeda's integration tests: the real binary against a real redis-server and
//! real Parquet / DuckDB / DuckLake files.

mod auth;
mod cluster;
mod config;
mod gateway;
mod http;
mod materialize;
mod ops;
mod production;
mod quack;
mod readme;
mod registry;
mod skew;
mod sql;
mod support;
