//! Fixtures shared by rotor's end-to-end tests and the demo: run rotor's programs as local
//! processes against the testkit stack, register the webhook, and run a mutated pod the way a
//! kubelet would.

pub mod demo;
pub mod fixtures;
