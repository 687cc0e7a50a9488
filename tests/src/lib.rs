//! Fixtures shared by rotor's end-to-end tests and the demo: run rotor's programs as local
//! processes against the testkit stack, register the webhook, build the images pods pull from
//! the stack's registry, and follow pods on the real node.

pub mod demo;
pub mod fixtures;
pub mod node_pods;
pub mod observe;
pub mod policy;
pub mod rotations;
pub mod slow_bodies;
pub mod tenants;
