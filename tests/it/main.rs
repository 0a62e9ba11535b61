//! daeda's integration tests: the real binary against a real redis-server and
//! real Parquet / DuckDB / DuckLake files.
#![allow(clippy::unwrap_used)] // test and bench code: a panic is the failure report

mod auth;
mod cache;
mod cluster;
mod config;
mod deployed;
mod gateway;
mod ha;
mod http;
mod materialize;
mod ops;
mod production;
mod quack;
mod readme;
mod registry;
mod s3;
mod schedules;
mod skew;
mod sql;
mod support;
