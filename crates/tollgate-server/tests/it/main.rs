//! The server end to end: real HTTP on a random port over a temp SQLite file.

mod audit;
mod auth;
mod cluster;
mod contract;
mod gates;
mod input;
mod ledger;
mod limits;
mod models;
mod ofrep;
mod postgres;
mod pyjwt;
mod support;
mod tokens;
