//! The `SecretRotation` resource (`rotor.dev/v1alpha1`, namespaced): what to rotate, when, how
//! the new value is made, and, in its status, every step of the rotation in progress, so a
//! rotation resumes where it stopped after a crash or a change of leader. The schema the API
//! server checks is the chart's CRD (`charts/rotor/templates/crd-secretrotation.yaml`); the
//! checks here are the ones a schema cannot make, each refused with the field and the fix.

use std::borrow::Cow;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "rotor.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "SecretRotation";
pub const PLURAL: &str = "secretrotations";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRotation {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: Spec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl kube::Resource for SecretRotation {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// The ServiceAccount of the resource's namespace rotor writes as (a token requested for
    /// it, logged in like that namespace's pods): the store's policies decide what it may write.
    #[serde(default = "default_service_account")]
    pub service_account_name: String,
    /// The store role it logs in with (default: the ServiceAccount's name, as for pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The KV v2 secrets that receive the new value (all the same value).
    pub targets: Vec<Target>,
    /// Time between rotations: `90s`, `15m`, `24h`, `7d` (at least the reloader's
    /// `--min-rotation-interval`).
    pub interval: String,
    /// Up to this fraction of the interval is added at random to each wait (0 to 1), so
    /// rotations created together do not run together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    pub generate: Generate,
    /// `replace`: the new value replaces the old one in the store; consumers move to it as
    /// their workloads roll (the only strategy of v1alpha1).
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// How long to wait for every consumer to run the new value before saying which lag
    /// (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers_timeout: Option<String>,
    /// No new rotation starts while true (one in progress finishes).
    #[serde(default)]
    pub suspend: bool,
}

fn default_service_account() -> String {
    "default".to_string()
}

fn default_strategy() -> String {
    "replace".to_string()
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// A KV v2 path as references spell it (`secret/data/app/db` or `secret/app/db`).
    pub path: String,
    /// The key that receives the new value; the secret's other keys are kept.
    pub key: String,
}

/// How the new value is made: exactly one of the two.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Generate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_bytes: Option<RandomBytes>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Password {
    pub length: usize,
    #[serde(default = "yes")]
    pub lowercase: bool,
    #[serde(default = "yes")]
    pub uppercase: bool,
    #[serde(default = "yes")]
    pub digits: bool,
    #[serde(default)]
    pub symbols: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RandomBytes {
    pub bytes: usize,
    /// `base64` (default) or `hex`.
    #[serde(default = "default_encoding")]
    pub encoding: String,
}

fn default_encoding() -> String {
    "base64".to_string()
}

/// Where a rotation is.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for `nextRotationAt`.
    #[default]
    Idle,
    /// Claimed: each target's version before the write is recorded; the value is being written.
    Writing,
    /// Written: waiting for every consumer to run the new version.
    Moving,
    /// Stopped after its retry budget; it starts again at `nextRotationAt` or when the spec
    /// changes.
    Failed,
    /// The spec cannot be rotated as written (the message says which field and the fix).
    Invalid,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub phase: Phase,
    /// Rotations completed.
    #[serde(default)]
    pub rotations: u64,
    /// Attempts of the step in progress (1 on the first).
    #[serde(default)]
    pub attempt: u32,
    /// The spec generation this status is about.
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<String>,
    /// When the step in progress is tried again after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// Each target's version before this rotation's write and the version it wrote.
    #[serde(default)]
    pub targets: Vec<TargetStatus>,
    /// Workloads that read a target, and how many run the version written (`2/3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<String>,
    /// The workloads that do not run it yet (at most 10 named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lagging: Vec<String>,
    /// What happened last, for people (never a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// The target's path as the store spells it (`secret/app/db`), and its mount (`secret/`).
    pub path: String,
    pub mount: String,
    pub key: String,
    /// The secret's current version when the rotation was claimed (0: it did not exist).
    pub from_version: u64,
    /// The version this rotation wrote, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Upper bounds a spec is held to (a tenant writes it; rotor's work per resource stays small).
pub const MAX_TARGETS: usize = 16;
pub const MAX_PASSWORD_LENGTH: usize = 256;
pub const MIN_PASSWORD_LENGTH: usize = 8;
pub const MAX_RANDOM_BYTES: usize = 1024;
pub const MIN_RANDOM_BYTES: usize = 16;
pub const DEFAULT_CONSUMERS_TIMEOUT: Duration = Duration::from_secs(600);

/// A spec that can be rotated, checked: why not, as `field: problem; fix`.
#[derive(Clone, Debug)]
pub struct Checked {
    pub interval: Duration,
    pub jitter: f64,
    pub consumers_timeout: Duration,
}

impl Spec {
    /// Checks what the CRD schema cannot (durations, exactly one generator, limits against
    /// the reloader's floor) and returns the parsed durations.
    pub fn check(&self, min_interval: Duration) -> Result<Checked, String> {
        let interval = parse_duration(&self.interval)
            .map_err(|e| format!("spec.interval {:?}: {e}", self.interval))?;
        if interval < min_interval {
            return Err(format!(
                "spec.interval {:?}: shorter than the reloader's --min-rotation-interval ({} s); rotate less often",
                self.interval,
                min_interval.as_secs()
            ));
        }
        let consumers_timeout = match &self.consumers_timeout {
            Some(text) => {
                parse_duration(text).map_err(|e| format!("spec.consumersTimeout {text:?}: {e}"))?
            }
            None => DEFAULT_CONSUMERS_TIMEOUT,
        };
        let jitter = self.jitter.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&jitter) {
            return Err(format!(
                "spec.jitter {jitter}: a fraction of the interval from 0 to 1"
            ));
        }
        if self.strategy != "replace" {
            return Err(format!(
                "spec.strategy {:?}: v1alpha1 rotates with `replace` only",
                self.strategy
            ));
        }
        if self.targets.is_empty() || self.targets.len() > MAX_TARGETS {
            return Err(format!(
                "spec.targets: 1 to {MAX_TARGETS} targets, not {}",
                self.targets.len()
            ));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if !is_store_path(&t.path) {
                return Err(format!(
                    "spec.targets[{i}].path {:?}: a store path such as secret/data/app/db (no leading /, no empty, . or .. segments, no ? # % or spaces)",
                    t.path
                ));
            }
            if t.key.is_empty() || t.key.len() > 128 || t.key.contains(['/', '#']) {
                return Err(format!(
                    "spec.targets[{i}].key {:?}: a key name of 1 to 128 characters without / or #",
                    t.key
                ));
            }
        }
        self.generate.check()?;
        Ok(Checked {
            interval,
            jitter,
            consumers_timeout,
        })
    }
}

