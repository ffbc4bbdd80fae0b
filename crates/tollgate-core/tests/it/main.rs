//! Integration tests of `tollgate-core`: public test vectors first
//! (`conformance`), then properties of each module.

mod checkpoint;
mod conformance;
mod domain;
mod fixture;
mod gates;
mod merkle;
mod models;
mod note;
mod unleash_spec;
