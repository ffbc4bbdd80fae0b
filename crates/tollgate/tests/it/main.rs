//! The binary end to end: a child `tollgate serve` process, killed and corrupted.

mod cluster;
mod corruption;
mod crash;
mod demo;
mod durability;
mod gates;
mod serve;
mod signing;
mod support;
mod tls;
mod transfer;
mod verify;
