//! rotor-core: the reference grammar, the store client and its auth methods.
//! No Kubernetes and no server here; rotor-webhook, rotor-init and rotor-reloader share it.

pub mod reference;
