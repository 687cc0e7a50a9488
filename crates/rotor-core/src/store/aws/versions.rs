//! The current version of many AWS secrets and parameters at the lowest request cost the APIs
//! allow, for the reloader: Secrets Manager's `ListSecrets` with a name filter (10 names per
//! request, each entry carrying `SecretVersionsToStages`), SSM's `DescribeParameters` with a
//! `Name Equals` filter (50 names per request, each with its `Version`). Metadata only: no value
//! is ever asked for. Pages are bounded; a name the listing does not answer is reported missing.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::client::AwsClient;
use crate::aws_reference::{AwsArn, AwsService, parse_arn};
use crate::store::StoreError;

/// Names per `ListSecrets` name filter (the API's limit).
pub const SECRETS_PER_REQUEST: usize = 10;
/// Names per `DescribeParameters` `Name Equals` filter (the API's limit).
pub const PARAMETERS_PER_REQUEST: usize = 50;
/// At most this many pages for one batch: a name filter is a prefix, so a batch may match more
/// secrets than it names, and a server may page smaller than asked (moto answers
/// `DescribeParameters` 10 at a time); past this the batch's unanswered names are reported, not
/// chased.
pub const MAX_PAGES_PER_BATCH: usize = 10;

/// What one poll found: the current version of each ARN that was answered, when it was
/// written (seconds since the epoch, where AWS said), the requests made, and the ARNs that
/// failed, with why.
#[derive(Debug, Default)]
pub struct AwsVersions {
    pub versions: HashMap<String, u64>,
    pub written: HashMap<String, u64>,
    pub requests: usize,
    pub errors: Vec<(String, StoreError)>,
}

impl AwsVersions {
    /// Adds what another poll found.
    pub fn extend(&mut self, more: AwsVersions) {
        self.versions.extend(more.versions);
        self.written.extend(more.written);
        self.requests += more.requests;
        self.errors.extend(more.errors);
    }
}

/// A Secrets Manager version id as a number the reloader can record: stable (FNV-1a of the id),
/// compared only for equality. SSM versions are numbers already.
pub fn version_number(version_id: &str) -> u64 {
    version_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A Secrets Manager name as the console shows it, without the six-character suffix AWS adds to
/// a full ARN (`db-AbCdEf` -> `db`), when it has one.
fn without_suffix(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, suffix))
            if !base.is_empty()
                && suffix.len() == 6
                && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            base
        }
        _ => name,
    }
}

impl AwsClient {
    /// The current version of every ARN in `arns` (each a Secrets Manager secret or an SSM
    /// parameter), batched per service, region and account.
    pub async fn current_versions(&self, arns: &[String]) -> AwsVersions {
        let mut out = AwsVersions::default();
        let mut groups: BTreeMap<(AwsService, String, String, String), Vec<&String>> =
            BTreeMap::new();
        for arn in arns {
            match parse_arn(arn) {
                Ok(a) => groups
                    .entry((
                        a.service,
                        a.partition.to_string(),
                        a.region.to_string(),
                        a.account.to_string(),
                    ))
                    .or_default()
                    .push(arn),
                Err(message) => out.errors.push((
                    arn.clone(),
                    StoreError::Decode {
                        op: format!("watching {arn}"),
                        message,
                    },
                )),
            }
        }
        for ((service, _, _, _), arns) in groups {
            let size = match service {
                AwsService::SecretsManager => SECRETS_PER_REQUEST,
                AwsService::Ssm => PARAMETERS_PER_REQUEST,
            };
            for batch in arns.chunks(size) {
                self.poll_batch(service, batch, &mut out).await;
            }
        }
        out
    }

