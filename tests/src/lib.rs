//! Helpers for lb's root-only system tests: network-namespace labs and the
//! programs that run in them.

pub mod lab;
