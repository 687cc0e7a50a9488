//! rotor-init's exit codes (documented in the README). The app's own codes pass through
//! untouched once it runs.

/// A setting is missing or malformed (ROTOR_* env vars, a reference that does not parse).
pub const CONFIG: u8 = 78;
/// The store refused the login (wrong role, bad token, audience mismatch).
pub const AUTH: u8 = 77;
/// A referenced secret, key or version does not exist or may not be read.
pub const MISSING_SECRET: u8 = 66;
/// The store's answer was not what Vault or OpenBao sends (not JSON, the wrong shape, over the
/// size cap): the address probably points at something else.
pub const PROTOCOL: u8 = 76;
/// The store did not answer within the deadline.
pub const STORE_UNAVAILABLE: u8 = 69;
/// The app could not be executed (not found: 127, not executable: 126).
pub const EXEC_NOT_FOUND: u8 = 127;
pub const EXEC_FAILED: u8 = 126;
/// `rotor-init copy DIR` failed.
pub const COPY_FAILED: u8 = 73;
/// A file (`rotor.dev/file.*`) could not be written (EX_CANTCREAT, like a failed copy).
pub const CANT_CREATE: u8 = 73;