impl Generate {
    fn check(&self) -> Result<(), String> {
        match (&self.password, &self.random_bytes) {
            (Some(p), None) => {
                if !(MIN_PASSWORD_LENGTH..=MAX_PASSWORD_LENGTH).contains(&p.length) {
                    return Err(format!(
                        "spec.generate.password.length {}: {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH}",
                        p.length
                    ));
                }
                let classes = [p.lowercase, p.uppercase, p.digits, p.symbols];
                if !classes.contains(&true) {
                    return Err("spec.generate.password: every character class is off; turn one on (lowercase, uppercase, digits, symbols)".to_string());
                }
                Ok(())
            }
            (None, Some(b)) => {
                if !(MIN_RANDOM_BYTES..=MAX_RANDOM_BYTES).contains(&b.bytes) {
                    return Err(format!(
                        "spec.generate.randomBytes.bytes {}: {MIN_RANDOM_BYTES} to {MAX_RANDOM_BYTES}",
                        b.bytes
                    ));
                }
                if !matches!(b.encoding.as_str(), "base64" | "hex") {
                    return Err(format!(
                        "spec.generate.randomBytes.encoding {:?}: base64 or hex",
                        b.encoding
                    ));
                }
                Ok(())
            }
            _ => Err("spec.generate: exactly one of password or randomBytes".to_string()),
        }
    }
}

/// A store path a rotation may write: plain segments only, so it cannot steer a request.
fn is_store_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 512
        && path.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && !s.chars().any(|c| {
                    c.is_control() || c.is_whitespace() || matches!(c, '?' | '#' | '%' | '\\')
                })
        })
}

/// `90s`, `15m`, `24h`, `7d`, or a combination in that order (`1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let fix = "write a duration such as 90s, 15m, 24h, 7d or 1h30m";
    if text.is_empty() || text.len() > 32 {
        return Err(fix.to_string());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(fix.to_string()),
        };
        let n: u64 = number.parse().map_err(|_| fix.to_string())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| fix.to_string())?;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(fix.to_string());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> Spec {
        serde_json::from_value(value).unwrap()
    }

    fn good() -> serde_json::Value {
        json!({
            "targets": [{ "path": "secret/data/app/db", "key": "password" }],
            "interval": "1h",
            "generate": { "password": { "length": 24 } }
        })
    }

    #[test]
    fn durations_parse_or_say_how_to_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "10", "h", "1x", "0s", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).unwrap_err().contains("90s"), "{bad}");
        }
    }

    #[test]
    fn a_good_spec_checks_and_defaults_apply() {
        let s = spec(good());
        assert_eq!(s.service_account_name, "default");
        assert_eq!(s.strategy, "replace");
        let checked = s.check(Duration::from_secs(60)).unwrap();
        assert_eq!(checked.interval, Duration::from_secs(3600));
        assert_eq!(checked.consumers_timeout, DEFAULT_CONSUMERS_TIMEOUT);
        let p = s.generate.password.unwrap();
        assert!(p.lowercase && p.uppercase && p.digits && !p.symbols);
    }

    #[test]
    fn bad_specs_name_the_field_and_the_fix() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (json!({ "interval": "10s" }), "--min-rotation-interval"),
            (json!({ "interval": "soon" }), "spec.interval"),
            (json!({ "jitter": 2.0 }), "spec.jitter"),
            (json!({ "strategy": "alternating" }), "spec.strategy"),
            (json!({ "targets": [] }), "spec.targets"),
            (
                json!({ "targets": [{ "path": "secret/../sys/x", "key": "k" }] }),
                "spec.targets[0].path",
            ),
            (
                json!({ "targets": [{ "path": "secret/data/a?x=1", "key": "k" }] }),
                "spec.targets[0].path",
            ),
            (
                json!({ "targets": [{ "path": "secret/data/a", "key": "" }] }),
                "spec.targets[0].key",
            ),
            (json!({ "generate": {} }), "exactly one"),
            (
                json!({ "generate": { "password": { "length": 4 } } }),
                "password.length",
            ),
            (
                json!({ "generate": { "password": { "length": 20, "lowercase": false, "uppercase": false, "digits": false } } }),
                "turn one on",
            ),
            (
                json!({ "generate": { "randomBytes": { "bytes": 32, "encoding": "rot13" } } }),
                "encoding",
            ),
            (
                json!({ "consumersTimeout": "never" }),
                "spec.consumersTimeout",
            ),
        ];
        for (change, wanted) in cases {
            let mut value = good();
            for (k, v) in change.as_object().unwrap() {
                value[k] = v.clone();
            }
            let err = spec(value).check(Duration::from_secs(60)).unwrap_err();
            assert!(err.contains(wanted), "{wanted}: {err}");
        }
    }
}