    async fn poll_batch(&self, service: AwsService, batch: &[&String], out: &mut AwsVersions) {
        let Some(first) = batch.first().and_then(|a| parse_arn(a).ok()) else {
            return;
        };
        let mut found: HashMap<String, (u64, Option<u64>)> = HashMap::new();
        let mut next: Option<String> = None;
        let mut failed = None;
        for _ in 0..MAX_PAGES_PER_BATCH {
            let (target, mut body) = match service {
                AwsService::SecretsManager => {
                    let names: Vec<&str> = batch
                        .iter()
                        .filter_map(|a| parse_arn(a).ok())
                        .map(|a| without_suffix(a.name))
                        .collect();
                    (
                        "secretsmanager.ListSecrets",
                        json!({ "Filters": [{ "Key": "name", "Values": names }], "MaxResults": 100 }),
                    )
                }
                AwsService::Ssm => {
                    let names: Vec<String> = batch
                        .iter()
                        .filter_map(|a| parse_arn(a).ok())
                        .map(|a| a.parameter_name())
                        .collect();
                    (
                        "AmazonSSM.DescribeParameters",
                        json!({ "ParameterFilters": [{ "Key": "Name", "Option": "Equals", "Values": names }], "MaxResults": 50 }),
                    )
                }
            };
            if let Some(token) = &next {
                body["NextToken"] = json!(token);
            }
            out.requests += 1;
            let op = format!(
                "listing versions of {} {} in {}",
                batch.len(),
                service.title(),
                first.region
            );
            match self.call(&first, target, &body, &op).await {
                Ok(answer) => {
                    collect(service, &answer, &mut found);
                    next = answer
                        .get("NextToken")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string);
                    if next.is_none() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if next.is_some() && failed.is_none() && service == AwsService::SecretsManager {
            failed = self.describe_unreached(batch, &mut found, out).await;
        }
        for arn in batch {
            let Ok(a) = parse_arn(arn) else { continue };
            match answer_for(&a, arn, &found) {
                Some((version, written)) => {
                    out.versions.insert((*arn).clone(), version);
                    if let Some(w) = written {
                        out.written.insert((*arn).clone(), w);
                    }
                }
                None => out.errors.push((
                    (*arn).clone(),
                    failed.clone().unwrap_or_else(|| StoreError::Aws {
                        op: format!("watching {arn}"),
                        status: 404,
                        code: "ResourceNotFoundException".into(),
                        message: format!(
                            "not listed in region {} of account {}",
                            a.region, a.account
                        )
                        .into(),
                    }),
                )),
            }
        }
    }
}

impl AwsClient {
    /// A `ListSecrets` name filter is a prefix: when the pages ran out before every name of
    /// `batch` was listed (one name matched more than [`MAX_PAGES_PER_BATCH`] pages of secrets),
    /// each unreached name is read on its own, one `DescribeSecret`, so a short name never hides
    /// the others (at most one request more per name). Returns the error that stopped it.
    async fn describe_unreached(
        &self,
        batch: &[&String],
        found: &mut HashMap<String, (u64, Option<u64>)>,
        out: &mut AwsVersions,
    ) -> Option<StoreError> {
        for arn in batch {
            let Ok(a) = parse_arn(arn) else { continue };
            if answer_for(&a, arn, found).is_some() {
                continue;
            }
            out.requests += 1;
            let op = format!("describing {arn}");
            let body = json!({ "SecretId": arn });
            match self
                .call(&a, "secretsmanager.DescribeSecret", &body, &op)
                .await
            {
                Ok(described) => collect(
                    AwsService::SecretsManager,
                    &json!({ "SecretList": [as_listed(&described)] }),
                    found,
                ),
                Err(e) => return Some(e),
            }
        }
        None
    }
}

/// A `DescribeSecret` answer as a `ListSecrets` entry (its stages are `VersionIdsToStages`).
fn as_listed(described: &Value) -> Value {
    json!({
        "ARN": described.get("ARN"),
        "Name": described.get("Name"),
        "SecretVersionsToStages": described.get("VersionIdsToStages"),
        "LastChangedDate": described.get("LastChangedDate"),
    })
}

/// Each listed entry under the keys it can be asked by: its full ARN and its name (SSM: its
/// name as written, with its leading `/`).
fn collect(service: AwsService, answer: &Value, found: &mut HashMap<String, (u64, Option<u64>)>) {
    let entries = match service {
        AwsService::SecretsManager => answer.get("SecretList"),
        AwsService::Ssm => answer.get("Parameters"),
    };
    for entry in entries.and_then(Value::as_array).into_iter().flatten() {
        let name = entry
            .get("Name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (version, written) = match service {
            AwsService::SecretsManager => {
                let current = entry
                    .get("SecretVersionsToStages")
                    .and_then(Value::as_object)
                    .and_then(|m| {
                        m.iter().find(|(_, stages)| {
                            stages
                                .as_array()
                                .is_some_and(|s| s.iter().any(|x| x == "AWSCURRENT"))
                        })
                    })
                    .map(|(id, _)| version_number(id));
                (current, epoch(entry.get("LastChangedDate")))
            }
            AwsService::Ssm => (
                entry.get("Version").and_then(Value::as_u64),
                epoch(entry.get("LastModifiedDate")),
            ),
        };
        let Some(version) = version else { continue };
        if let Some(arn) = entry.get("ARN").and_then(Value::as_str) {
            found.insert(arn.to_string(), (version, written));
        }
        found.insert(format!("name:{name}"), (version, written));
    }
}

fn epoch(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_f64)
        .filter(|f| *f >= 0.0)
        .map(|f| f as u64)
}

/// The listed answer for `arn`: by its full ARN, else by its name (a partial ARN).
fn answer_for(
    a: &AwsArn<'_>,
    arn: &str,
    found: &HashMap<String, (u64, Option<u64>)>,
) -> Option<(u64, Option<u64>)> {
    if let Some(hit) = found.get(arn) {
        return Some(*hit);
    }
    let name = match a.service {
        AwsService::SecretsManager => a.name.to_string(),
        AwsService::Ssm => a.parameter_name(),
    };
    found.get(&format!("name:{name}")).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_entries_answer_full_and_partial_arns() {
        let mut found = HashMap::new();
        collect(
            AwsService::SecretsManager,
            &json!({ "SecretList": [
                { "ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf", "Name": "db",
                  "SecretVersionsToStages": { "v1": ["AWSPREVIOUS"], "v2": ["AWSCURRENT"] }, "LastChangedDate": 1700000000.5 },
                { "ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-old-XyZ123", "Name": "db-old",
                  "SecretVersionsToStages": { "v9": ["AWSCURRENT"] } },
            ]}),
            &mut found,
        );
        let full = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf";
        let partial = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db";
        for arn in [full, partial] {
            let a = parse_arn(arn).unwrap();
            assert_eq!(
                answer_for(&a, arn, &found),
                Some((version_number("v2"), Some(1_700_000_000))),
                "{arn}"
            );
        }
        let other = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dbx";
        assert_eq!(answer_for(&parse_arn(other).unwrap(), other, &found), None);
        assert_eq!(without_suffix("db-AbCdEf"), "db");
        assert_eq!(without_suffix("team-db"), "team-db");
        assert_ne!(version_number("v1"), version_number("v2"));
    }

    #[test]
    fn parameters_answer_by_name_with_their_version() {
        let mut found = HashMap::new();
        collect(
            AwsService::Ssm,
            &json!({ "Parameters": [{ "Name": "/app/db", "Version": 7, "LastModifiedDate": 1.7e9 }] }),
            &mut found,
        );
        let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/app/db";
        assert_eq!(
            answer_for(&parse_arn(arn).unwrap(), arn, &found),
            Some((7, Some(1_700_000_000)))
        );
    }
}
