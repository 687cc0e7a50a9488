//! The contract between rotor's programs, written once: the settings the webhook hands rotor-init
//! (`ROTOR_*` env vars), the pod annotations all three read, the typed choices their flags take,
//! and the paths the webhook injects. No Kubernetes types here.

pub mod annotations;
pub mod choices;
pub mod events;
pub mod files;
pub mod init_settings;
pub mod setting_error;
pub mod store_addr;
pub mod workload;

pub use choices::{AuthMethod, BinarySource, LogFormat, LogLevel, PullPolicy, parse_bool};
pub use events::EventReason;
pub use files::{FilesRequest, OnRotation, RotationSignal};
pub use init_settings::{CaSource, Credential, Hidden, InitSettings, var};
pub use setting_error::SettingError;
pub use store_addr::StoreAddr;
pub use workload::{ContainerEnv, StoreChoice, WorkloadReferences, workload_references};

/// The volume holding rotor-init (in-memory, or the rotor-init image itself), and where it is
/// mounted.
pub const BIN_VOLUME: &str = "rotor-bin";
pub const BIN_DIR: &str = "/rotor/bin";
/// The wrapper as the injected command names it.
pub const WRAPPER: &str = "/rotor/bin/rotor-init";
/// The projected service-account token volume, its mount and the token file in it.
pub const TOKEN_VOLUME: &str = "rotor-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/rotor";
pub const PROJECTED_TOKEN: &str = "/var/run/secrets/rotor/token";
/// The init container that copies rotor-init into the volume.
pub const COPY_CONTAINER: &str = "rotor-init-copy";
