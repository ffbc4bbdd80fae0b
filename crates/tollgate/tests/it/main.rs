//! The binary end to end: a child `tollgate serve` process, killed and corrupted.

mod corruption;
mod crash;
mod durability;
mod signing;
mod support;
mod transfer;
mod verify;
